"""Gradient-matching distances (DC: Zhao et al., "Dataset Condensation with Gradient Matching", ICLR'21, Sec. 3;
IDC: Kim et al., ICML'22; DREAM+: Liu et al., Sec. 3.1 eq. 2a).

Gradients are parameter pytrees (flax ``params``). Kernels are flax-shaped: a conv kernel ``(kh, kw, in, out)``,
a dense kernel ``(in, out)``; the *output* axis is the last one. "Rows" below are output units, as in the
reference's PyTorch ``(out, in·kh·kw)`` reshape.

Metrics (``metric``):
  ``layerwise_cos``: DC's ``'ours'`` (``distance_wb``): per leaf :math:`\\sum_{o}\\big(1 - \\frac{\\langle g^r_o,
    g^s_o\\rangle}{\\|g^r_o\\|\\|g^s_o\\| + 10^{-6}}\\big)` over output rows ``o``; 1-D leaves (biases, norm scales)
    contribute 0.
  ``mse``: :math:`\\sum (g^r - g^s)^2` over the selected leaves (a sum, not a mean, as DC's and IDC's ``'mse'``).
  ``l1``: :math:`\\sum |g^r - g^s|` (IDC's ``'l1'``; the DREAM+ paper's "mean absolute error" for (Fashion-)MNIST).
  ``cos``: :math:`1 - \\frac{\\langle g^r, g^s\\rangle}{\\|g^r\\|\\|g^s\\| + 10^{-6}}` of all selected leaves
    concatenated (DC's ``'cos'``).

Leaves (``layers``): ``"all"`` every leaf (DC's ``'mse'``/``'cos'``); ``"weights"`` leaves with ≥ 2 dims, i.e.
conv and dense kernels (biases and norm affines skipped; IDC with ``--fc True``); ``"conv"`` leaves with ≥ 3 dims
(IDC's default: biases, norm affines and the dense head skipped).
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from ddjax.errors import ConfigError, check_choice

GRADIENT_METRICS = ("layerwise_cos", "mse", "l1", "cos")
GRADIENT_LAYERS = ("all", "weights", "conv")
_EPS = 1e-6  # the references' denominator guard

__all__ = ["GRADIENT_LAYERS", "GRADIENT_METRICS", "check_gradient_metric", "gradient_matching_distance",
           "gradient_matching_distance_per_class"]


def check_gradient_metric(metric: str, layers: str = "all") -> None:
    """Raise ConfigError (listing the choices) for an unknown metric or leaf selection."""
    check_choice("gradient matching metric", metric, GRADIENT_METRICS)
    check_choice("gradient matching layers", layers, GRADIENT_LAYERS)


def _selected(grads_real: Any, grads_syn: Any, layers: str) -> list[tuple[jax.Array, jax.Array]]:
    real_leaves, real_def = jax.tree.flatten(grads_real)
    syn_leaves, syn_def = jax.tree.flatten(grads_syn)
    if real_def != syn_def:
        raise ConfigError(f"gradient_matching_distance: the real and synthetic gradients have different structures "
                          f"({real_def} vs {syn_def}); pass gradients of the same parameters")
    min_dims = {"all": 0, "weights": 2, "conv": 3}[layers]
    pairs = []
    for r, s in zip(real_leaves, syn_leaves):
        if r.shape != s.shape:
            raise ConfigError(f"gradient_matching_distance: leaf shapes differ ({r.shape} vs {s.shape})")
        if r.ndim >= min_dims:
            pairs.append((r, s))
    return pairs


def _rows(g: jax.Array) -> jax.Array:
    """``(out, rest)``: the output axis (last in flax) first, everything else flattened."""
    return jnp.moveaxis(g, -1, 0).reshape(g.shape[-1], -1)


def gradient_matching_distance(grads_real: Any, grads_syn: Any, metric: str = "layerwise_cos",
                               layers: str = "all") -> jax.Array:
    """Distance between two gradient pytrees (module doc for ``metric`` and ``layers``); a scalar.

    Raises ConfigError for an unknown metric/layers value or mismatched trees (eagerly, at trace time).
    """
    check_gradient_metric(metric, layers)
    pairs = _selected(grads_real, grads_syn, layers)
    if not pairs:
        return jnp.zeros((), jnp.float32)
    if metric == "layerwise_cos":
        total = jnp.zeros((), jnp.float32)
        for r, s in pairs:
            if r.ndim < 2:
                continue  # DC's distance_wb returns 0 for biases and norm affines
            r2, s2 = _rows(r), _rows(s)
            cos = jnp.sum(r2 * s2, -1) / (jnp.linalg.norm(r2, axis=-1) * jnp.linalg.norm(s2, axis=-1) + _EPS)
            total = total + jnp.sum(1.0 - cos)
        return total
    if metric == "mse":
        return sum(jnp.sum(jnp.square(r - s)) for r, s in pairs)
    if metric == "l1":
        return sum(jnp.sum(jnp.abs(r - s)) for r, s in pairs)
    # global cosine over the concatenation
    dot = sum(jnp.sum(r * s) for r, s in pairs)
    norm_r = jnp.sqrt(sum(jnp.sum(jnp.square(r)) for r, _ in pairs))
    norm_s = jnp.sqrt(sum(jnp.sum(jnp.square(s)) for _, s in pairs))
    return 1.0 - dot / (norm_r * norm_s + _EPS)


def gradient_matching_distance_per_class(grads_real: Any, grads_syn: Any, metric: str = "layerwise_cos",
                                         layers: str = "all") -> jax.Array:
    """:math:`\\sum_c D(g^r_c, g^s_c)` for gradient trees whose leaves carry a leading class axis ``(K, ...)``
    (DC sums the per-class distances before one image update)."""
    check_gradient_metric(metric, layers)
    per_class = jax.vmap(lambda r, s: gradient_matching_distance(r, s, metric, layers))(grads_real, grads_syn)
    return jnp.sum(per_class)
