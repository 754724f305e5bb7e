"""DM: dataset condensation by distribution matching (Zhao & Bilen, WACV 2023).

Each step samples a fresh, randomly initialised network ``f`` (its parameters are not trained), draws
``batch_real`` real images per class, applies the SAME DSA transform to class ``c``'s real and synthetic images
(siamese), and moves the synthetic images down the gradient of

.. math:: \\mathcal{L} = \\sum_c \\Big\\| \\tfrac1{|R_c|}\\sum_{r\\in R_c} f(a_c(r)) - \\tfrac1{|S_c|}\\sum_{s\\in S_c} f(a_c(s)) \\Big\\|^2

with SGD (momentum 0.5). Reference defaults (``main_DM.py``): ``lr_img=1``, ``batch_real=256``, init from real.
All classes are one batched program: the real batch is ``(K, B, H, W, C)``; with a device mesh its ``B`` axis is
sharded over the ``data`` axis, so the mean embeddings are reduced across devices by XLA.
"""
from __future__ import annotations

import ml_collections
from flax import linen as nn
from jax.sharding import Mesh

from ddjax.algorithms.base import Algorithm
from ddjax.algorithms.distribution_family import distribution_matching, embed_fn, mean_embedding_term

__all__ = ["default_config", "embed_fn", "make"]


def default_config() -> ml_collections.ConfigDict:
    """DM hyper-parameters (``config.dm``), reference values from ``main_DM.py``."""
    return ml_collections.ConfigDict(dict(lr_img=1.0, momentum=0.5, batch_real=256))


def make(config: ml_collections.ConfigDict, model: nn.Module, num_classes: int,
         image_shape: tuple[int, int, int], mesh: Mesh | None = None) -> Algorithm:
    """Build DM's ``(init, step)``: the family's step (:mod:`ddjax.algorithms.distribution_family`) with the one term
    :func:`~ddjax.algorithms.distribution_family.mean_embedding_term`.

    Reads ``config.dm`` (lr_img, momentum, batch_real), ``config.dsa_strategy`` and ``config.ipc``.
    ``mesh``: when given, the per-class real batch is sharded along its sample axis over ``mesh``'s ``data`` axis.
    """
    return distribution_matching(config, config.dm, "dm", model, num_classes, image_shape, mesh,
                                 terms=(mean_embedding_term(),))
