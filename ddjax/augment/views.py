"""Per-sample torchvision-style views for decoupled distillation (squeeze training and relabelling), NHWC, pure.

- :func:`random_resized_crop` — torchvision ``RandomResizedCrop(scale, ratio)``: a box of area fraction
  ``U(scale)`` and log-uniform aspect ratio, resized back to ``(H, W)`` (bilinear, ``jax.image``).
- :func:`random_flip` — ``RandomHorizontalFlip(0.5)``.
- :func:`color_jitter` — ``ColorJitter(brightness, contrast, saturation)`` in pixel space (hue is not
  implemented: a ddjax simplification, docs/domain_generalization.md), applied in a random order per call.
- :func:`random_grayscale` — ``RandomGrayscale(p)`` (ITU-R 601 luma, as torchvision).
- CutMix in :func:`relabel_views` is :func:`ddjax.augment.mix.cutmix` applied to every batch (IDC's box); the
  teacher relabels the mixed image (SRe2L/FKD), so only the images mix.

Colour operations need the normalisation (``mean``, ``std`` per channel) to work in ``[0, 1]`` pixels; DomainBed's
squeeze augmentation is ``RandomResizedCrop(scale=(0.7, 1))``, flip, ``ColorJitter(0.3, 0.3, 0.3, 0.3)``,
``RandomGrayscale(0.1)`` (``domainbed/datasets.py``).
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from ddjax.augment.mix import cutmix

LUMA = (0.299, 0.587, 0.114)


def _crop_resize(image: jax.Array, top: jax.Array, left: jax.Array, h: jax.Array, w: jax.Array) -> jax.Array:
    out_h, out_w = image.shape[0], image.shape[1]
    scale = jnp.stack([out_h / h, out_w / w])
    translation = -jnp.stack([top, left]) * scale
    return jax.image.scale_and_translate(image, image.shape, (0, 1), scale, translation, method="linear",
                                         antialias=False)


def random_resized_crop(key: jax.Array, images: jax.Array, scale: tuple[float, float] = (0.08, 1.0),
                        ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> jax.Array:
    """One random box per image (area fraction ``U(scale)``, aspect ``exp(U(log ratio))``, clipped to the image),
    resized to the image size."""
    n, height, width = images.shape[:3]
    k_area, k_ratio, k_top, k_left = jax.random.split(key, 4)
    area = jax.random.uniform(k_area, (n,), minval=scale[0], maxval=scale[1]) * height * width
    aspect = jnp.exp(jax.random.uniform(k_ratio, (n,), minval=math.log(ratio[0]), maxval=math.log(ratio[1])))
    w = jnp.clip(jnp.sqrt(area * aspect), 1.0, width)
    h = jnp.clip(jnp.sqrt(area / aspect), 1.0, height)
    top = jax.random.uniform(k_top, (n,)) * (height - h)
    left = jax.random.uniform(k_left, (n,)) * (width - w)
    return jax.vmap(_crop_resize)(images, top, left, h, w)


def random_flip(key: jax.Array, images: jax.Array, prob: float = 0.5) -> jax.Array:
    """Mirror each image left-right with probability ``prob``."""
    flip = jax.random.uniform(key, (images.shape[0], 1, 1, 1)) < prob
    return jnp.where(flip, images[:, :, ::-1, :], images)


def _gray(pixels: jax.Array) -> jax.Array:
    if pixels.shape[-1] != 3:
        return jnp.mean(pixels, axis=-1, keepdims=True) * jnp.ones_like(pixels)
    return jnp.sum(pixels * jnp.asarray(LUMA), axis=-1, keepdims=True) * jnp.ones_like(pixels)


def color_jitter(key: jax.Array, images: jax.Array, mean: jax.Array, std: jax.Array, *, brightness: float = 0.3,
                 contrast: float = 0.3, saturation: float = 0.3) -> jax.Array:
    """Per image: brightness ``x*b``, contrast ``(x - mean_gray)*c + mean_gray``, saturation ``(x - gray)*s + gray``,
    factors ``U(1 - v, 1 + v)``, in pixel space (clipped to [0, 1]) and in a random order per call."""
    n = images.shape[0]
    pixels = images * std + mean
    k_b, k_c, k_s, k_order = jax.random.split(key, 4)

    def factor(k, v):
        return jax.random.uniform(k, (n, 1, 1, 1), minval=1 - v, maxval=1 + v)

    b, c, s = factor(k_b, brightness), factor(k_c, contrast), factor(k_s, saturation)
    ops = (lambda x: x * b,
           lambda x: (x - jnp.mean(_gray(x), axis=(1, 2, 3), keepdims=True)) * c
           + jnp.mean(_gray(x), axis=(1, 2, 3), keepdims=True),
           lambda x: (x - _gray(x)) * s + _gray(x))
    order = jax.random.permutation(k_order, 3)
    for i in range(3):
        pixels = jnp.clip(jax.lax.switch(order[i], ops, pixels), 0.0, 1.0)
    return (pixels - mean) / std


def random_grayscale(key: jax.Array, images: jax.Array, mean: jax.Array, std: jax.Array,
                     prob: float = 0.1) -> jax.Array:
    """Replace each image by its luma (in every channel) with probability ``prob``."""
    pixels = images * std + mean
    gray = (_gray(pixels) - mean) / std
    pick = jax.random.uniform(key, (images.shape[0], 1, 1, 1)) < prob
    return jnp.where(pick, gray, images)


def squeeze_views(key: jax.Array, images: jax.Array, mean: jax.Array, std: jax.Array, *,
                  crop_scale: tuple[float, float] = (0.7, 1.0), flip: bool = True) -> jax.Array:
    """DomainBed's training augmentation: random resized crop, flip (unless ``flip=False``: digits are not
    mirror-symmetric), colour jitter 0.3, grayscale 0.1."""
    k_crop, k_flip, k_color, k_gray = jax.random.split(key, 4)
    x = random_resized_crop(k_crop, images, scale=crop_scale)
    x = random_flip(k_flip, x) if flip else x
    x = color_jitter(k_color, x, mean, std)
    return random_grayscale(k_gray, x, mean, std)


def relabel_views(key: jax.Array, images: jax.Array, *, crop_scale: tuple[float, float] = (0.08, 1.0),
                  cutmix_alpha: float = 1.0, flip: bool = True) -> jax.Array:
    """SRe2L/FKD's relabel augmentation: random resized crop, flip (unless ``flip=False``), CutMix."""
    k_crop, k_flip, k_mix = jax.random.split(key, 3)
    x = random_resized_crop(k_crop, images, scale=crop_scale)
    x = random_flip(k_flip, x) if flip else x
    return cutmix(k_mix, x, 1.0, cutmix_alpha)[0]  # always mixed, λ ~ Beta(α, α)
