"""Sharpness-aware perturbations over pytrees: SAM, ASAM, GSAM and VaSSO, optax style.

Pure building blocks, no algorithm code. A sharpness-aware step on a loss ``F`` at ``φ`` (any pytree: synthetic
images, network parameters) is

1. ``g = ∇F(φ)``; ``ε = perturbation(g)`` (this module);
2. ``g_sam = ∇F(φ + ε)``; for GSAM replace ``g_sam`` by :func:`gsam_descent` ``(g, g_sam, alpha)``;
3. hand the descent gradient to any optax optimizer, at ``φ`` (not ``φ + ε``).

Variants (:data:`VARIANTS`):

- ``"sam"``   Foret et al., ICLR 2021 (SATM paper eq. 9): ``ε = ρ g / ‖g‖₂``.
- ``"asam"``  Kwon et al., ICML 2021 (adaptive SAM): ``ε = ρ T² g / ‖T g‖₂`` with ``T = |φ| + η`` elementwise.
- ``"gsam"``  Zhuang et al., ICLR 2022 (surrogate-gap guided SAM): SAM's ascent; the descent is
  :func:`gsam_descent`.
- ``"vasso"`` Li & Giannakis, NeurIPS 2023 (variance-suppressed SAM): ``d_t = (1-θ) d_{t-1} + θ g_t`` (``d_0 = g_0``),
  ``ε = ρ d_t / ‖d_t‖₂``; the only variant with state.

All norms are global over the pytree (every leaf together). ``ε = 0`` when the direction is zero, with finite
(zero) gradients through it: no NaN at ``g = 0``, also under ``jax.grad``.

A sharpness-aware gradient of a whole objective (the three steps above plus SATM's landscape smoothing) is
:func:`value_and_grad`, the counterpart of ``jax.value_and_grad`` (big_vision's GSAM trainer has the same shape).

Stateless use: ``sam_perturbation(g, rho, variant=..., params=...)``. Uniform use (any variant, state kept in the
train state like an optax optimizer's): ``p = perturbation(rho, variant=...)``, ``s = p.init(φ)``,
``ε, s = p.perturb(g, s, φ)``.

EMA of the synthetic images (FTD, SATM's "EMA" baseline) needs no helper: optax has it,
``ema = optax.incremental_update(new_images, ema, step_size=1 - decay)`` gives ``decay·ema + (1-decay)·new``.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from ddjax.errors import ConfigError, check_choice

__all__ = ["Perturbation", "STATELESS_VARIANTS", "VARIANTS", "VassoState", "asam_epsilon", "gsam_descent",
           "perturbation", "sam_epsilon", "sam_perturbation", "smoothing_noise", "value_and_grad", "vasso_init",
           "vasso_update"]

VARIANTS = ("sam", "asam", "gsam", "vasso")
STATELESS_VARIANTS = ("sam", "asam", "gsam")

PyTree = Any


class VassoState(NamedTuple):
    """VaSSO's state: ``count`` perturbations taken so far (int32 scalar) and the EMA direction ``d`` (a pytree
    shaped like the gradients; its value before the first step is unused)."""
    count: jax.Array
    direction: PyTree


class Perturbation(NamedTuple):
    """An ``(init, perturb)`` pair, like ``optax.GradientTransformation``.

    ``init(params) -> state``; ``perturb(grads, state, params=None) -> (epsilon, state)``. The state is
    ``optax.EmptyState()`` for the stateless variants and :class:`VassoState` for ``"vasso"``. Both are pure and
    safe under ``jit``/``vmap``/``grad``.
    """
    init: Callable[[PyTree], Any]
    perturb: Callable[..., tuple[PyTree, Any]]


# --------------------------------------------------------------------------------------------------- validation


def _concrete(value) -> float | None:
    """``float(value)`` when known outside tracing, else None (a traced schedule value is not checked)."""
    if isinstance(value, jax.core.Tracer):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _check_rho(rho) -> None:
    v = _concrete(rho)
    if v is not None and not v >= 0:
        raise ConfigError(f"SAM radius rho must be >= 0 (0 disables the perturbation), got {rho}; set rho >= 0")


def _check_eta(eta) -> None:
    v = _concrete(eta)
    if v is not None and not v >= 0:
        raise ConfigError(f"ASAM eta must be >= 0 (T = |params| + eta; Kwon et al. use 0.01), got {eta}")


def _check_theta(theta) -> None:
    v = _concrete(theta)
    if v is not None and not 0 <= v <= 1:
        raise ConfigError(f"VaSSO theta must be in [0, 1] (EMA weight of the new gradient; reference 0.9), "
                          f"got {theta}")


def _check_alpha(alpha) -> None:
    v = _concrete(alpha)
    if v is not None and not v >= 0:
        raise ConfigError(f"GSAM alpha must be >= 0 (0 gives plain SAM; Zhuang et al. use 0.01-0.3), got {alpha}")


def _need_params(variant: str, params) -> None:
    if params is None:
        raise ConfigError(f"SAM variant {variant!r} scales its radius by the parameters and needs params=; pass "
                          "the point being perturbed")


# ---------------------------------------------------------------------------------------------------- formulas


def _scale_to_radius(direction: PyTree, rho, sqnorm: jax.Array) -> PyTree:
    """``rho · direction / sqrt(sqnorm)``, and 0 where ``sqnorm == 0``.

    Double ``where`` so that neither the value nor any gradient is NaN at ``sqnorm == 0``."""
    positive = sqnorm > 0
    inv = jnp.where(positive, jax.lax.rsqrt(jnp.where(positive, sqnorm, 1.0)), 0.0)
    return optax.tree.scale(rho * inv, direction)


def sam_epsilon(grads: PyTree, rho) -> PyTree:
    """SAM (Foret et al. 2021; SATM eq. 9): ``ε = ρ g / ‖g‖₂``, global norm; 0 when ``g = 0``."""
    return _scale_to_radius(grads, rho, optax.tree.norm(grads, squared=True))


def asam_epsilon(grads: PyTree, params: PyTree, rho, eta=0.01) -> PyTree:
    """ASAM (Kwon et al. 2021, eq. 12 with ``T_w = |w| + η``): ``ε = ρ T² g / ‖T g‖₂``, elementwise ``T``.

    ``‖T⁻¹ ε‖₂ = ρ``: the radius is measured relative to the parameters' scale. 0 when ``T g = 0``."""
    t = jax.tree.map(lambda w: jnp.abs(w) + eta, params)
    tg = jax.tree.map(jnp.multiply, t, grads)
    return _scale_to_radius(jax.tree.map(jnp.multiply, t, tg), rho, optax.tree.norm(tg, squared=True))


def vasso_update(grads: PyTree, state: VassoState, theta=0.9) -> VassoState:
    """VaSSO's direction update (Li & Giannakis 2023, Alg. 1): ``d_t = (1-θ) d_{t-1} + θ g_t``, with ``d_0 = g_0``
    on the first call (``count == 0``) as the authors' code does."""
    first = state.count == 0
    moved = optax.tree.update_moment(grads, state.direction, 1.0 - theta, 1)
    direction = jax.tree.map(lambda g, d: jnp.where(first, g, d), grads, moved)
    return VassoState(count=optax.safe_increment(state.count), direction=direction)


def vasso_init(params: PyTree) -> VassoState:
    """VaSSO's initial state: ``count = 0`` and a zero direction shaped like ``params``."""
    return VassoState(count=jnp.zeros([], jnp.int32), direction=optax.tree.zeros_like(params))


def sam_perturbation(grads: PyTree, rho, *, variant: str = "sam", params: PyTree | None = None,
                     eta=0.01) -> PyTree:
    """The perturbation ``ε`` of a stateless variant (``"sam"``, ``"asam"``, ``"gsam"``) from the gradient pytree.

    ``"sam"`` and ``"gsam"``: ``ε = ρ g/‖g‖₂`` (GSAM perturbs as SAM; its change is the descent,
    :func:`gsam_descent`). ``"asam"``: ``ε = ρ T² g/‖T g‖₂``, ``T = |params| + eta`` (needs ``params``).
    ``"vasso"`` keeps an EMA across steps: use :func:`perturbation`. ``rho`` may be a traced scalar (a schedule);
    a concrete negative ``rho`` raises :class:`ConfigError`.
    """
    check_choice("SAM variant", variant, VARIANTS)
    if variant == "vasso":
        raise ConfigError("SAM variant 'vasso' keeps an EMA of gradients across steps; use "
                          "ddjax.sam.perturbation(rho, variant='vasso') and its init/perturb state")
    _check_rho(rho)
    if variant == "asam":
        _check_eta(eta)
        _need_params(variant, params)
        return asam_epsilon(grads, params, rho, eta)
    return sam_epsilon(grads, rho)


def perturbation(rho, *, variant: str = "sam", eta=0.01, theta=0.9, relative: bool = False) -> Perturbation:
    """``(init, perturb)`` for any variant in :data:`VARIANTS`; arguments are validated here, eagerly.

    ``rho``: radius; ``eta``: ASAM's ``T = |params| + eta`` offset (Kwon et al.: 0.01); ``theta``: VaSSO's EMA
    weight of the newest gradient (authors' default 0.9). ``perturb(grads, state, params=None)`` returns
    ``(ε, new_state)``; ``params`` is required for ``"asam"`` and with ``relative``.
    ``relative=True``: the radius is ``rho · ‖params‖₂`` (global norm), so ε is the same fraction of the point
    whatever its scale (SAM, GSAM, VaSSO; ASAM is scale-adaptive already and refuses it).
    """
    check_choice("SAM variant", variant, VARIANTS)
    _check_rho(rho)
    _check_eta(eta)
    _check_theta(theta)
    if relative and variant == "asam":
        raise ConfigError("SAM variant 'asam' already measures its radius relative to |params| + eta; use "
                          "relative=False with it (or variant 'sam'/'gsam'/'vasso' with relative=True)")

    def radius(params):
        if not relative:
            return rho
        _need_params(f"{variant} (relative radius)", params)
        return rho * optax.tree.norm(params)

    if variant == "vasso":
        def perturb(grads, state, params=None):
            state = vasso_update(grads, state, theta)
            return sam_epsilon(state.direction, radius(params)), state

        return Perturbation(init=vasso_init, perturb=perturb)

    def init(params):
        del params
        return optax.EmptyState()

    def perturb(grads, state, params=None):
        return sam_perturbation(grads, radius(params), variant=variant, params=params, eta=eta), state

    return Perturbation(init=init, perturb=perturb)


def gsam_descent(g_clean: PyTree, g_perturbed: PyTree, alpha) -> PyTree:
    """GSAM's descent gradient (Zhuang et al. 2022, Alg. 1): ``g_sam − α g_⊥``.

    ``g_sam = ∇f(φ+ε)`` (``g_perturbed``), ``g = ∇f(φ)`` (``g_clean``) and
    ``g_⊥ = g − (⟨g, g_sam⟩/‖g_sam‖²) g_sam`` is the part of the clean gradient orthogonal to ``g_sam``.
    Moving along ``−g_⊥`` lowers the surrogate gap ``f(φ+ε) − f(φ)`` without changing the first-order
    decrease of ``f(φ+ε)`` (``⟨g_⊥, g_sam⟩ = 0``). ``alpha = 0`` gives SAM. When ``g_sam = 0``, ``g_⊥ = g``.
    """
    _check_alpha(alpha)
    sq = optax.tree.norm(g_perturbed, squared=True)
    positive = sq > 0
    coef = jnp.where(positive, optax.tree.vdot(g_clean, g_perturbed) / jnp.where(positive, sq, 1.0), 0.0)
    g_perp = optax.tree.add_scale(g_clean, -coef, g_perturbed)
    return optax.tree.add_scale(g_perturbed, -alpha, g_perp)


# ------------------------------------------------------------------------------------------ the whole gradient


def smoothing_noise(key: jax.Array, images: jax.Array, gamma) -> jax.Array:
    """Landscape-smoothing noise (SATM eq. 10): per image ``j`` (leading axis), N(0, (γ‖ϕ_j‖₂)²) per pixel."""
    norms = jnp.sqrt(jnp.sum(jnp.square(images), axis=tuple(range(1, images.ndim)), keepdims=True))
    return gamma * norms * jax.random.normal(key, images.shape, images.dtype)


def value_and_grad(fun: Callable[..., tuple[jax.Array, Any]], perturbation: Perturbation, *, noise_gamma=0.0,
                   gsam_alpha=None) -> Callable[..., tuple[tuple[jax.Array, Any], tuple, Any, dict]]:
    r"""A sharpness-aware ``jax.value_and_grad(fun, argnums=all, has_aux=True)``, perturbing the first argument.

    ``fun(x, *args, restart=None) -> (loss, aux)``. The returned ``g(state, key, x, *args)`` computes

    1. ``(loss, aux), (g_x, g_args) = ∇fun(x̃, *args)`` at ``x̃ = x + n``, ``n`` :func:`smoothing_noise` with
       ``noise_gamma`` (0: ``x̃ = x``; SATM §3.2);
    2. ``ε, state = perturbation.perturb(g_x, state, x)``;
    3. ``g_sam = ∇_x fun(x + ε, *stop_gradient(args), restart=aux)`` (``fun`` may restart from what the first
       evaluation recorded: SATM's trajectory reuse), and GSAM's :func:`gsam_descent` when ``gsam_alpha`` is set;

    and returns ``((loss, aux), (g_sam, *g_args), state, {"loss_perturbed", "eps_norm", "sam_cosine"})``: the loss
    and ``args``' gradients of step 1 (SATM's learnable α), the descent gradient of ``x`` to hand to an optimizer at
    ``x``; ``sam_cosine`` = cos(∇_x fun(x̃), descent gradient), how far the SAM step turns the update.
    """
    if gsam_alpha is not None:
        _check_alpha(gsam_alpha)

    def grad_fn(state: Any, key: jax.Array, x: PyTree, *args):
        noisy = x + smoothing_noise(key, x, noise_gamma) if noise_gamma else x
        (loss, aux), grads = jax.value_and_grad(fun, argnums=tuple(range(1 + len(args))), has_aux=True)(noisy, *args)
        eps, state = perturbation.perturb(grads[0], state, x)
        (loss_perturbed, _), g_sam = jax.value_and_grad(fun, has_aux=True)(
            optax.tree.add(x, eps), *jax.lax.stop_gradient(args), restart=aux)
        if gsam_alpha is not None:
            g_sam = gsam_descent(grads[0], g_sam, gsam_alpha)
        # cos(∇F(x̃), descent gradient): 1 when the SAM step does not change the update's direction.
        cosine = optax.tree.vdot(grads[0], g_sam) / jnp.maximum(
            optax.tree.norm(grads[0]) * optax.tree.norm(g_sam), jnp.finfo(jnp.float32).tiny)
        info = {"loss_perturbed": loss_perturbed, "eps_norm": optax.tree.norm(eps), "sam_cosine": cosine}
        return (loss, aux), (g_sam, *grads[1:]), state, info

    return grad_fn
