"""Distillation algorithms, each an ``(init, step)`` pair over one state pytree (see ``base``).

``get_algorithm(config, model, num_classes, image_shape, mesh=None)`` builds the one named by
``config.algorithm``; its hyper-parameters live in ``config.<algorithm name>``.
"""
from __future__ import annotations

from typing import Callable

from ddjax.algorithms import dm
from ddjax.algorithms.base import (Algorithm, DistillState, INIT_NAMES, RealPool, SyntheticSet, init_synthetic,
                                   make_real_pool, sample_per_class)
from ddjax.errors import check_choice

# name -> (make, default_config). A new algorithm registers here and adds configs/<name>_tiny.py.
REGISTRY: dict[str, tuple[Callable[..., Algorithm], Callable]] = {
    "dm": (dm.make, dm.default_config),
}
ALGORITHM_NAMES = tuple(REGISTRY)


def get_algorithm(config, model, num_classes: int, image_shape: tuple[int, int, int], mesh=None) -> Algorithm:
    """The ``(init, step)`` pair named by ``config.algorithm``; ConfigError listing choices if unknown."""
    make, _ = REGISTRY[check_choice("algorithm", config.algorithm, ALGORITHM_NAMES)]
    return make(config, model, num_classes, image_shape, mesh=mesh)


def default_config(name: str):
    """Default hyper-parameters of algorithm ``name`` (the ``config.<name>`` section)."""
    return REGISTRY[check_choice("algorithm", name, ALGORITHM_NAMES)][1]()


__all__ = ["Algorithm", "DistillState", "RealPool", "SyntheticSet", "INIT_NAMES", "ALGORITHM_NAMES",
           "get_algorithm", "default_config", "init_synthetic", "make_real_pool", "sample_per_class"]
