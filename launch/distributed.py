"""Multi-process runs (one process per host of a TPU pod slice or per GPU host): ``jax.distributed`` set-up from the
command line or the environment, which process writes the outputs, and global arrays from process-local data.

``python -m launch.main --config=... --coordinator_address=HOST:PORT --num_processes=N --process_id=I`` on every
host (docs/scaling.md has the pod-slice and multi-GPU commands). After :func:`initialize`, ``jax.devices()`` lists
every device of every process, so ``ddjax.sharding.make_mesh()`` is the global mesh; the jitted step is one SPMD
program that every process runs on its own devices.

* Outputs: only process 0 writes metrics, pictures, ``synthetic.npz``, ``results.json`` and TensorBoard files
  (:func:`is_writer`); every process takes part in the orbax checkpoints (orbax requires it: each process writes
  the shards it holds and process 0 the metadata). The workdir must be one directory all processes see (NFS,
  Filestore, a gcsfuse mount).
* Data: each process transfers only its slice of the per-class real pool to its devices
  (:func:`shard_real_pool`, ``jax.make_array_from_process_local_data``); the synthetic set, the optimizer state
  and the networks are replicated over all devices of all processes.
* A process that dies stops the others: JAX's coordination service aborts them (exit status 134) once
  ``heartbeat_timeout_seconds`` passed without a heartbeat (at once when process 0, the coordinator, died).
  Rerunning the same commands resumes from the last checkpoint.
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np

from ddjax.errors import ConfigError

#: Environment variables read when the matching flag is not given (``JAX_COORDINATOR_ADDRESS`` is jax's own).
ENV = {"coordinator_address": "JAX_COORDINATOR_ADDRESS", "num_processes": "JAX_NUM_PROCESSES",
       "process_id": "JAX_PROCESS_ID"}


def on_cloud_tpu_vm() -> bool:
    """True on a Cloud TPU VM (libtpu installed and TPU chips present), as jax's own cluster detection decides;
    checked without starting a backend."""
    try:
        from jax._src import cloud_tpu_init, hardware_utils
        chips, _ = hardware_utils.num_available_tpu_chips_and_device_id()
        return cloud_tpu_init.get_tpu_library_path() is not None and chips > 0
    except Exception:   # a jax without these private helpers: no auto-detection, the flags still work
        return False


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, heartbeat_timeout_seconds: int = 100) -> bool:
    """Call ``jax.distributed.initialize`` when a multi-process run is asked for; returns whether it was.

    Asked for: any of the three arguments given (or its environment variable, :data:`ENV`; jax detects the others
    on SLURM, Open MPI, Kubernetes and Cloud TPU), or running on a Cloud TPU VM (then all three come from the TPU
    metadata: one process per host of the slice). Must run before any JAX computation. A bad combination (say,
    ``--process_id`` without ``--coordinator_address`` off a cluster) raises ConfigError (one line).
    """
    given = {"coordinator_address": coordinator_address, "num_processes": num_processes, "process_id": process_id}
    for name, var in ENV.items():
        if given[name] is None and os.environ.get(var):
            value = os.environ[var]
            try:
                given[name] = value if name == "coordinator_address" else int(value)
            except ValueError:
                raise ConfigError(f"{var}={value!r} is not an integer; set it to a whole number") from None
    if all(v is None for v in given.values()) and not on_cloud_tpu_vm():
        return False
    n, i = given["num_processes"], given["process_id"]
    if n is not None and n < 1 or (n is not None and i is not None and not 0 <= i < n):
        raise ConfigError(f"--process_id={i} must be in [0, --num_processes={n}); give each process its own id "
                          "from 0 to num_processes - 1")
    import jax
    try:
        jax.distributed.initialize(heartbeat_timeout_seconds=heartbeat_timeout_seconds, **given)
    except (ValueError, RuntimeError) as e:
        raise ConfigError(f"jax.distributed.initialize failed ({str(e).splitlines()[0][:200]}); give "
                          "--coordinator_address=HOST:PORT (process 0's host), --num_processes and --process_id on "
                          "every process, or run on a cluster jax detects (Cloud TPU, SLURM, Open MPI)") from None
    return True


def is_writer() -> bool:
    """Whether this process writes the run's files (metrics, pictures, npz, results, TensorBoard): process 0."""
    import jax
    return jax.process_index() == 0


def to_host(tree: Any) -> Any:
    """Every array of ``tree`` as a numpy array on every process (``np.asarray`` when this process holds all of
    it, e.g. replicated; ``multihost_utils.process_allgather`` for an array split over processes)."""
    import jax
    from jax.experimental import multihost_utils

    def fetch(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable and not x.is_fully_replicated:
            return np.asarray(multihost_utils.process_allgather(x, tiled=True))
        return np.asarray(x) if isinstance(x, jax.Array) else x
    return jax.tree.map(fetch, tree)


def shard_real_pool(real: Any, mesh: Any) -> Any:
    """The per-class real pool (``RealPool``: ``images`` ``(K, M, H, W, C)``, ``counts`` ``(K,)``) as global arrays
    with ``images`` split along its sample axis ``M`` over the mesh's ``data`` axis (``M`` padded with zero rows
    to a multiple of the axis size; padding rows are never drawn, as ``counts`` is unchanged). Each process passes
    only its rows to ``jax.make_array_from_process_local_data``, so a device holds ``1/n`` of the pool; the
    per-step draw (``sample_per_class``) is the same program on the split pool and gives the same batch."""
    import jax
    from jax.sharding import NamedSharding, PartitionSpec as P

    from ddjax.sharding import DATA_AXIS, data_size

    images = np.asarray(real.images)
    n = data_size(mesh)
    pad = -images.shape[1] % n
    if pad:
        images = np.concatenate([images, np.zeros((images.shape[0], pad) + images.shape[2:], images.dtype)], 1)
    sharding = NamedSharding(mesh, P(None, DATA_AXIS))
    rows = [index[1] for index in sharding.addressable_devices_indices_map(images.shape).values()]
    start, stop = min(r.start for r in rows), max(r.stop for r in rows)
    local = images[:, start:stop]
    global_images = jax.make_array_from_process_local_data(sharding, local, images.shape)
    counts = jax.device_put(np.asarray(real.counts), NamedSharding(mesh, P()))
    return type(real)(global_images, counts)


def replicate_rest(tree: Any, mesh: Any) -> Any:
    """``ddjax.sharding.replicate`` for every leaf except arrays already laid out over ``mesh`` (such as the
    split real pool of :func:`shard_real_pool`), which stay as they are."""
    import jax
    from jax.sharding import NamedSharding

    from ddjax.sharding import replicate

    def place(x):
        if isinstance(x, jax.Array) and isinstance(x.sharding, NamedSharding) and x.sharding.mesh == mesh:
            return x
        return replicate(x, mesh)
    return jax.tree.map(place, tree)


def real_pool(images: np.ndarray, labels: np.ndarray, num_classes: int, mesh: Any) -> Any:
    """``algorithms.make_real_pool`` on the global mesh: replicated on every device with one process (each device
    draws its batch locally); split over processes with several (:func:`shard_real_pool`), built in host memory
    first so no accelerator ever holds the whole pool."""
    import jax

    from ddjax import algorithms
    from ddjax.sharding import replicate

    if jax.process_count() == 1:
        return replicate(algorithms.make_real_pool(images, labels, num_classes), mesh)
    with jax.default_device(jax.local_devices(backend="cpu")[0]):
        pool = algorithms.make_real_pool(images, labels, num_classes)
    return shard_real_pool(pool, mesh)
