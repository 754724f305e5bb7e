r"""IID: inter-sample and inter-feature relations on top of DM, M3D or IDM (Deng et al., CVPR'24, eqs. 8-9).

.. math:: \mathcal L = \mathcal L_{base} + \lambda_{CC}\,\mathcal L_{CC} + \lambda_{CM}\,\mathcal L_{CM}

- :math:`\mathcal L_{base}`: DM's mean-embedding distance (``base="dm"``, the paper's DM+ours) or M3D's Gaussian
  MMD (``base="m3d"``), on the embeddings of a fresh random ConvNet, as in :mod:`ddjax.algorithms.dm` /
  :mod:`ddjax.algorithms.m3d`; or IDM's loss (``base="idm"``, eq. 9, the paper's IDM+ours): the mean-embedding
  distance and the class-aware CE of a network drawn from IDM's queue, on partitioned synthetic images
  (:mod:`ddjax.algorithms.idm`; its fields in ``config.iid.idm``).
- :math:`\mathcal L_{CM} = \sum_c \|\Sigma_S^c - \Sigma_T^c\|_F^2` (eqs. 5-7) on the local feature maps of the same
  ConvNet (the fresh random one, or IDM's queue network): its last block's map, as the authors' code
  (``cov_blocks="last"``), or every block summed (``"all"``).
- :math:`\mathcal L_{CC}` (eq. 3): class centralization of a **pretrained teacher**'s embeddings of the augmented
  synthetic images, one teacher drawn per step from a pool trained once (:mod:`ddjax.teachers`). ``cc_form``:
  ``"squared"`` (default; the authors' released code: :math:`\sum_j\|e_j-\bar e\|^2`, "same result" as eq. 3 per
  their comment) or ``"exp"`` (eq. 3 with ``alpha``, ``beta``).

Defaults (paper §4.1): λ_CC 0.05, λ_CM 0.01 for IPC 1 and 10; IPC 50 uses λ_CC 0.003 (set in the IPC-50 configs).
Teacher: the paper's ResNet-18 (instance norm) trained 30 epochs on the same data, SGD 0.01/0.9/5e-4, no
augmentation, constant lr (reference ``pre_model.py``); 8 teachers instead of the reference's 1,000.

At IPC 1 both terms are identically zero on DM or M3D (one sample is its own class mean and has zero covariance), so
IID equals its base there — the paper reports no DM+IID number at IPC 1 for this reason; IDM's partitioning gives
``factor²`` images per class, so IDM+IID has one.

``prepare`` (the registry hook) loads the teacher pool from :mod:`ddjax.pretrained`, or trains it when
``config.make_pretrained`` is true; with ``lambda_cc = 0`` no teacher is needed and none is loaded.
"""
from __future__ import annotations

import operator
from typing import Any, TextIO

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import linen as nn
from jax.sharding import Mesh

from ddjax import teachers
from ddjax.algorithms import idm
from ddjax.algorithms.base import Algorithm, RealPool
from ddjax.algorithms.distribution_family import (BASE_NAMES, COV_BLOCKS, base_term, centralization_term,
                                                  covariance_term, distribution_matching, embedding_and_maps,
                                                  embeddings)
from ddjax.errors import ConfigError, check_choice
from ddjax.losses import CENTRALIZATION_FORMS

__all__ = ["IID_BASES", "default_config", "make", "prepare"]

#: ``config.iid.base``: the family's bases and IDM (the paper's two: DM and IDM; M3D is ddjax's addition).
IID_BASES = BASE_NAMES + ("idm",)


def default_config() -> ml_collections.ConfigDict:
    """IID hyper-parameters (``config.iid``): the paper's weights, the authors' code for the rest."""
    return ml_collections.ConfigDict(dict(
        base="dm",                       # dm | m3d | idm
        lr_img=1.0, momentum=0.5, batch_real=256,                    # the base's optimiser and real batch
        bandwidth="median", sigmas=(0.5, 1.0, 2.0), unbiased=False,  # the M3D kernel (base="m3d" only)
        idm=idm.queue_config(),          # IDM's queue, partitioning, class-aware term (base="idm" only)
        lambda_cc=0.05, lambda_cm=0.01,  # paper, IPC 1/10 (IPC 50: lambda_cc 0.003)
        cc_form="squared", alpha=0.02, beta=0.0,  # squared: the released code; exp: eq. 3 with alpha, beta
        cov_blocks="last",               # last | all: which ConvNet blocks' local maps L_CM matches
        teacher=teachers.default_teacher_config(),
    ))


def _check(hp: ml_collections.ConfigDict) -> None:
    check_choice("iid.base", hp.base, IID_BASES)
    check_choice("iid.cov_blocks", hp.cov_blocks, COV_BLOCKS)
    check_choice("iid.cc_form", hp.cc_form, CENTRALIZATION_FORMS)
    for name in ("lambda_cc", "lambda_cm"):
        if not hp[name] >= 0:
            raise ConfigError(f"iid.{name} must be >= 0, got {hp[name]}; set --config.iid.{name}")
    if hp.cc_form == "exp" and not hp.alpha >= 0:
        raise ConfigError(f"iid.alpha must be >= 0, got {hp.alpha}")


def make(config: ml_collections.ConfigDict, model: nn.Module, num_classes: int,
         image_shape: tuple[int, int, int], mesh: Mesh | None = None) -> Algorithm:
    """Build IID's ``(init, step)``; ``step(state, data)`` takes what :func:`prepare` returns."""
    hp = config.iid
    _check(hp)
    parts = {}
    if hp.base == "idm":
        p = idm.idm_parts(hp.idm, "iid.idm", model, image_shape, config.ipc, mesh)
        terms, features = list(p.terms), p.features
        parts = dict(networks=p.networks, images=p.images, initial=p.initial)
    else:
        terms, features = [base_term(hp.base, hp, "iid", config.ipc)], embeddings(model)
    if hp.lambda_cm > 0:
        terms.append(covariance_term(float(hp.lambda_cm)))
        features = embedding_and_maps(model, hp.cov_blocks)  # also the logits IDM's class-aware term reads
    if hp.lambda_cc > 0:
        teachers.check_teacher_config(hp.teacher)
        terms.append(centralization_term(teachers.build_teacher_model(hp.teacher, num_classes), float(hp.lambda_cc),
                                         float(hp.alpha), float(hp.beta), hp.cc_form))
    return distribution_matching(config, hp, "iid", model, num_classes, image_shape, mesh, terms=tuple(terms),
                                 features=features, real_pool=operator.itemgetter("real"), **parts)


def prepare(config: ml_collections.ConfigDict, dataset: Any, real: RealPool, mesh: Mesh | None = None,
            stream: TextIO | None = None) -> dict[str, Any]:
    """The step's data: ``{"real": RealPool, "teachers": stacked teacher variables}`` (no teachers when
    ``lambda_cc`` is 0). Loads the pool, or trains and stores it when ``config.make_pretrained``; raises
    DataNotFoundError with the command that makes it otherwise."""
    _check(config.iid)
    if not config.iid.lambda_cc > 0:
        return {"real": real}
    pool, path, model = teachers.load_or_make_teachers(config, config.iid.teacher, dataset, stream=stream,
                                                       mesh=mesh)
    teachers.check_teacher_embedding(model, pool, np.asarray(dataset.train_images[:16]))
    if stream is not None:
        print(f"teacher pool: {teachers.pool_size(pool)} x {config.iid.teacher.model} from {path}", file=stream)
    return {"real": real, "teachers": jax.tree.map(jnp.asarray, pool)}
