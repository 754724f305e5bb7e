"""k-means in JAX: greedy k-means++ seeding and Lloyd iterations under ``jit``, vmappable over classes.

Seeding (Arthur & Vassilvitskii 2007, greedy variant as scikit-learn's ``_kmeans_plusplus``): the first centre is a
uniform draw among the valid points; each next one is the best (lowest resulting potential
:math:`\\sum_i \\min_j \\|x_i - c_j\\|^2`) of ``2 + ⌊ln k⌋`` candidates drawn with probability ∝ the current
squared distance to the nearest centre.

Lloyd: assign every point to its nearest centre, move each centre to the mean of its points (a centre that loses
all its points stays where it is), until the squared centre shift :math:`\\sum_j\\|c_j' - c_j\\|^2` is at most
``tol`` × the mean per-feature variance of the data (scikit-learn's tolerance), the assignment stops changing,
or ``max_iter`` iterations ran (``lax.while_loop``: nothing is differentiated through it). Labels and inertia are
then recomputed for the final centres.

``mask`` marks valid points (padded class pools: ``RealPool`` rows past ``counts[c]``); masked points never
become centres, never pull a centre, never count in the inertia and are never returned as nearest samples.
Everything is a pure function of ``key``: ``jax.vmap(kmeans, in_axes=(0, 0, None, 0))`` clusters every class at
once.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from ddjax.errors import ConfigError

__all__ = ["KMeansResult", "check_num_clusters", "kmeans", "kmeans_plusplus", "nearest_indices",
           "squared_distances_to"]


class KMeansResult(NamedTuple):
    """``centers`` ``(k, D)``; ``labels`` ``(N,)`` int32 (−1 for masked points); ``inertia``: sum of squared
    distances of the valid points to their centre; ``n_iter``: Lloyd iterations run; ``converged``: the tolerance
    or a fixed assignment ended the loop (not the budget)."""
    centers: jax.Array
    labels: jax.Array
    inertia: jax.Array
    n_iter: jax.Array
    converged: jax.Array


def check_num_clusters(k: int, num_points: int, what: str = "points") -> None:
    """Eager check outside ``jit``: ``1 <= k <= num_points``; one-line ConfigError otherwise."""
    if k < 1:
        raise ConfigError(f"k-means needs at least 1 cluster, got k={k}")
    if k > num_points:
        raise ConfigError(f"k-means asks for {k} clusters but only {num_points} {what} are available; "
                          "lower the number of clusters (or the matching batch) or use more data")


def squared_distances_to(x: jax.Array, centers: jax.Array) -> jax.Array:
    """``(N, k)`` squared Euclidean distances, :math:`\\|x\\|^2 - 2x\\cdot c + \\|c\\|^2` clamped at 0."""
    d2 = (jnp.sum(jnp.square(x), -1)[:, None] - 2.0 * x @ centers.T + jnp.sum(jnp.square(centers), -1)[None, :])
    return jnp.maximum(d2, 0.0)


def _weights(x: jax.Array, mask: jax.Array | None) -> jax.Array:
    if mask is None:
        return jnp.ones(x.shape[0], x.dtype)
    return mask.astype(x.dtype)


def kmeans_plusplus(key: jax.Array, x: jax.Array, k: int, *, mask: jax.Array | None = None,
                    n_local_trials: int | None = None) -> tuple[jax.Array, jax.Array]:
    """Greedy k-means++ seeding (module doc). Returns ``(centers (k, D), indices (k,))`` of chosen points."""
    n = x.shape[0]
    w = _weights(x, mask)
    trials = 2 + int(math.log(k)) if n_local_trials is None else int(n_local_trials)
    sq_norms = jnp.sum(jnp.square(x), -1)

    def dist_to(points: jax.Array) -> jax.Array:  # (t, D) -> (t, N)
        d2 = sq_norms[None, :] - 2.0 * points @ x.T + jnp.sum(jnp.square(points), -1)[:, None]
        return jnp.maximum(d2, 0.0)

    k0, key = jax.random.split(key)
    first = jax.random.choice(k0, n, p=w / jnp.sum(w))
    closest = dist_to(x[first][None])[0]
    centers = jnp.zeros((k, x.shape[1]), x.dtype).at[0].set(x[first])
    indices = jnp.zeros((k,), jnp.int32).at[0].set(first)

    def body(c, carry):
        centers, indices, closest = carry
        potential = jnp.sum(w * closest)
        cumulative = jnp.cumsum(w * closest)
        draws = jax.random.uniform(jax.random.fold_in(key, c), (trials,)) * potential
        candidates = jnp.clip(jnp.searchsorted(cumulative, draws), 0, n - 1)
        # a zero-potential corner case (all points on centres) could pick a masked row: fall back to a valid one
        candidates = jnp.where(w[candidates] > 0, candidates, jnp.argmax(w))
        new_closest = jnp.minimum(closest[None, :], dist_to(x[candidates]))
        best = jnp.argmin(new_closest @ w)
        chosen = candidates[best]
        return centers.at[c].set(x[chosen]), indices.at[c].set(chosen), new_closest[best]

    centers, indices, _ = jax.lax.fori_loop(1, k, body, (centers, indices, closest))
    return centers, indices


def kmeans(key: jax.Array, x: jax.Array, k: int, mask: jax.Array | None = None, *, max_iter: int = 100,
           tol: float = 1e-4) -> KMeansResult:
    """Cluster the rows of ``x`` ``(N, D)`` into ``k`` groups (module doc). ``k`` and ``max_iter`` are static.

    Validate ``k`` against the number of valid points with :func:`check_num_clusters` before tracing.
    """
    if x.ndim != 2:
        raise ConfigError(f"kmeans expects points as an (N, D) array, got shape {x.shape}")
    check_num_clusters(k, x.shape[0])
    x = x.astype(jnp.float32)
    w = _weights(x, mask)
    total = jnp.maximum(jnp.sum(w), 1.0)
    mean = (w @ x) / total
    variance = (w @ jnp.square(x - mean)) / total
    threshold = tol * jnp.mean(variance)
    centers, _ = kmeans_plusplus(key, x, k, mask=mask)

    def assign(centers: jax.Array) -> tuple[jax.Array, jax.Array]:
        d2 = squared_distances_to(x, centers)
        return jnp.argmin(d2, -1).astype(jnp.int32), d2

    def update(centers: jax.Array, labels: jax.Array) -> jax.Array:
        onehot = jax.nn.one_hot(labels, k, dtype=x.dtype) * w[:, None]
        counts = jnp.sum(onehot, 0)
        sums = onehot.T @ x
        return jnp.where(counts[:, None] > 0, sums / jnp.maximum(counts, 1.0)[:, None], centers)

    def cond(carry):
        _, _, i, done = carry
        return (i < max_iter) & ~done

    def body(carry):
        centers, labels, i, _ = carry
        new_labels, _ = assign(centers)
        new_centers = update(centers, new_labels)
        shift = jnp.sum(jnp.square(new_centers - centers))
        same = jnp.all((new_labels == labels) | (w == 0))
        return new_centers, new_labels, i + 1, (shift <= threshold) | same

    init = (centers, jnp.full((x.shape[0],), -1, jnp.int32), jnp.zeros((), jnp.int32), jnp.zeros((), bool))
    centers, _, n_iter, converged = jax.lax.while_loop(cond, body, init)
    labels, d2 = assign(centers)
    inertia = jnp.sum(w * jnp.take_along_axis(d2, labels[:, None], -1)[:, 0])
    labels = jnp.where(w > 0, labels, -1)
    return KMeansResult(centers, labels, inertia, n_iter, converged)


def nearest_indices(x: jax.Array, centers: jax.Array, per_center: int = 1,
                    mask: jax.Array | None = None) -> jax.Array:
    """``(k, per_center)`` indices of the valid rows of ``x`` nearest to each centre (closest first).

    DREAM's representative selection: ``per_center=1`` gives the sample nearest to every centroid; DREAM+'s
    ``query_match(n, subsample)`` uses ``n // subsample`` centres and ``per_center = subsample``.
    """
    d2 = squared_distances_to(x.astype(jnp.float32), centers.astype(jnp.float32))
    if mask is not None:
        d2 = jnp.where(mask[:, None], d2, jnp.inf)
    _, idx = jax.lax.top_k(-d2.T, per_center)
    return idx.astype(jnp.int32)
