"""The algorithm protocol: every distillation method is an ``(init, step)`` pair over ONE state pytree.

Like optax's ``GradientTransformation``::

    algo = ddjax.algorithms.get_algorithm(config, model, num_classes, image_shape)
    state = algo.init(key, synthetic)                 # synthetic: SyntheticSet
    state, metrics = jax.jit(algo.step)(state, data)  # metrics: dict of scalars
    # data: what the algorithm's ``prepare`` hook gives (ddjax.algorithms.prepare_data): the RealPool for DM,
    # expert trajectories for MTT/SATM, real images + a teacher pool for IID.

``state.synthetic`` is the distilled set; everything the step needs between calls (optimizer states, step counter,
rng, learned hyper-parameters) lives in the same pytree, so checkpointing, sharding and resuming treat all
algorithms alike.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ddjax import augment
from ddjax.errors import ConfigError, check_choice
from ddjax.sharding import data_size

INIT_NAMES = ("real", "noise")


class SyntheticSet(flax.struct.PyTreeNode):
    """The distilled data: ``images`` ``(K*IPC, H, W, C)`` class-major, ``labels`` ``(K*IPC,)`` int32.

    ``extras`` holds per-sample or learned quantities of later algorithms (soft labels, α/β, learning rates).
    """
    images: jax.Array
    labels: jax.Array
    extras: dict = flax.struct.field(default_factory=dict)


class RealPool(NamedTuple):
    """Real training images grouped by class on device: ``images`` ``(K, M, H, W, C)`` where class ``c`` holds
    ``counts[c]`` valid images followed by padding; ``counts`` ``(K,)`` int32."""
    images: jax.Array
    counts: jax.Array


class DistillState(flax.struct.PyTreeNode):
    """One pytree for a whole distillation run.

    step: int32 scalar, steps taken. rng: raw uint32 PRNG key (checkpoints as a plain array).
    synthetic: the :class:`SyntheticSet` being learned. opt_state: optax state(s). extras: the algorithm's own
    state between steps, a typed pytree (a NamedTuple such as ``trajectory.TrajectoryExtras``, as optax's
    ``ScaleByAdamState``); empty when the algorithm has none.
    """
    step: jax.Array
    rng: jax.Array
    synthetic: SyntheticSet
    opt_state: Any
    extras: Any = flax.struct.field(default_factory=dict)


class Algorithm(NamedTuple):
    """``init(key, synthetic) -> state``; ``step(state, data) -> (state, metrics)``; both pure.

    ``data`` is a pytree of arrays (a ``RealPool`` unless the algorithm's ``prepare`` hook says otherwise)."""
    init: Callable[[jax.Array, SyntheticSet], DistillState]
    step: Callable[[DistillState, Any], tuple[DistillState, dict[str, jax.Array]]]


def apply_gradients(tx: optax.GradientTransformation, grads: Any, opt_state: Any, params: Any) -> tuple[Any, Any]:
    """One optax step on learned synthetic quantities, as flax's ``TrainState.apply_gradients``:
    ``updates, opt_state = tx.update(grads, opt_state, params)``; ``params + updates``.

    ``params``: the synthetic images, or a pytree of them and learned hyper-parameters (MTT's ``{"images", "lr"}``
    with an ``optax.partition``). Returns ``(new params, new opt_state)``. Every algorithm's image update is this.
    """
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state


def one_cpu(mesh: Any) -> bool:
    """Whether a step runs on one CPU device (no mesh, or a mesh of one device along ``data``, as the launcher
    builds on a one-CPU machine): where cache-sized chunks of a batch pay (XLA:CPU streams a whole batch's
    activations from memory); split over several devices or on an accelerator the batch stays whole."""
    return data_size(mesh) == 1 and jax.default_backend() == "cpu"


class Term(NamedTuple):
    """One weighted loss term, ``(name, weight, fn)``: the loss is ``Σ weight · fn(...)`` over a tuple of terms and
    the metrics report every term by ``name``. A term that is off is left out of the tuple. What ``fn`` takes is
    the family's: :class:`~ddjax.algorithms.distribution_family.TermInputs` for distribution matching, the per-class
    real and synthetic :class:`~ddjax.algorithms.gradient_matching.ClassStats` for gradient matching."""
    name: str
    weight: float
    fn: Callable[..., Any]


def siamese_dsa(keys: jax.Array, images: jax.Array, strategy: str, mode: str = "S") -> jax.Array:
    """Siamese DSA of class-major images ``(K, n, H, W, C)``: one transform per class (``keys[c]``), the same for
    that class's real and synthetic images (Zhao & Bilen, ICML'21). Identity when ``strategy`` has no op."""
    if not augment.parse_strategy(strategy):
        return images
    return jax.vmap(lambda k, x: augment.dsa(k, x, strategy, per_sample=False, mode=mode))(keys, images)


def make_real_pool(images: np.ndarray, labels: np.ndarray, num_classes: int) -> RealPool:
    """Group real images by class into a padded ``(K, M, H, W, C)`` array, ``M`` the largest class size.

    Raises ConfigError when a class has no sample.
    """
    labels = np.asarray(labels)
    counts = np.bincount(labels, minlength=num_classes)[:num_classes]
    if (counts == 0).any():
        empty = np.flatnonzero(counts == 0).tolist()
        raise ConfigError(f"classes {empty} have no training images; every class needs at least one "
                          "(check the dataset's labels or num_classes)")
    pool = np.zeros((num_classes, counts.max()) + images.shape[1:], images.dtype)
    for c in range(num_classes):
        pool[c, :counts[c]] = images[labels == c]
    return RealPool(jnp.asarray(pool), jnp.asarray(counts, jnp.int32))


def sample_per_class(key: jax.Array, real: RealPool, batch: int) -> jax.Array:
    """``batch`` real images of every class, ``(K, batch, H, W, C)``, in one program.

    Within a class the draw is without replacement (a random permutation of the ``counts[c]`` valid rows, as the
    reference's ``randperm[:batch]``); a class smaller than ``batch`` cycles through its permutation.
    """
    num_classes, pool_size = real.images.shape[:2]
    keys = jax.random.split(key, num_classes)

    def one_class(k, images, count):
        scores = jnp.where(jnp.arange(pool_size) < count, jax.random.uniform(k, (pool_size,)), jnp.inf)
        order = jnp.argsort(scores)
        return images[order[jnp.arange(batch) % count]]

    return jax.vmap(one_class)(keys, real.images, real.counts)


def init_synthetic(key: jax.Array, real: RealPool, ipc: int, init: str = "real") -> SyntheticSet:
    """Initialise ``ipc`` synthetic images per class, class-major.

    ``init='real'``: distinct random real images of the class (the reference default; needs ``ipc`` ≤ class size).
    ``init='noise'``: standard normal pixels (the normalised-data scale).
    """
    check_choice("synthetic init", init, INIT_NAMES)
    if ipc < 1:
        raise ConfigError(f"ipc must be >= 1, got {ipc}; set --config.ipc to a positive integer")
    num_classes = real.images.shape[0]
    image_shape = real.images.shape[2:]
    labels = jnp.repeat(jnp.arange(num_classes, dtype=jnp.int32), ipc)
    if init == "noise":
        images = jax.random.normal(key, (num_classes * ipc,) + image_shape, jnp.float32)
    else:
        smallest = int(np.min(np.asarray(real.counts)))
        if ipc > smallest:
            raise ConfigError(f"ipc={ipc} exceeds the smallest class ({smallest} images) for init='real'; "
                              "lower --config.ipc or use --config.init=noise")
        images = sample_per_class(key, real, ipc).reshape((num_classes * ipc,) + image_shape)
    return SyntheticSet(images=images, labels=labels)
