"""Real-batch samplers: which real images of every class an algorithm matches against, as ``(init, sample)`` pairs.

A sampler is used by the gradient-matching engine once per matching round and by the distribution-matching family
once per step::

    carry = sampler.init(num_classes, image_shape)              # kept between calls (scan carry / state.extras)
    batch, carry = sampler.sample(key, carry, index, embed, real)  # batch: (K, sampler.batch, H, W, C)

``index`` counts the calls (round or step), ``embed`` maps class-major images ``(K, N, H, W, C)`` to the current
network's embeddings ``(K, N, D)`` (only representative sampling looks at it) and ``real`` is the
:class:`~ddjax.algorithms.base.RealPool`.

- :func:`random_real`: ``batch`` random images per class (DC, DM, ...).
- :func:`representatives`: DREAM+'s representative matching (Liu et al. 2023, Sec. 3.3): every ``interval`` calls,
  per class, k-means on the embeddings into ``batch // subsample`` clusters and the ``subsample`` real images
  nearest each centre; the batch is kept until the next clustering.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from ddjax import cluster
from ddjax.algorithms.base import RealPool, sample_per_class
from ddjax.errors import ConfigError

EmbedFn = Callable[[jax.Array], jax.Array]  # (K, N, H, W, C) -> (K, N, D)

__all__ = ["RealSampler", "embed_in_chunks", "random_real", "representatives", "select_representatives"]


class RealSampler(NamedTuple):
    """``init(num_classes, image_shape) -> carry``; ``sample(key, carry, index, embed, real) -> (batch, carry)``.
    ``batch``: real images per class each call returns."""
    init: Callable[[int, tuple[int, int, int]], Any]
    sample: Callable[..., tuple[jax.Array, Any]]
    batch: int


def random_real(batch: int) -> RealSampler:
    """``batch`` random real images per class every call (:func:`~ddjax.algorithms.base.sample_per_class`)."""
    if batch < 1:
        raise ConfigError(f"batch_real must be >= 1, got {batch}")

    def sample(key, carry, index, embed, real):
        del index, embed
        return sample_per_class(key, real, batch), carry

    return RealSampler(init=lambda num_classes, image_shape: (), sample=sample, batch=batch)


def representatives(batch: int, *, subsample: int = 1, interval: int = 10, pool: int = 0,
                    kmeans_iters: int = 100) -> RealSampler:
    """DREAM+'s representative matching: re-select every ``interval`` calls (``index % interval == 0``) the
    ``subsample`` real images nearest each of ``batch // subsample`` k-means centres per class; ``pool``: cluster
    that many random images per class (0: the whole class). The carry is the current selection."""
    for name, value in (("batch_real", batch), ("subsample", subsample), ("interval", interval),
                        ("kmeans_iters", kmeans_iters)):
        if value < 1:
            raise ConfigError(f"{name} must be >= 1, got {value}")
    if pool < 0:
        raise ConfigError(f"cluster_pool must be >= 0, got {pool}")
    if batch % subsample:
        raise ConfigError(f"batch_real={batch} must be a multiple of subsample={subsample} (batch_real // subsample "
                          "clusters, subsample nearest samples each)")

    def init(num_classes, image_shape):
        return jnp.zeros((num_classes, batch) + tuple(image_shape), jnp.float32)

    def sample(key, carry, index, embed, real):
        chosen = jax.lax.cond(index % interval == 0,
                              lambda: select_representatives(key, embed, real, batch // subsample, subsample,
                                                             pool=pool, kmeans_iters=kmeans_iters),
                              lambda: carry)
        return chosen, chosen

    return RealSampler(init=init, sample=sample, batch=batch)


def _clustering_pool(key: jax.Array, real: RealPool, pool: int) -> tuple[jax.Array, jax.Array]:
    """The images k-means sees per class ``(K, N, ...)`` and their validity mask ``(K, N)``."""
    if pool and pool < real.images.shape[1]:
        images = sample_per_class(key, real, pool)
        return images, jnp.ones(images.shape[:2], bool)
    return real.images, jnp.arange(real.images.shape[1])[None, :] < real.counts[:, None]


def select_representatives(key: jax.Array, embed: EmbedFn, real: RealPool, k: int, per_center: int, *,
                           pool: int = 0, kmeans_iters: int = 100) -> jax.Array:
    """Per class, k-means (``k`` clusters, :func:`ddjax.cluster.kmeans`) on ``embed`` of the class's images and the
    ``per_center`` real images nearest each centre: ``(K, k · per_center, H, W, C)``. Also DREAM+'s cluster
    initialisation of the synthetic set."""
    k_pool, k_km = jax.random.split(key)
    images, mask = _clustering_pool(k_pool, real, pool)
    feats = jax.lax.stop_gradient(embed(images))

    def one(kk, x, m):
        res = cluster.kmeans(kk, x, k, m, max_iter=kmeans_iters)
        return cluster.nearest_indices(x, res.centers, per_center, m).reshape(-1)

    idx = jax.vmap(one)(jax.random.split(k_km, images.shape[0]), feats, mask)
    return jnp.take_along_axis(images, idx[:, :, None, None, None], axis=1)


def embed_in_chunks(apply: Callable[[jax.Array], jax.Array], images: jax.Array, chunk: int = 256,
                    unroll: bool = False) -> jax.Array:
    """``apply`` (a flat batch -> ``(n, D)`` embeddings) on class-major images ``(K, N, ...)`` in chunks of
    ``chunk`` images, one ``lax.scan`` (bounded memory for whole-class pools) -> ``(K, N, D)``."""
    num_classes, n = images.shape[:2]
    chunk = min(n, chunk)
    pad = (-n) % chunk
    padded = jnp.pad(images, [(0, 0), (0, pad)] + [(0, 0)] * (images.ndim - 2))
    chunks = padded.reshape((num_classes * (n + pad) // chunk, chunk) + images.shape[2:])
    out = jax.lax.scan(lambda _, x: (None, apply(x)), None, chunks, unroll=True if unroll else 1)[1]
    return out.reshape(num_classes, n + pad, -1)[:, :n]
