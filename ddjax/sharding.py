"""Device mesh helpers: one ``data`` axis over all devices (CPU, GPU or TPU hosts alike).

Algorithms receive the mesh and mark the arrays whose sample axis should be split with
``jax.lax.with_sharding_constraint(x, NamedSharding(mesh, P(..., "data")))``; everything else stays replicated and
XLA inserts the reductions (e.g. a per-class mean over a sharded real batch becomes an all-reduce).
"""
from __future__ import annotations

from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh named ``data`` over ``devices`` (default: all devices of the default backend)."""
    devices = list(jax.devices() if devices is None else devices)
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Place every array of ``tree`` fully replicated on ``mesh``."""
    return jax.device_put(tree, NamedSharding(mesh, P()))
