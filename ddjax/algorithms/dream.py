"""DREAM+: Efficient Dataset Distillation by Bidirectional Representative Matching (Liu et al., 2023, Sec. 3.3).

Plugged into a gradient-matching base (``config.dream.base`` ∈ dc, dsa, idc; IDC by default as in the paper), whose
hyper-parameters are ``config.dream.<base>``. On top of the base's step (:mod:`.gradient_matching`):

- **Representative matching**: every ``interval`` rounds (default 10) each class's real images are embedded with
  the *current* network (features before the head), clustered by k-means (:mod:`ddjax.cluster`) into
  ``batch_real // subsample`` clusters, and the ``subsample`` real samples nearest each centre form the matching
  batch until the next clustering (paper default: 128 clusters × 1 sample; ``subsample > 1`` is DREAM+'s
  ``query_match(n, subsample)`` variant, Table 5).
- **Bidirectional matching**: the loss adds ``feature_weight`` × the distance between the classes' mean embeddings
  of the (augmented) real and synthetic batches, with the matching metric (``condense_improve.py:matchloss``;
  the embeddings are those of the gradient's forward pass). ``grad_weight`` scales the gradient term (1, 1 in the
  reference: an unweighted sum).
- **Cluster initialisation**: at step 0 the synthetic set is built from the real samples nearest the centres of
  ``IPC · factor²`` clusters per class (then tiled ``factor × factor`` for IDC's multi-formation) instead of
  random real images.

``cluster_pool``: cluster a random subset of that many images per class at each re-clustering instead of the whole
class (None, the reference). Embedding all 6,000 images of a Fashion-MNIST class every 10 rounds costs about as
much as the matching itself on a CPU; the CPU configs set it, docs/results say where.
"""
from __future__ import annotations

from typing import Any

import ml_collections
import numpy as np
from flax import linen as nn
from jax.sharding import Mesh
from ml_collections import config_dict

from ddjax import cluster
from ddjax.algorithms import gradient_matching, idc, samplers
from ddjax.algorithms.base import Algorithm, RealPool
from ddjax.errors import ConfigError, check_choice

DREAM_BASES = ("idc", "dc", "dsa")
DREAM_INITS = ("kmeans", "given")

__all__ = ["DREAM_BASES", "DREAM_INITS", "check_real_pool", "default_config", "dream_parts", "make", "prepare",
           "spec_from_config"]


def default_config() -> ml_collections.ConfigDict:
    """DREAM+ hyper-parameters (``config.dream``): paper Sec. 4.1 and ``lyq312318224/DREAM:argument.py``."""
    idc_hp = idc.default_config()
    idc_hp.batch_real = 128           # the matching batch = 128 representatives per class
    dc_hp = gradient_matching.default_config()
    dc_hp.batch_real = 128
    dsa_hp = gradient_matching.dsa_default_config()
    dsa_hp.batch_real = 128
    return ml_collections.ConfigDict(dict(
        base="idc", interval=10, subsample=1, feature_weight=1.0, grad_weight=1.0, representative=True,
        init="kmeans", cluster_pool=config_dict.placeholder(int), kmeans_iters=100,
        idc=idc_hp, dc=dc_hp, dsa=dsa_hp))


def spec_from_config(config: ml_collections.ConfigDict) -> gradient_matching.MatchingSpec:
    """The engine spec for ``config.dream`` (its base's spec with DREAM+'s fields)."""
    hp = config.dream
    check_choice("DREAM base", hp.base, DREAM_BASES)
    check_choice("DREAM init", hp.init, DREAM_INITS)
    extra: dict[str, Any] = dict(representative=bool(hp.representative), interval=hp.interval,
                                 subsample=hp.subsample, cluster_pool=hp.cluster_pool or 0,
                                 kmeans_iters=hp.kmeans_iters, feature_weight=hp.feature_weight,
                                 grad_weight=hp.grad_weight)
    if hp.init == "kmeans":
        extra["syn_init"] = "kmeans"
    if hp.base == "idc":
        return idc.spec_from_idc_config(hp.idc, config.ipc, **extra)
    strategy = "" if hp.base == "dc" else gradient_matching.dsa_strategy(config)
    return gradient_matching.spec_from_dc_config(hp[hp.base], config.ipc, strategy, **extra)


def check_real_pool(spec: gradient_matching.MatchingSpec, counts: Any) -> None:
    """Eager, outside jit: every class must hold enough real images for the clusters asked for."""
    smallest = int(np.min(np.asarray(counts)))
    pool = min(smallest, spec.cluster_pool) if spec.cluster_pool else smallest
    if spec.representative:
        cluster.check_num_clusters(spec.batch_real // spec.subsample, pool,
                                   what=f"real images in the smallest class's clustering pool (dream.batch_real="
                                        f"{spec.batch_real}, subsample={spec.subsample})")
        if spec.subsample > pool:
            raise ConfigError(f"dream.subsample={spec.subsample} exceeds the {pool} images clustered per class")
    if spec.syn_init == "kmeans":
        cluster.check_num_clusters(spec.decoded_per_class, pool,
                                   what="real images per class for the k-means initialisation (ipc · factor²)")


def prepare(config: ml_collections.ConfigDict, dataset: Any, real: RealPool, mesh: Mesh | None = None,
            stream: Any = None) -> RealPool:
    """Registry ``prepare`` hook: validates the class sizes against the clustering (one line), returns the pool."""
    del dataset, mesh, stream
    check_real_pool(spec_from_config(config), real.counts)
    return real


def dream_parts(spec: gradient_matching.MatchingSpec, mesh: Mesh | None = None) -> gradient_matching.MatchingParts:
    """DREAM+ = its base's parts (IDC when the network trains on real data, else DC/DSA) with the representative
    sampler, the bidirectional feature term and the k-means initialisation swapped in (each when switched on)."""
    base = idc.idc_parts(spec, mesh) if spec.net_source == "real" else gradient_matching.dc_parts(spec)
    sampler = base.sampler
    if spec.representative:
        sampler = samplers.representatives(spec.batch_real, subsample=spec.subsample, interval=spec.interval,
                                           pool=spec.cluster_pool, kmeans_iters=spec.kmeans_iters)
    feature = (gradient_matching.feature_term(spec.metric, spec.feature_weight),) if spec.feature_weight else ()
    initial = (gradient_matching.kmeans_init(spec.cluster_pool, spec.kmeans_iters) if spec.syn_init == "kmeans"
               else base.initial)
    return base._replace(sampler=sampler, terms=base.terms + feature, initial=initial)


def make(config: ml_collections.ConfigDict, model: nn.Module, num_classes: int, image_shape: tuple[int, int, int],
         mesh: Mesh | None = None) -> Algorithm:
    """DREAM+'s ``(init, step)``. Reads ``config.dream`` and ``config.ipc`` (and ``config.dsa_strategy`` for the
    DSA base)."""
    return gradient_matching.matching(dream_parts(spec_from_config(config), mesh), model, num_classes, image_shape,
                                      mesh)
