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

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import linen as nn
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from ddjax import augment, models
from ddjax.algorithms.base import Algorithm, DistillState, RealPool, SyntheticSet, sample_per_class
from ddjax.errors import ConfigError
from ddjax.losses import mean_embedding_distance_per_class


def default_config() -> ml_collections.ConfigDict:
    """DM hyper-parameters (``config.dm``), reference values from ``main_DM.py``."""
    return ml_collections.ConfigDict(dict(lr_img=1.0, momentum=0.5, batch_real=256))


def embed_fn(model: nn.Module, variables: Any, images: jax.Array) -> jax.Array:
    """Embeddings (features before the head) of a batch. Batch-norm nets use the batch's own statistics, as the
    reference does for a freshly initialised network in train mode."""
    out, _ = models.apply_model(model, variables, images, train=True, output="embed")
    return out


def make(config: ml_collections.ConfigDict, model: nn.Module, num_classes: int,
         image_shape: tuple[int, int, int], mesh: Mesh | None = None) -> Algorithm:
    """Build DM's ``(init, step)``.

    Reads ``config.dm`` (lr_img, momentum, batch_real), ``config.dsa_strategy`` and ``config.ipc``.
    ``mesh``: when given, the per-class real batch is sharded along its sample axis over ``mesh``'s ``data`` axis.
    """
    hp = config.dm
    if hp.batch_real < 1:
        raise ConfigError(f"dm.batch_real must be >= 1, got {hp.batch_real}")
    if hp.lr_img <= 0:
        raise ConfigError(f"dm.lr_img must be > 0, got {hp.lr_img}")
    strategy = config.dsa_strategy
    augment.parse_strategy(strategy)  # validates eagerly, before tracing
    if mesh is not None and hp.batch_real % mesh.shape["data"]:
        raise ConfigError(f"dm.batch_real={hp.batch_real} must be divisible by the {mesh.shape['data']} devices "
                          "of the data axis; change --config.dm.batch_real")
    optimizer = optax.sgd(hp.lr_img, momentum=hp.momentum)
    ipc = config.ipc

    def init(key: jax.Array, synthetic: SyntheticSet) -> DistillState:
        if synthetic.images.shape != (num_classes * ipc,) + tuple(image_shape):
            raise ConfigError(f"synthetic images have shape {synthetic.images.shape}, expected "
                              f"{(num_classes * ipc,) + tuple(image_shape)} (num_classes*ipc, H, W, C)")
        return DistillState(step=jnp.zeros((), jnp.int32), rng=key, synthetic=synthetic,
                            opt_state=optimizer.init(synthetic.images))

    def siamese_dsa(keys: jax.Array, images: jax.Array) -> jax.Array:
        # One transform per class (key per class), the same for that class's real and synthetic images.
        return jax.vmap(lambda k, x: augment.dsa(k, x, strategy, per_sample=False))(keys, images)

    def flat_embed(variables: Any, images: jax.Array) -> jax.Array:
        k, n = images.shape[:2]
        return embed_fn(model, variables, images.reshape((k * n,) + images.shape[2:])).reshape(k, n, -1)

    def step(state: DistillState, real: RealPool) -> tuple[DistillState, dict[str, jax.Array]]:
        rng, k_net, k_real, k_aug = jax.random.split(state.rng, 4)
        variables = models.init_model(model, k_net, image_shape)
        aug_keys = jax.random.split(k_aug, num_classes)

        real_batch = sample_per_class(k_real, real, hp.batch_real)
        if mesh is not None:
            real_batch = jax.lax.with_sharding_constraint(real_batch, NamedSharding(mesh, P(None, "data")))
        real_embed = jax.lax.stop_gradient(flat_embed(variables, siamese_dsa(aug_keys, real_batch)))

        def loss_fn(images: jax.Array) -> jax.Array:
            syn = images.reshape((num_classes, ipc) + images.shape[1:])
            return mean_embedding_distance_per_class(real_embed, flat_embed(variables, siamese_dsa(aug_keys, syn)))

        images = state.synthetic.images
        loss, grads = jax.value_and_grad(loss_fn)(images)
        updates, opt_state = optimizer.update(grads, state.opt_state, images)
        synthetic = state.synthetic.replace(images=optax.apply_updates(images, updates))
        new_state = state.replace(step=state.step + 1, rng=rng, synthetic=synthetic, opt_state=opt_state)
        return new_state, {"loss": loss, "grad_norm": optax.tree.norm(grads)}

    return Algorithm(init, step)
