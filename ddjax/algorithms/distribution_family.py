r"""The distribution-matching family on one step: DM, M3D, and IID on top of either.

Every step samples a fresh, randomly initialised network ``f`` (never trained), draws ``batch_real`` real images per
class, applies the SAME DSA transform to class ``c``'s real and synthetic images (siamese; one key per class), and
moves the synthetic images down the gradient of

.. math:: \mathcal L = \mathcal L_{base} + \lambda_{CC}\,\mathcal L_{CC} + \lambda_{CM}\,\mathcal L_{CM}

with SGD + momentum on the images (``optax.sgd``), where

- ``base="dm"``: :math:`\sum_c \|\bar f(R_c) - \bar f(S_c)\|^2` (Zhao & Bilen, ``main_DM.py``);
- ``base="m3d"``: :math:`\sum_c \mathrm{MMD}^2_k(f(R_c), f(S_c))`, ``k`` a sum of Gaussian kernels (M3D, Zhang et
  al. AAAI'24; :func:`ddjax.losses.gaussian_mmd`);
- IID (Deng et al. CVPR'24, eq. 8) adds covariance matching :math:`\mathcal L_{CM}` of ``f``'s local feature maps
  (:func:`ddjax.losses.covariance_matching`) and class centralization :math:`\mathcal L_{CC}` of a pretrained
  teacher's embeddings of the augmented synthetic images (:func:`ddjax.losses.class_centralization`), one teacher
  drawn per step from the pool the ``prepare`` hook supplies. Plain DM/M3D have both weights at zero and never
  compute those terms.

All classes are one batched program (real batch ``(K, B, H, W, C)``); with a mesh its ``B`` axis is sharded over
``data`` and XLA reduces the per-class statistics across devices.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import linen as nn
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from ddjax import augment, losses, models, teachers
from ddjax.algorithms.base import Algorithm, DistillState, RealPool, SyntheticSet, sample_per_class
from ddjax.errors import ConfigError, check_choice

BASE_NAMES = ("dm", "m3d")
BANDWIDTH_NAMES = ("median", "fixed")
COV_BLOCKS = ("last", "all")


class TeacherTerm(NamedTuple):
    """What the class-centralization term needs: the teacher network and the loss settings."""
    model: nn.Module
    weight: float
    alpha: float
    beta: float
    form: str


class IIDTerms(NamedTuple):
    """IID's extra terms: covariance matching weight (0: not computed) and blocks, and the teacher term (None: no
    L_CC, no teacher pool needed)."""
    lambda_cm: float
    cov_blocks: str
    teacher: TeacherTerm | None


def embed_fn(model: nn.Module, variables: Any, images: jax.Array) -> jax.Array:
    """Embeddings (features before the head) of a batch. Batch-norm nets use the batch's own statistics, as the
    reference does for a freshly initialised network in train mode."""
    out, _ = models.apply_model(model, variables, images, train=True, output="embed")
    return out


def check_common(hp: ml_collections.ConfigDict, section: str, strategy: str, mesh: Mesh | None) -> None:
    """Validate the fields every family member shares (``lr_img``, ``momentum``, ``batch_real``, DSA, mesh)."""
    if hp.batch_real < 1:
        raise ConfigError(f"{section}.batch_real must be >= 1, got {hp.batch_real}")
    if hp.lr_img <= 0:
        raise ConfigError(f"{section}.lr_img must be > 0, got {hp.lr_img}")
    if not 0 <= hp.momentum < 1:
        raise ConfigError(f"{section}.momentum must be in [0, 1), got {hp.momentum}")
    augment.parse_strategy(strategy)  # validates eagerly, before tracing
    if mesh is not None and hp.batch_real % mesh.shape["data"]:
        raise ConfigError(f"{section}.batch_real={hp.batch_real} must be divisible by the {mesh.shape['data']} "
                          f"devices of the data axis; change --config.{section}.batch_real")


def kernel_loss(hp: ml_collections.ConfigDict, section: str) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """M3D's per-class loss from ``hp.bandwidth`` / ``hp.sigmas`` / ``hp.unbiased`` (validated here).

    ``bandwidth="median"``: σ = ``sigmas`` × the median heuristic of the class's pooled real+synthetic embeddings
    (:func:`ddjax.losses.median_bandwidth`); ``"fixed"``: σ = ``sigmas`` as given.
    """
    check_choice(f"{section}.bandwidth", hp.bandwidth, BANDWIDTH_NAMES)
    scales = tuple(float(s) for s in hp.sigmas)
    if not scales or any(not s > 0 for s in scales):
        raise ConfigError(f"{section}.sigmas must be a non-empty tuple of positive bandwidths, got {hp.sigmas}; "
                          f"e.g. --config.{section}.sigmas='(0.5, 1.0, 2.0)'")
    unbiased = bool(hp.unbiased)
    scales_arr = jnp.asarray(scales, jnp.float32)

    def loss(real: jax.Array, syn: jax.Array) -> jax.Array:
        if hp.bandwidth == "median":
            sigmas = losses.median_bandwidth(real, syn)[:, None] * scales_arr  # (K, S), per class
        else:
            sigmas = scales
        return losses.gaussian_mmd_per_class(real, syn, sigmas, unbiased=unbiased)

    return loss


def base_loss(base: str, hp: ml_collections.ConfigDict, section: str, ipc: int
              ) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """The per-class base loss summed over classes: DM's mean-embedding distance or M3D's Gaussian MMD."""
    check_choice(f"{section} base", base, BASE_NAMES)
    if base == "dm":
        return losses.mean_embedding_distance_per_class
    if hp.unbiased and ipc < 2:
        raise ConfigError(f"{section}.unbiased=True needs ipc >= 2 (the U-statistic drops each sample's pair with "
                          f"itself); set --config.{section}.unbiased=False at ipc {ipc}")
    return kernel_loss(hp, section)


def make_matching(config: ml_collections.ConfigDict, hp: ml_collections.ConfigDict, section: str, model: nn.Module,
                  num_classes: int, image_shape: tuple[int, int, int], mesh: Mesh | None = None, *,
                  base: str = "dm", iid: IIDTerms | None = None) -> Algorithm:
    """Build the ``(init, step)`` pair of DM / M3D (``iid=None``) or IID on either base.

    ``hp``: the algorithm's config section (``lr_img``, ``momentum``, ``batch_real``, and M3D's ``bandwidth``,
    ``sigmas``, ``unbiased`` when ``base="m3d"``). ``config``: reads ``ipc`` and ``dsa_strategy``.
    ``step(state, data)``: ``data`` is the ``RealPool``, or for IID ``{"real": RealPool, "teachers": pool}``.
    """
    strategy = config.dsa_strategy
    check_common(hp, section, strategy, mesh)
    ipc = config.ipc
    class_loss = base_loss(base, hp, section, ipc)
    if iid is not None:
        check_choice(f"{section}.cov_blocks", iid.cov_blocks, COV_BLOCKS)
    optimizer = optax.sgd(hp.lr_img, momentum=hp.momentum)
    output = "embed" if iid is None else "features"

    def init(key: jax.Array, synthetic: SyntheticSet) -> DistillState:
        if synthetic.images.shape != (num_classes * ipc,) + tuple(image_shape):
            raise ConfigError(f"synthetic images have shape {synthetic.images.shape}, expected "
                              f"{(num_classes * ipc,) + tuple(image_shape)} (num_classes*ipc, H, W, C)")
        return DistillState(step=jnp.zeros((), jnp.int32), rng=key, synthetic=synthetic,
                            opt_state=optimizer.init(synthetic.images))

    def siamese_dsa(keys: jax.Array, images: jax.Array) -> jax.Array:
        # One transform per class (key per class), the same for that class's real and synthetic images.
        return jax.vmap(lambda k, x: augment.dsa(k, x, strategy, per_sample=False))(keys, images)

    def features(variables: Any, images: jax.Array) -> dict[str, Any]:
        """``{"embed": (K, n, D), "maps": tuple of (K, n, h, w, C)}`` of class-major images ``(K, n, H, W, C)``."""
        k, n = images.shape[:2]
        flat = images.reshape((k * n,) + images.shape[2:])
        out, _ = models.apply_model(model, variables, flat, train=True, output=output)
        if iid is None:
            return {"embed": out.reshape(k, n, -1), "maps": ()}
        if not iid.lambda_cm:
            return {"embed": out["embed"].reshape(k, n, -1), "maps": ()}
        blocks = out["blocks"] if iid.cov_blocks == "all" else out["blocks"][-1:]
        return {"embed": out["embed"].reshape(k, n, -1),
                "maps": tuple(b.reshape((k, n) + b.shape[1:]) for b in blocks)}

    def step(state: DistillState, data: Any) -> tuple[DistillState, dict[str, jax.Array]]:
        real_pool: RealPool = data if iid is None else data["real"]
        rng, k_net, k_real, k_aug = jax.random.split(state.rng, 4)
        variables = models.init_model(model, k_net, image_shape)
        aug_keys = jax.random.split(k_aug, num_classes)

        real_batch = sample_per_class(k_real, real_pool, hp.batch_real)
        if mesh is not None:
            real_batch = jax.lax.with_sharding_constraint(real_batch, NamedSharding(mesh, P(None, "data")))
        real = jax.lax.stop_gradient(features(variables, siamese_dsa(aug_keys, real_batch)))
        if iid is not None and iid.teacher is not None:
            teacher_vars, teacher_index = teachers.sample_teacher(jax.random.fold_in(state.rng, 1), data["teachers"])

        def loss_fn(images: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
            syn_images = siamese_dsa(aug_keys, images.reshape((num_classes, ipc) + images.shape[1:]))
            syn = features(variables, syn_images)
            terms = {"loss_base": class_loss(real["embed"], syn["embed"])}
            total = terms["loss_base"]
            if iid is not None and iid.lambda_cm:
                terms["loss_cm"] = sum(losses.covariance_matching_per_class(r, s)
                                       for r, s in zip(real["maps"], syn["maps"]))
                total = total + iid.lambda_cm * terms["loss_cm"]
            if iid is not None and iid.teacher is not None:
                t = iid.teacher
                emb = teachers.teacher_embed(t.model, teacher_vars, syn_images.reshape(images.shape))
                terms["loss_cc"] = losses.class_centralization_per_class(
                    emb.reshape(num_classes, ipc, -1), t.alpha, t.beta, t.form)
                total = total + t.weight * terms["loss_cc"]
            return total, terms

        images = state.synthetic.images
        (loss, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(images)
        updates, opt_state = optimizer.update(grads, state.opt_state, images)
        synthetic = state.synthetic.replace(images=optax.apply_updates(images, updates))
        new_state = state.replace(step=state.step + 1, rng=rng, synthetic=synthetic, opt_state=opt_state)
        metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads)}
        if iid is not None:
            metrics.update(terms)
            if iid.teacher is not None:
                metrics["teacher"] = teacher_index.astype(jnp.float32)
        return new_state, metrics

    return Algorithm(init, step)
