"""Device mesh helpers: one ``data`` axis over all devices (CPU, GPU or TPU hosts alike).

Algorithms receive the mesh and mark the arrays whose sample axis should be split with :func:`batch_splitter`
(``with_sharding_constraint(x, NamedSharding(mesh, P(..., "data")))``); everything else stays replicated and XLA
inserts the reductions (e.g. a per-class mean over a sharded real batch becomes an all-reduce).
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from ddjax.errors import ConfigError

DATA_AXIS = "data"


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh named ``data`` over ``devices`` (default: all devices of the default backend)."""
    devices = list(jax.devices() if devices is None else devices)
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Place every array of ``tree`` fully replicated on ``mesh``."""
    return jax.device_put(tree, NamedSharding(mesh, P()))


def data_size(mesh: Mesh | None) -> int:
    """Devices along the ``data`` axis (1 without a mesh)."""
    return 1 if mesh is None else int(mesh.shape[DATA_AXIS])


def check_divisible(batch: int, mesh: Mesh | None, what: str) -> None:
    """ConfigError (one line) unless ``batch`` splits evenly over the mesh's ``data`` axis. ``what`` names the
    setting, e.g. ``"dm.batch_real=6"``."""
    n = data_size(mesh)
    if batch % n:
        raise ConfigError(f"{what} must be divisible by the {n} devices of the mesh's data axis (each device takes "
                          f"1/{n} of the batch); set it to a multiple of {n}")


def batch_splitter(mesh: Mesh | None, axis: int = 0) -> Callable[[jax.Array], jax.Array]:
    """The one data-parallel rule: ``x -> x`` constrained to split its ``axis`` (the sample axis of a batch) over the
    mesh's ``data`` axis, everything else replicated; XLA inserts the reductions. Identity without a mesh or with
    one device."""
    if data_size(mesh) == 1:
        return lambda x: x

    def split(x: jax.Array) -> jax.Array:
        axes = [None] * x.ndim
        axes[axis] = DATA_AXIS
        return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, P(*axes)))
    return split
