r"""Distribution-matching losses: the DM mean-embedding distance and the Gaussian-kernel MMD of M3D.

Features are on the last axis, samples on the second to last; any leading axes are batch axes (e.g. classes).

- DM (Zhao & Bilen, "Dataset Condensation with Distribution Matching", WACV'23): the squared distance between
  mean embeddings, i.e. the MMD with a linear kernel.
- M3D (Zhang et al., "M3D: Dataset Condensation by Minimizing Maximum Mean Discrepancy", AAAI'24; used by DIDD as
  its plasticity/stability distance): the squared MMD with a Gaussian kernel, which matches every moment of the
  feature distributions instead of the first only.
"""
from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ddjax.errors import ConfigError

#: Default bandwidth multipliers of :func:`gaussian_mmd` when ``sigmas`` is None: σ_i = s_i · σ_median.
DEFAULT_BANDWIDTH_SCALES = (0.5, 1.0, 2.0)
#: Floor on the median squared distance (identical sets would otherwise give σ = 0 and 0/0 in the kernel).
_MIN_SQUARED_BANDWIDTH = 1e-12


def _check_sets(name: str, real: jax.Array, syn: jax.Array) -> None:
    if jnp.ndim(real) < 2 or jnp.ndim(syn) < 2:
        raise ValueError(f"{name}: inputs must be (..., n, d) feature sets, got shapes {jnp.shape(real)} and "
                         f"{jnp.shape(syn)}")
    if real.shape[-1] != syn.shape[-1] or real.shape[:-2] != syn.shape[:-2]:
        raise ValueError(f"{name}: real {real.shape} and syn {syn.shape} must agree on every axis but the sample "
                         "axis (-2)")
    if real.shape[-2] < 1 or syn.shape[-2] < 1:
        raise ValueError(f"{name}: each set needs at least one sample, got shapes {real.shape} and {syn.shape} "
                         "(an empty class?)")


def mean_embedding_distance(real: jax.Array, syn: jax.Array) -> jax.Array:
    r"""Squared distance between mean embeddings, the DM loss for one class.

    .. math:: \mathcal{L} = \Big\| \tfrac{1}{|R|}\sum_{r\in R} f(r) - \tfrac{1}{|S|}\sum_{s\in S} f(s) \Big\|_2^2

    Args:
      real: embeddings ``(..., n_real, d)``; the sample axis is the second to last.
      syn: embeddings ``(..., n_syn, d)``; leading axes must match ``real``'s.
    Returns:
      The squared distance, shape ``real.shape[:-2]`` (a scalar for 2-D inputs).
    """
    _check_sets("mean_embedding_distance", real, syn)
    diff = jnp.mean(real, axis=-2) - jnp.mean(syn, axis=-2)
    return jnp.sum(jnp.square(diff), axis=-1)


def mean_embedding_distance_per_class(real: jax.Array, syn: jax.Array) -> jax.Array:
    r"""DM loss summed over classes: :math:`\sum_c \|\bar f(R_c) - \bar f(S_c)\|^2` (reference sums, not averages).

    Args:
      real: ``(num_classes, n_real, d)``; syn: ``(num_classes, n_syn, d)``.
    """
    return jnp.sum(mean_embedding_distance(real, syn))


def squared_distances(x: jax.Array, y: jax.Array) -> jax.Array:
    r"""All pairwise squared Euclidean distances :math:`D_{ij} = \|x_i - y_j\|^2`, ``(..., n, m)``.

    Computed as :math:`\|x_i\|^2 + \|y_j\|^2 - 2\langle x_i, y_j\rangle` (one matmul; memory ``n·m``, not
    ``n·m·d``) and clipped at 0 against rounding. No square root is taken, so the value and its gradient stay
    finite when points coincide.
    """
    xx = jnp.sum(jnp.square(x), axis=-1)[..., :, None]
    yy = jnp.sum(jnp.square(y), axis=-1)[..., None, :]
    xy = jnp.einsum("...nd,...md->...nm", x, y, precision=jax.lax.Precision.HIGHEST)
    return jnp.maximum(xx + yy - 2.0 * xy, 0.0)


def median_bandwidth(x: jax.Array, y: jax.Array) -> jax.Array:
    r"""The median heuristic (Gretton et al., 2012): :math:`\sigma = \sqrt{\mathrm{median}_{i \ne j} \|z_i - z_j\|^2}`
    over the pooled set :math:`z = x \cup y` (distinct pairs only), per leading batch index; ``(...,)``.

    The value is wrapped in ``stop_gradient``: the bandwidth is a data-dependent constant of the loss, not a path
    for gradients. A median of 0 (all points equal) is floored at 1e-12 so the kernel stays finite.
    """
    z = jnp.concatenate([x, y], axis=-2)
    n = z.shape[-2]
    d = squared_distances(z, z)
    rows, cols = np.triu_indices(n, k=1)
    if len(rows) == 0:  # a single pooled point: no pair, any bandwidth gives a zero MMD
        return jnp.ones(z.shape[:-2], z.dtype)
    med = jnp.median(d[..., rows, cols], axis=-1)
    return jax.lax.stop_gradient(jnp.sqrt(jnp.maximum(med, _MIN_SQUARED_BANDWIDTH)))


def _check_sigmas(sigmas: Sequence[float] | jax.Array) -> jax.Array:
    """Validate concrete bandwidths eagerly (traced ones are used as given)."""
    if isinstance(sigmas, jax.core.Tracer):
        return sigmas
    values = np.asarray(sigmas, dtype=np.float64)
    if values.size == 0:
        raise ConfigError("gaussian_mmd: sigmas is empty; pass at least one bandwidth or None for the median "
                          "heuristic")
    if not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise ConfigError(f"gaussian_mmd: every bandwidth must be finite and > 0, got {values.ravel().tolist()}; pass "
                          "positive sigmas or None for the median heuristic")
    return jnp.asarray(values, jnp.float32)


def gaussian_mmd(x: jax.Array, y: jax.Array, sigmas: Sequence[float] | jax.Array | None = None,
                 unbiased: bool = False) -> jax.Array:
    r"""Squared maximum mean discrepancy with a sum of Gaussian kernels (M3D's distance).

    .. math::
        k(a, b) = \sum_{\sigma} \exp\!\Big(-\frac{\|a - b\|^2}{2\sigma^2}\Big),\qquad
        \mathrm{MMD}^2 = \overline{k(x, x')} + \overline{k(y, y')} - 2\,\overline{k(x, y)}

    Biased (default, the V-statistic): every mean runs over all pairs, diagonal included, so the value is
    :math:`\|\mu_x - \mu_y\|^2_{\mathcal H} \ge 0` and defined for one sample per set. ``unbiased=True`` (the
    U-statistic) drops the ``i = j`` terms of the within-set means (divides by ``n(n-1)``); it can be slightly
    negative and needs at least two samples in each set.

    Bandwidths: ``sigmas`` a sequence of positive floats, or an array ``(S,)`` or ``(..., S)`` (one set per
    leading batch index; traced is fine, but only concrete values are checked to be positive); ``None`` uses
    :data:`DEFAULT_BANDWIDTH_SCALES` ``(0.5, 1, 2)`` times the median heuristic :func:`median_bandwidth` of the
    pooled set (per leading batch index, gradient stopped). Why: the squared distances of network embeddings range
    over orders of magnitude with the network, its width, the image size and the data, so any fixed σ makes the
    kernel either flat or zero — and its gradient vanish — somewhere; the median scales with the data and the
    three scales keep a useful gradient for near and far pairs. The M3D code was not public when this was
    written, so this choice is ours, not M3D's (see docs/losses.md).

    Finite and differentiable when ``x`` and ``y`` coincide (no square root of a distance is taken).

    Args:
      x: ``(..., n, d)`` features; y: ``(..., m, d)``, leading axes equal to ``x``'s.
    Returns:
      ``MMD²`` of shape ``x.shape[:-2]``.
    """
    _check_sets("gaussian_mmd", x, y)
    if unbiased and (x.shape[-2] < 2 or y.shape[-2] < 2):
        raise ConfigError(f"gaussian_mmd(unbiased=True) needs >= 2 samples per set, got {x.shape[-2]} and "
                          f"{y.shape[-2]}; use unbiased=False (e.g. at IPC 1)")
    sig = None if sigmas is None else _check_sigmas(sigmas)
    return _gaussian_mmd(x, y, sig, bool(unbiased))


@functools.partial(jax.jit, static_argnums=(3,))
def _gaussian_mmd(x: jax.Array, y: jax.Array, sigmas: jax.Array | None, unbiased: bool) -> jax.Array:
    # jitted so that eager calls compile one program (inlined under an outer jit/vmap/grad)
    if sigmas is None:
        sig = median_bandwidth(x, y)[..., None] * jnp.asarray(DEFAULT_BANDWIDTH_SCALES, x.dtype)  # (..., S)
    else:
        sig = jnp.asarray(sigmas, x.dtype)
        if sig.ndim == 0:
            sig = sig[None]
        sig = jnp.broadcast_to(sig, x.shape[:-2] + sig.shape[-1:])  # (S,) shared, or (..., S) per batch index
    gamma = 1.0 / (2.0 * jnp.square(sig))  # (..., S)

    def kernel(a: jax.Array, b: jax.Array) -> jax.Array:
        d = squared_distances(a, b)[..., None]  # (..., n, m, 1)
        return jnp.sum(jnp.exp(-d * gamma[..., None, None, :]), axis=-1)

    kxx, kyy, kxy = kernel(x, x), kernel(y, y), kernel(x, y)
    n, m = x.shape[-2], y.shape[-2]
    if unbiased:
        exx = jnp.sum(kxx * (1.0 - jnp.eye(n, dtype=kxx.dtype)), axis=(-2, -1)) / (n * (n - 1))
        eyy = jnp.sum(kyy * (1.0 - jnp.eye(m, dtype=kyy.dtype)), axis=(-2, -1)) / (m * (m - 1))
    else:
        exx = jnp.mean(kxx, axis=(-2, -1))
        eyy = jnp.mean(kyy, axis=(-2, -1))
    return exx + eyy - 2.0 * jnp.mean(kxy, axis=(-2, -1))


def gaussian_mmd_per_class(real: jax.Array, syn: jax.Array, sigmas: Sequence[float] | jax.Array | None = None,
                           unbiased: bool = False) -> jax.Array:
    r"""M3D loss summed over classes: :math:`\sum_c \mathrm{MMD}^2(R_c, S_c)`; the median bandwidth (when
    ``sigmas`` is None) is taken per class.

    Args:
      real: ``(num_classes, n_real, d)``; syn: ``(num_classes, n_syn, d)``.
    """
    return jnp.sum(gaussian_mmd(real, syn, sigmas, unbiased))
