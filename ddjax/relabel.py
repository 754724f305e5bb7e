r"""Relabel: soft labels from the squeeze model on augmented views of a synthetic set (SRe2L / RDED / DD for DG),
with DD for DG's Domain Style Mixing (DSM, Sec. 3.4).

SRe2L's relabel (FKD) stores, for every training epoch, each image's crop, flip and CutMix box with the teacher's
logits on that exact view; the student is later trained on those views against those logits. ddjax keeps the same
idea as a fixed set: :func:`relabel` draws ``num_views`` views of every synthetic image (random resized crop,
flip, CutMix: :func:`ddjax.augment.relabel_views`) and labels each with :math:`\mathrm{softmax}(\phi(v)/T)`; the
validation network trains on the views and their soft labels (``ddjax.evaluate`` takes ``(N, K)`` targets).

DSM: before the crop, each view is transferred by ψ with a mixed style :math:`\psi(x; \lambda\theta_e +
(1-\lambda)\theta_{e'})`, :math:`e, e'` uniform over the seen domains, :math:`\lambda\sim\mathrm{Beta}(0.1, 0.1)`
(:func:`dsm_weights`). Without DSM but with ψ, each view uses one domain's θ_e or the untransferred image, uniformly
(the domain-transferable image and its transfers are all in the validation set, as Figure 1 shows).
"""
from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ddjax import models
from ddjax.augment.views import relabel_views
from ddjax.errors import ConfigError

DSM_BETA = 0.1  # λ ~ Beta(0.1, 0.1) (Sec. 3.4)


def dsm_weights(key: jax.Array, batch: int, num_domains: int, concentration: float = DSM_BETA) -> jax.Array:
    """Style weights ``(batch, num_domains)``: :math:`\\lambda\\,\\mathrm{onehot}(e) + (1-\\lambda)\\,
    \\mathrm{onehot}(e')` with :math:`e, e'` uniform and :math:`\\lambda\\sim\\mathrm{Beta}(c, c)` per image."""
    k_lam, k_a, k_b = jax.random.split(key, 3)
    lam = jax.random.beta(k_lam, concentration, concentration, (batch, 1))
    e = jax.random.randint(k_a, (batch,), 0, num_domains)
    e2 = jax.random.randint(k_b, (batch,), 0, num_domains)
    return lam * models.domain_weights(e, num_domains) + (1 - lam) * models.domain_weights(e2, num_domains)


def transfer_weights(key: jax.Array, batch: int, num_domains: int) -> jax.Array:
    """Without DSM: one domain's θ_e per image (uniform over the ``num_domains`` domains), or no transfer (an
    all-zero row, which the caller replaces by the untransferred image)."""
    choice = jax.random.randint(key, (batch,), 0, num_domains + 1)  # num_domains: keep the image as it is
    return models.domain_weights(choice, num_domains + 1)[:, :num_domains]


@functools.partial(jax.jit, static_argnames=("teacher_model", "psi_model", "num_views", "dsm", "crop_scale", "flip"))
def _relabel(key, teacher_vars, psi_params, images, temperature, cutmix_alpha, *, teacher_model, psi_model,
             num_views, dsm, crop_scale, flip):
    n = images.shape[0]

    def one_view(k):
        k_style, k_aug = jax.random.split(k)
        x = images
        if psi_model is not None:
            num_domains = psi_model.num_domains
            if dsm:
                x = psi_model.apply(psi_params, x, dsm_weights(k_style, n, num_domains))
            else:
                w = transfer_weights(k_style, n, num_domains)
                keep = jnp.sum(w, axis=1) == 0
                safe = jnp.where(keep[:, None], models.domain_weights(jnp.zeros(n, jnp.int32), num_domains), w)
                x = jnp.where(keep[:, None, None, None], x, psi_model.apply(psi_params, x, safe))
        v = relabel_views(k_aug, x, crop_scale=crop_scale, cutmix_alpha=cutmix_alpha, flip=flip)
        logits = teacher_model.apply(teacher_vars, v, train=False)
        return v, jax.nn.softmax(logits / temperature, axis=-1)

    views, soft = jax.lax.map(one_view, jax.random.split(key, num_views))
    return views.reshape((-1,) + images.shape[1:]), soft.reshape(-1, soft.shape[-1])


def relabel(key: jax.Array, teacher_model: nn.Module, teacher_vars: dict, images: Any, *, num_views: int,
            temperature: float = 4.0, crop_scale: tuple[float, float] = (0.08, 1.0), cutmix_alpha: float = 1.0,
            psi_model: nn.Module | None = None, psi_params: Any = None, dsm: bool = False, flip: bool = True
            ) -> tuple[jax.Array, jax.Array]:
    """``num_views`` soft-labelled views of every image: ``(views (V*N, H, W, C), soft labels (V*N, K))``, view-major.

    ``psi_model``/``psi_params``: transfer the images by ψ first (one domain per view, or DSM when ``dsm``).
    """
    if num_views < 1:
        raise ConfigError(f"relabel num_views must be >= 1, got {num_views}")
    if not temperature > 0:
        raise ConfigError(f"relabel temperature must be > 0, got {temperature}")
    if dsm and psi_model is None:
        raise ConfigError("DSM mixes the styles of the domain-transfer network ψ; it needs a DTL run (dtl.transfer)")
    return _relabel(key, teacher_vars, psi_params, jnp.asarray(images, jnp.float32), jnp.float32(temperature),
                    jnp.float32(cutmix_alpha), teacher_model=teacher_model, psi_model=psi_model,
                    num_views=int(num_views), dsm=bool(dsm), crop_scale=tuple(float(s) for s in crop_scale),
                    flip=bool(flip))
