r"""Style statistics and the losses of decoupled distillation (SRe2L; DD for DG's domain-transfer learning).

Feature maps are NHWC with the sample axis fourth from the end, ``(..., B, H, W, C)``; any leading axes are
batch axes. "Dataset distillation for domain generalization" (DD for DG), Sec. 3.2-3.3:

- per-image style (eq. 4): :math:`\mu_i = \mathbb{E}_{hw}[F_{ihw}]`, :math:`\sigma_i^2 = \mathrm{Var}_{hw}[F_{ihw}]`;
- a set's (domain's) style (eq. 5): :math:`m = \mathbb{E}_i[\mu_i]`, :math:`s^2 = \mathbb{E}_i[\sigma_i^2]`;
- the normalised style loss (eqs. 8-9): :math:`\mathrm{mean}_c((m - m_t)/\mathrm{std}_c(m_t))^2 +
  \mathrm{mean}_c((s - s_t)/\mathrm{std}_c(s_t))^2`;
- SRe2L's BN-statistics loss:
  :math:`\|\mathrm{mean}_{bhw} F - \mu_{run}\|_2 + \|\mathrm{var}_{bhw} F - \sigma^2_{run}\|_2`
  (``VILA-Lab/SRe2L:recover/utils.py:BNFeatureHook``).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

#: Added to variances before a square root and to the normalising std (PyTorch's norm eps).
STYLE_EPS = 1e-5


def _check_maps(what: str, maps: jax.Array) -> None:
    if jnp.ndim(maps) < 4:
        raise ValueError(f"{what} must be NHWC feature maps (..., B, H, W, C), got shape {jnp.shape(maps)}")


def channel_style(maps: jax.Array, eps: float = STYLE_EPS) -> tuple[jax.Array, jax.Array]:
    r"""Per-image channel style (DD for DG eq. 4): :math:`\mu_{ic} = \frac{1}{HW}\sum_{hw}F_{ihwc}`,
    :math:`\sigma_{ic} = \sqrt{\frac{1}{HW}\sum_{hw}(F_{ihwc}-\mu_{ic})^2 + \epsilon}`.

    Args:
      maps: ``(..., B, H, W, C)`` feature maps.
      eps: added to the (biased, two-pass) variance before the square root, so the gradient stays finite.
    Returns:
      ``(mu, sigma)``, each ``(..., B, C)``.
    """
    _check_maps("maps", maps)
    mu = jnp.mean(maps, axis=(-3, -2))
    var = jnp.mean(jnp.square(maps - mu[..., None, None, :]), axis=(-3, -2))
    return mu, jnp.sqrt(var + eps)


def domain_style(mu: jax.Array, sigma: jax.Array, eps: float = STYLE_EPS) -> tuple[jax.Array, jax.Array]:
    r"""A set's style from its images' styles (DD for DG eq. 5): :math:`m = \mathbb{E}_i[\mu_i]`,
    :math:`s = \sqrt{\mathbb{E}_i[\sigma_i^2]}` (the mean of per-image variances, not the batch variance).

    Args:
      mu, sigma: ``(..., N, C)`` per-image styles from :func:`channel_style` (concatenate chunks of a large domain
        first; the result is exact). ``eps`` is the one :func:`channel_style` added, removed again here so that
        ``s`` is the square root of the mean per-image variance plus ``eps`` once.
    Returns:
      ``(m, s)``, each ``(..., C)``.
    """
    if jnp.shape(mu) != jnp.shape(sigma) or jnp.ndim(mu) < 2:
        raise ValueError(f"mu and sigma must both be (..., N, C), got shapes {jnp.shape(mu)} and {jnp.shape(sigma)}")
    del eps  # sigma^2 already holds var + eps; its mean is mean(var) + eps
    return jnp.mean(mu, axis=-2), jnp.sqrt(jnp.mean(jnp.square(sigma), axis=-2))


def set_style(maps: jax.Array, eps: float = STYLE_EPS) -> tuple[jax.Array, jax.Array]:
    """:func:`domain_style` of :func:`channel_style`: the style ``(m, s)`` ``(..., C)`` of a batch of maps."""
    return domain_style(*channel_style(maps, eps))


def normalized_style_loss(style: tuple[jax.Array, jax.Array], target: tuple[jax.Array, jax.Array], *,
                          normalize: bool = True, eps: float = STYLE_EPS) -> jax.Array:
    r"""Style loss of one layer, normalised by the channel std of the target (DD for DG eqs. 8-9):

    .. math:: \mathrm{mean}_c\Big(\frac{m_c - m^t_c}{\mathrm{std}_c(m^t) + \epsilon}\Big)^2 +
              \mathrm{mean}_c\Big(\frac{s_c - s^t_c}{\mathrm{std}_c(s^t) + \epsilon}\Big)^2

    ``std_c`` is the population std over the channel axis. The paper's style loss is an "MSE loss" on the
    statistics (Sec. 2), hence the mean over channels; eq. 9 as printed drops the square, restored here.
    ``normalize=False`` gives the plain style loss (Table 4, first row). Sum over layers (and domains) yourself.

    Args:
      style: ``(m, s)`` of the set being optimised, each ``(..., C)``.
      target: ``(m_t, s_t)``, each ``(..., C)`` (broadcast against ``style``); treated as constants.
    Returns:
      ``(...)`` loss per leading index.
    """
    (m, s), (mt, st) = style, target
    if jnp.shape(m)[-1:] != jnp.shape(mt)[-1:] or jnp.shape(m) != jnp.shape(s) or jnp.shape(mt) != jnp.shape(st):
        raise ValueError(f"style (m, s) and target (m_t, s_t) must be (..., C) with equal C, got "
                         f"{jnp.shape(m)}, {jnp.shape(s)} and {jnp.shape(mt)}, {jnp.shape(st)}")
    mt, st = jax.lax.stop_gradient(mt), jax.lax.stop_gradient(st)
    if normalize:
        scale_m = jnp.std(mt, axis=-1, keepdims=True) + eps
        scale_s = jnp.std(st, axis=-1, keepdims=True) + eps
    else:
        scale_m = scale_s = 1.0
    return jnp.mean(jnp.square((m - mt) / scale_m), -1) + jnp.mean(jnp.square((s - st) / scale_s), -1)


def bn_statistics_loss(maps: jax.Array, running_mean: jax.Array, running_var: jax.Array) -> jax.Array:
    r"""SRe2L's BN-statistics loss of one layer: :math:`\|\bar F - \mu_{run}\|_2 + \|\mathrm{Var}(F) -
    \sigma^2_{run}\|_2`, batch mean and biased variance over ``(B, H, W)`` of the BN layer's input.

    Args:
      maps: ``(..., B, H, W, C)`` the BN layer's input on the synthetic batch.
      running_mean, running_var: ``(C,)`` the squeeze model's running statistics (constants).
    Returns:
      ``(...)`` loss per leading index (L2 norms, not squared, as ``BNFeatureHook``).
    """
    _check_maps("maps", maps)
    c = jnp.shape(maps)[-1]
    if jnp.shape(running_mean) != (c,) or jnp.shape(running_var) != (c,):
        raise ValueError(f"running_mean/var must be ({c},) for maps with {c} channels, got "
                         f"{jnp.shape(running_mean)} and {jnp.shape(running_var)}")
    mean = jnp.mean(maps, axis=(-4, -3, -2))
    var = jnp.mean(jnp.square(maps - mean[..., None, None, None, :]), axis=(-4, -3, -2))
    rm, rv = jax.lax.stop_gradient(running_mean), jax.lax.stop_gradient(running_var)
    return jnp.linalg.norm(mean - rm, axis=-1) + jnp.linalg.norm(var - rv, axis=-1)
