r"""IID's constraints (Deng et al., "Exploiting Inter-sample and Inter-feature Relations in Dataset Distillation",
CVPR'24): local-feature covariance matching (inter-feature, eqs. 5-7) and class centralization (inter-sample,
eqs. 3-4).

Reference code: ``VincenDen/IID:DM+ours/main_DM_IID.py``. Any leading axes are batch axes (e.g. classes); the
``*_per_class`` forms sum over a leading class axis, as the paper's :math:`\sum_c`.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from ddjax.errors import ConfigError, check_choice

#: ``"exp"``: the paper's eq. (3); ``"squared"``: the authors' released code (exp dropped, β = 0).
CENTRALIZATION_FORMS = ("exp", "squared")


def feature_covariance(maps: jax.Array) -> jax.Array:
    r"""Local-feature covariance of a batch of feature maps (IID eqs. 6/7).

    Each sample's map ``(H, W, C)`` is a set of ``H·W`` local ``C``-dimensional descriptors,
    :math:`X_i \in \mathbb R^{HW \times C}`; with :math:`\bar X = \frac1B \sum_i X_i` (the batch mean, per position)

    .. math:: \Sigma = \frac1B \sum_{i=1}^{B} (X_i - \bar X)^\top (X_i - \bar X) \in \mathbb R^{C \times C}

    (the reference: ``F - F.mean(0)``, then ``mean_b(F_b F_b^T)`` with ``F`` shaped ``(B, C, HW)``). A batch of one
    gives the zero matrix, which is why the paper reports no DM+IID number at IPC 1.

    Args:
      maps: ``(..., B, H, W, C)`` (NHWC maps with optional leading batch axes, e.g. classes).
    Returns:
      ``(..., C, C)``, symmetric positive semi-definite.
    """
    if jnp.ndim(maps) < 4:
        raise ValueError(f"feature_covariance: maps must be (..., B, H, W, C), got shape {jnp.shape(maps)}")
    b = maps.shape[-4]
    if b < 1:
        raise ValueError(f"feature_covariance: the batch is empty (shape {maps.shape}); every class needs samples")
    x = maps.reshape(maps.shape[:-3] + (-1, maps.shape[-1]))  # (..., B, HW, C)
    centred = x - jnp.mean(x, axis=-3, keepdims=True)
    return jnp.einsum("...bpc,...bpd->...cd", centred, centred, precision=jax.lax.Precision.HIGHEST) / b


def covariance_matching(real_maps: jax.Array, syn_maps: jax.Array) -> jax.Array:
    r"""IID's covariance matching for one class (eq. 5): :math:`\|\Sigma_S - \Sigma_T\|_F^2` with
    :math:`\Sigma` from :func:`feature_covariance` of each set.

    Args:
      real_maps: ``(..., B, H, W, C)``; syn_maps: ``(..., K, H', W', C)`` — any batch sizes, the same channel count
        and leading axes (the spatial sizes may differ: only the ``C×C`` matrices are compared).
    Returns:
      Shape ``real_maps.shape[:-4]`` (a scalar for one class).
    """
    if jnp.ndim(real_maps) < 4 or jnp.ndim(syn_maps) < 4 or real_maps.shape[-1] != syn_maps.shape[-1] \
            or real_maps.shape[:-4] != syn_maps.shape[:-4]:
        raise ValueError(f"covariance_matching: real {jnp.shape(real_maps)} and syn {jnp.shape(syn_maps)} must be "
                         "(..., B, H, W, C) maps with the same leading axes and channel count C")
    diff = feature_covariance(syn_maps) - feature_covariance(real_maps)
    return jnp.sum(jnp.square(diff), axis=(-2, -1))


def covariance_matching_per_class(real_maps: jax.Array, syn_maps: jax.Array) -> jax.Array:
    r""":math:`\mathcal L_{CM} = \sum_c \|\Sigma_S^c - \Sigma_T^c\|_F^2` for maps ``(num_classes, n, H, W, C)``."""
    return jnp.sum(covariance_matching(real_maps, syn_maps))


def class_centralization(embeddings: jax.Array, alpha: float = 1.0, beta: float = 0.0,
                         form: str = "exp") -> jax.Array:
    r"""IID's class centralization for one class (eq. 3), pulling a class's embeddings to their mean.

    With :math:`\bar e = \frac1K \sum_j e_j` (eq. 4) and :math:`d_j = \|e_j - \bar e\|^2`:

    - ``form="exp"`` (the paper): :math:`\sum_j \max(0, \exp(\alpha d_j) - \beta)`; β is the threshold below which
      a sample is left alone (``exp(α d) ≤ β``), α the scale. The paper gives neither value; the authors'
      commented-out code used α = 0.02 with β = 0. Large ``α d`` overflows to inf: keep α small for
      high-dimensional embeddings.
    - ``form="squared"`` (the authors' released code, which dropped the exp and set β = 0, "achieving the same
      result"): :math:`\sum_j d_j`; ``alpha`` and ``beta`` are not used.

    Args:
      embeddings: ``(..., K, d)``, one class's (teacher) embeddings; leading axes are batch axes.
    Returns:
      Shape ``embeddings.shape[:-2]``. One sample (IPC 1) gives ``d = 0`` and a zero gradient.
    """
    check_choice("class_centralization form", form, CENTRALIZATION_FORMS)
    if jnp.ndim(embeddings) < 2 or embeddings.shape[-2] < 1:
        raise ValueError(f"class_centralization: embeddings must be (..., K, d) with K >= 1, got shape "
                         f"{jnp.shape(embeddings)}")
    if not isinstance(alpha, jax.core.Tracer) and form == "exp" and not float(alpha) >= 0:
        raise ConfigError(f"class_centralization: alpha must be >= 0, got {alpha}")
    d = jnp.sum(jnp.square(embeddings - jnp.mean(embeddings, axis=-2, keepdims=True)), axis=-1)  # (..., K)
    if form == "squared":
        return jnp.sum(d, axis=-1)
    return jnp.sum(jnp.maximum(0.0, jnp.exp(alpha * d) - beta), axis=-1)


def class_centralization_per_class(embeddings: jax.Array, alpha: float = 1.0, beta: float = 0.0,
                                   form: str = "exp") -> jax.Array:
    r""":math:`\mathcal L_{CC} = \sum_c \sum_j \ldots` (eq. 3) for embeddings ``(num_classes, K, d)``."""
    return jnp.sum(class_centralization(embeddings, alpha, beta, form))
