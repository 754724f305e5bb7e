"""Device meshes and the one rule that splits an axis over them (CPU, GPU or TPU hosts alike).

Meshes (:func:`make_mesh`, built with ``jax.make_mesh`` over all devices of the default backend, every axis
``AxisType.Auto``):

- ``data``: the distillation step's mesh. Algorithms mark the arrays whose sample axis should be split with
  :func:`batch_splitter` (``with_sharding_constraint(x, NamedSharding(mesh, P(..., "data")))``); everything else
  stays replicated and XLA inserts the reductions (e.g. a per-class mean over a sharded real batch becomes an
  all-reduce). A batch the algorithm flattens before its network is split flattened (:func:`flat_batch_splitter`).
- ``seeds``: the evaluator's mesh (:func:`seed_mesh`): the K independently trained networks of an evaluation (and
  MTT's experts, IID's teachers, which are trained by the same function) are split over the devices with
  :func:`map_over_seeds`; each device trains its own seeds, no communication. It uses the fewest devices that
  give the same wall time (:func:`seed_devices`), so idle devices do not train padding. Over several processes
  each process trains a contiguous block of the seeds (:func:`process_block`) and the results are all-gathered.

The policy, the same for every family and both axes: an axis of size ``B`` split over ``n`` devices gives each
device ``ceil(B / n)`` rows; when ``n`` does not divide ``B`` the surplus rows are padding whose results are
dropped (XLA's SPMD partitioner pads and masks a constrained batch axis; :func:`map_over_seeds` pads the seed axis
with copies of the last seed, on the fewest devices that carry the ``ceil(K / n)`` load), so results equal the
one-device ones and the cost is at most ``(ceil(B / n) · n − B) / B`` extra work. The one error: a ``data`` batch
smaller than the device count (:func:`check_split`), where whole devices would compute nothing but padding.
"""
from __future__ import annotations

import functools
import math
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from ddjax.errors import ConfigError

DATA_AXIS = "data"
SEEDS_AXIS = "seeds"


def make_mesh(devices: Sequence[jax.Device] | None = None, axis: str = DATA_AXIS) -> Mesh:
    """A 1-D mesh named ``axis`` (``data`` or ``seeds``) over ``devices`` (default: all devices of the default
    backend, in ``jax.make_mesh``'s topology-aware order)."""
    devices = list(jax.devices() if devices is None else devices)
    return jax.make_mesh((len(devices),), (axis,), (AxisType.Auto,), devices=devices)


def seed_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """The evaluator's mesh: one ``seeds`` axis over ``devices`` (default: all)."""
    return make_mesh(devices, SEEDS_AXIS)


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Place every array of ``tree`` fully replicated on ``mesh``."""
    return jax.device_put(tree, NamedSharding(mesh, P()))


def axis_size(mesh: Mesh | None, axis: str = DATA_AXIS) -> int:
    """Devices along ``axis`` of ``mesh`` (1 without a mesh or without that axis)."""
    return 1 if mesh is None or axis not in mesh.axis_names else int(mesh.shape[axis])


def data_size(mesh: Mesh | None) -> int:
    """Devices along the ``data`` axis (1 without a mesh)."""
    return axis_size(mesh, DATA_AXIS)


def check_split(size: int, mesh: Mesh | None, what: str, axis: str = DATA_AXIS) -> None:
    """The policy's one error (module docstring): ConfigError (one line) when ``size`` rows cannot give each of
    the mesh's ``axis`` devices at least one. ``what`` names the setting, e.g. ``"dm.batch_real=6"``."""
    n = axis_size(mesh, axis)
    if size < n:
        raise ConfigError(f"{what} is smaller than the {n} devices of the mesh's {axis} axis (each device takes "
                          f"ceil({what.split('=')[0]}/{n}) rows, so {n - size} devices would compute only "
                          f"padding); set it to at least {n}, best a multiple of {n}")


def batch_splitter(mesh: Mesh | None, axis: int = 0) -> Callable[[jax.Array], jax.Array]:
    """The one data-parallel rule: ``x -> x`` constrained to split its ``axis`` (the sample axis of a batch) over the
    mesh's ``data`` axis, everything else replicated; XLA inserts the reductions and pads an axis the devices do
    not divide (module docstring). Identity without a mesh or with one device."""
    if data_size(mesh) == 1:
        return lambda x: x

    def split(x: jax.Array) -> jax.Array:
        axes = [None] * x.ndim
        axes[axis] = DATA_AXIS
        return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, P(*axes)))
    return split


def flat_batch_splitter(mesh: Mesh | None) -> Callable[[jax.Array], jax.Array]:
    """For a per-class batch ``(K, B, ...)`` that the algorithm flattens to ``(K·B, ...)`` before its network: the
    flattened batch split over the ``data`` axis, handed back as ``(K, B, ...)``. Splitting ``B`` itself
    (``batch_splitter(mesh, 1)``) does not survive that flattening (a device's rows of every class are not one
    block of ``K·B``): XLA all-gathers and every device computes the whole step (measured: the same FLOPs per
    device as one device; with this rule 1/n of them). Identity without a mesh or with one device."""
    flat = batch_splitter(mesh, 0)
    if data_size(mesh) == 1:
        return flat
    return lambda x: flat(x.reshape((-1,) + x.shape[2:])).reshape(x.shape)


def split_batch(mesh: Mesh | None, size: int, what: str, axis: int = 0) -> Callable[[jax.Array], jax.Array]:
    """:func:`check_split` then :func:`batch_splitter`: what every family calls for its batch of ``size`` rows
    along ``axis``; ``what`` names the setting in the error (``"dm.batch_real=6"``)."""
    check_split(size, mesh, what)
    return batch_splitter(mesh, axis)


def jit_step(step: Callable[..., Any], mesh: Mesh | None, donate: bool = True) -> Callable[..., Any]:
    """``jax.jit`` of an algorithm's ``step(state, data) -> (state, metrics)`` (the state donated) whose outputs stay
    replicated over ``mesh``, as its state went in. Left to XLA, a step that splits a batch may hand back the state
    split over the ``data`` axis (DM's synthetic images did): the next call then has other input shardings and jit
    compiles the step a second time. Without a mesh: plain ``jax.jit``."""
    donate_argnums = (0,) if donate else ()
    if mesh is None:
        return jax.jit(step, donate_argnums=donate_argnums)
    return jax.jit(step, donate_argnums=donate_argnums, out_shardings=NamedSharding(mesh, P()))


def seed_devices(num_seeds: int, n: int) -> int:
    """How many of ``n`` devices train ``num_seeds`` seeds: the per-device load ``L = ceil(K / n)`` (the wall time
    of using all ``n``) spread over the fewest devices that carry it, ``ceil(K / L)``, so at most ``L − 1`` padded
    seeds (K = 2 on 8 devices: 2 devices, 1 seed each; K = 10: 5 devices, 2 each; K = 5: 5 devices)."""
    load = math.ceil(num_seeds / n)
    return math.ceil(num_seeds / load)


def map_over_seeds(fn: Callable[..., Any], mesh: Mesh | None, per_seed: tuple, shared: tuple = (),
                   **static: Any) -> Any:
    """``fn(*per_seed, *shared, **static)`` with the leading (seed) axis of every ``per_seed`` array split over
    devices of the mesh (``jax.shard_map`` over a ``seeds`` axis of :func:`seed_devices` of them: each trains its own
    seeds, no communication; ``shared`` is replicated). ``fn`` must treat seeds independently (a vmap/map over
    them) and return arrays with the seed axis first; ``static`` are hashable keyword arguments (the compiled
    program is cached per ``fn``, devices and ``static``). K not divisible by the devices used: padded with copies
    of the last seed, their results dropped. A mesh over several processes (a multi-process run's global mesh):
    each process trains its own block of seeds on its own devices and every process gets all K results
    (:func:`_across_processes`). Without a mesh, with one device or one seed: ``fn`` called as is.
    """
    k = int(jax.tree.leaves(per_seed)[0].shape[0])
    processes = set() if mesh is None else {d.process_index for d in mesh.devices.flat}
    local = [] if mesh is None else [d for d in mesh.devices.flat if d.process_index == jax.process_index()]
    if len(processes) > 1:
        return _across_processes(fn, sorted(processes), local, per_seed, shared, k, static)
    m = seed_devices(k, len(local)) if local else 1
    if m == 1:
        return fn(*per_seed, *shared, **static)
    mesh = seed_mesh(local[:m])
    padded = math.ceil(k / m) * m

    def pad(x: Any) -> Any:  # on the host where it can (no small programs to compile); typed PRNG keys on device
        if padded == k:
            return x
        xp = jnp if jax.dtypes.issubdtype(getattr(x, "dtype", None), jax.dtypes.prng_key) else np
        x = x if xp is jnp else np.asarray(x)
        return xp.concatenate([x, xp.repeat(x[-1:], padded - k, axis=0)])

    per_seed = jax.device_put(jax.tree.map(pad, tuple(per_seed)), NamedSharding(mesh, P(SEEDS_AXIS)))
    shared = replicate(tuple(shared), mesh)
    program = _seed_program(fn, mesh, len(per_seed), len(shared), k, tuple(sorted(static.items())))
    return program(*per_seed, *shared)


def process_block(num_seeds: int, num_processes: int, process: int) -> np.ndarray:
    """The seed indices process ``process`` of ``num_processes`` trains: the contiguous block
    ``[process·L, (process+1)·L)`` with ``L = ceil(num_seeds / num_processes)``, indices past the last seed replaced
    by the last seed (padding, so every process runs the same program shape; its results are dropped)."""
    load = math.ceil(num_seeds / num_processes)
    return np.minimum(np.arange(process * load, (process + 1) * load), num_seeds - 1)


def _across_processes(fn: Callable[..., Any], processes: list[int], local: list, per_seed: tuple, shared: tuple,
                      num_seeds: int, static: dict) -> Any:
    """:func:`map_over_seeds` on a mesh whose devices belong to several ``processes``: process ``p`` trains the seeds
    :func:`process_block` gives it on its own devices of the mesh (``local``; the one-process rule, no
    communication while training), then the results are all-gathered (``multihost_utils.process_allgather``, tiled
    in process order) and the padding dropped, so every process holds all K results, each seed's exactly as one
    device trains it. Every process of the job must call it (the run's global mesh spans them all)."""
    from jax.experimental import multihost_utils

    if processes != list(range(jax.process_count())):
        raise ConfigError(f"the evaluation mesh spans processes {processes} of {jax.process_count()}; give it "
                          "devices of every process (the run's global mesh: ddjax.sharding.make_mesh()) or of "
                          "this process only")
    block = process_block(num_seeds, len(processes), jax.process_index())
    mine = map_over_seeds(fn, seed_mesh(local), tuple(jax.tree.map(lambda x: x[block], per_seed)),
                          shared, **static)
    gathered = multihost_utils.process_allgather(mine, tiled=True)   # (P · L, ...) in process order
    return jax.tree.map(lambda x: jnp.asarray(x[:num_seeds]), gathered)


@functools.lru_cache(maxsize=64)
def _seed_program(fn: Callable[..., Any], mesh: Mesh, n_per_seed: int, n_shared: int, num_seeds: int,
                  static: tuple[tuple[str, Any], ...]) -> Callable[..., Any]:
    """The jitted ``shard_map`` of :func:`map_over_seeds` (padding seeds dropped inside), one per (fn, mesh,
    arity, seed count, static arguments)."""
    mapped = jax.shard_map(functools.partial(fn, **dict(static)), mesh=mesh,
                           in_specs=(P(SEEDS_AXIS),) * n_per_seed + (P(),) * n_shared, out_specs=P(SEEDS_AXIS),
                           check_vma=False)
    return jax.jit(lambda *args: jax.tree.map(lambda x: x[:num_seeds], mapped(*args)))
