"""A drop-in ``lax.conv_general_dilated`` for flax's ``nn.Conv`` whose kernel gradient stays fast inside loops.

Why (measured, jax 0.10.2, 2-core CPU): inside a ``while``/``scan`` body, XLA:CPU lowers the kernel gradient of
an NHWC convolution to a slow generic loop nest (jax-ml/jax#12868 reports the same family of problem): a
128→128 3×3 kernel gradient on a 100×4×4 batch took 534 ms per step inside a ``scan`` vs 5 ms outside, so the
evaluation trainer and every unrolled inner loop were 9–12× slower than necessary. The kernel gradient

.. math:: \\frac{\\partial L}{\\partial k}[a, b, i, o] = \\sum_{n, y, x} x_{pad}[n, y + a, x + b, i]\\, g[n, y, x, o]

is computed here as ``kh·kw`` matrix products ``X_ab^T G`` of the shifted input window and the output gradient,
both flattened to ``(N·H·W, ·)`` (:func:`kernel_gradient`). A first version wrote it as a convolution with batch
and feature axes swapped; that fixed the loops but ran large batches slowly (B=256, 32×32, 1→128: 1.79 s vs
0.06 s; 16×16, 128→128: 1.91 s vs 0.42 s; 2026-11-30, 2 cores), which made gradient matching's per-class real
gradients 3.5× slower than they are now. XLA runs matrix products at full speed in or out of loops (in a
``scan``: 0.40 s per product set vs 2.3 s for the swapped conv at 16×16). Only plain stride-1, undilated, ungrouped
convolutions take this path; anything else falls through to the stock op.

Meta-gradients (reverse-over-reverse through unrolled training) stay on this rule: the forward rule returns the
custom function itself and the input gradient is the custom convolution of the output gradient with the flipped,
transposed kernel (transposed padding ``k-1-lo``; negative pads crop). Stock rules here made XLA:CPU emit
kernel-gradient convs with the whole image as window (10 GFLOP/s unrolled; inside a rolled ``scan`` a naive loop
nest, 0.3–0.5 GFLOP/s): MTT rolled N=2 took 210 s, 5.9 s after this change (docs/performance.md).
The kernel gradient has its own rule too: ``dk`` is bilinear in ``(x, g)``, so its transpose is two 3×3 convs
(``x̄`` = the input gradient of a conv with the cotangent as kernel, ``ḡ = conv(x, cotangent)``) instead of
``kh·kw`` products over shifted copies: MTT N=20 unrolled 24.7 → 21.8 s per step, and the rolled loop within 1.01×
of the unrolled one (2026-12-07, idle 2-core machine; docs/performance.md).
On one CPU device a large batch's kernel gradient is summed over cache-sized chunks (:func:`dk_chunk`): the
16×16 128→128 one runs 2× faster alone and MTT's temporary memory drops by 30 % (docs/performance.md).
Forward-mode (``jax.jvp``) through this function raises, as for any ``custom_vjp``; ddjax uses none.
"""
from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from ddjax.chunks import largest_divisor, sum_over_chunks

_DN = ("NHWC", "HWIO", "NHWC")
#: At most this many stacked input channels (kw·C_in) take the three-product path of :func:`kernel_gradient`.
_STACK_CHANNELS = 48
#: At most this many output channels take :func:`narrow_conv` (one product + shifted adds) for the value.
_NARROW_OUT = 8
#: On one CPU, :func:`kernel_gradient` sums over chunks of the batch whose input and output gradient take at most
#: this many bytes (a sweep of chunk sizes on three ConvNet layers: docs/performance.md).
_DK_CHUNK_BYTES = 3 << 20


def conv_general_dilated(lhs: jax.Array, rhs: jax.Array, window_strides: Any, padding: Any, lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None, feature_group_count: int = 1,
                         batch_group_count: int = 1, precision=None, preferred_element_type=None) -> jax.Array:
    """Same signature and result as ``lax.conv_general_dilated``; loop-friendly kernel gradient (module doc)."""
    plain = (tuple(window_strides) == (1, 1) and feature_group_count == 1 and batch_group_count == 1
             and not isinstance(padding, str) and lhs_dilation in (None, (1, 1)) and rhs_dilation in (None, (1, 1))
             and lhs.ndim == 4 and precision is None and preferred_element_type is None
             and (dimension_numbers is None or _is_nhwc(dimension_numbers, lhs.ndim)))
    if not plain:
        return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
                                        rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
                                        feature_group_count=feature_group_count,
                                        batch_group_count=batch_group_count, precision=precision,
                                        preferred_element_type=preferred_element_type)
    return _conv_any(tuple((int(lo), int(hi)) for lo, hi in padding), lhs, rhs)


def _is_nhwc(dimension_numbers: Any, ndim: int) -> bool:
    dn = lax.conv_dimension_numbers((1,) * ndim, (1,) * ndim, dimension_numbers)
    return dn == lax.conv_dimension_numbers((1,) * ndim, (1,) * ndim, _DN)


def _stock(padding, x, k):
    """The convolution's value: XLA's conv, or :func:`narrow_conv` for at most ``_NARROW_OUT`` output channels."""
    if k.shape[-1] <= _NARROW_OUT:
        return narrow_conv(padding, x, k)
    return lax.conv_general_dilated(x, k, (1, 1), padding, dimension_numbers=_DN)


def narrow_conv(padding: tuple[tuple[int, int], tuple[int, int]], x: jax.Array, k: jax.Array) -> jax.Array:
    """A stride-1 NHWC/HWIO convolution with few output channels as one matrix product and ``kh·kw`` shifted adds:
    ``Z = X_pad · [k_00 … k_(kh-1)(kw-1)]`` (``(N·H_p·W_p, C_in) × (C_in, kh·kw·C_out)``), then
    ``y[n, i, j] = Σ_ab Z[n, i + a, j + b, (a, b)]``. XLA:CPU runs a conv with one output channel (the first layer's
    input gradient, 128→1) at 1–2 GFLOP/s, memory-bound; the product runs near matmul speed (docs/performance.md).
    Padding must be non-negative."""
    kh, kw, c_in, c_out = k.shape
    xp = jnp.pad(x, ((0, 0), padding[0], padding[1], (0, 0)))
    n, hp, wp, _ = xp.shape
    h, w = hp - kh + 1, wp - kw + 1
    z = (xp.reshape(n * hp * wp, c_in) @ k.transpose(2, 0, 1, 3).reshape(c_in, kh * kw * c_out))
    z = z.reshape(n, hp, wp, kh, kw, c_out)
    return sum(z[:, a:a + h, b:b + w, a, b] for a in range(kh) for b in range(kw))


def _conv_any(padding, x, k):
    """``_conv`` for any integer padding: a negative pad crops the input instead (``jnp.pad`` in
    :func:`kernel_gradient` rejects negative widths). The transposed padding of the input gradient is negative
    when a layer pads by more than ``k - 1`` (the 28×28 first layer, padding 3)."""
    if all(lo >= 0 and hi >= 0 for lo, hi in padding):
        return _conv(padding, x, k)
    crop = tuple(slice(-min(lo, 0), x.shape[1 + i] + min(hi, 0)) for i, (lo, hi) in enumerate(padding))
    return _conv(tuple((max(lo, 0), max(hi, 0)) for lo, hi in padding), x[:, crop[0], crop[1]], k)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _conv(padding, x, k):
    return _stock(padding, x, k)


def _conv_fwd(padding, x, k):
    # the custom function itself, not ``_stock``: a second-order pass differentiates this rule, and must meet the
    # custom rule again rather than XLA's stock transpose convs (slow kernel-gradient convs with the whole image as
    # window, elemental loop nests inside a rolled scan; docs/performance.md)
    return _conv(padding, x, k), (x, k)


def _conv_bwd(padding, residuals, g):
    """``dx = conv(g, flip(k)ᵀ)`` with the transposed padding ``(k-1-lo, k-1-hi)`` (through ``_conv`` again, so
    every order of differentiation stays on this rule), ``dk`` = :func:`kernel_gradient`."""
    x, k = residuals
    return _input_gradient(padding, g, k), kernel_gradient(padding, x, g, k.shape[:2])


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 3))
def kernel_gradient(padding: tuple[tuple[int, int], tuple[int, int]], x: jax.Array, g: jax.Array,
                    kernel_size: tuple[int, int]) -> jax.Array:
    """``∂L/∂k`` of a stride-1 NHWC/HWIO convolution as shifted matrix products (module doc):
    ``dk[a, b] = X_ab^T G`` with ``X_ab`` the input window shifted by ``(a, b)`` and ``G`` the output gradient,
    both flattened to ``(N·H'·W', ·)``. Few input channels (the first layer): the ``kw`` horizontal shifts are
    stacked along channels first, so each product has ``kw·C_in`` rows instead of ``C_in``.

    On one CPU device a batch whose input and output gradient exceed :data:`_DK_CHUNK_BYTES` is summed
    ``c`` images at a time in a ``lax.scan`` (``dk = Σ_chunks dk_chunk``, exact up to float summation order),
    ``c`` the largest divisor of the batch that fits: a chunk's shifted copies are still in cache when its products
    read them. 100×16×16, 128→128: 107–120 ms whole, 56–58 ms in chunks of 5–10 (docs/performance.md)."""
    n = g.shape[0]
    chunk = dk_chunk(x.shape, g.shape, x.dtype.itemsize, _DK_CHUNK_BYTES) if _one_cpu() else n
    if chunk == n:
        return _kernel_gradient_whole(padding, x, g, kernel_size)
    return kernel_gradient_in_chunks(padding, x, g, kernel_size, chunk)


def kernel_gradient_in_chunks(padding, x: jax.Array, g: jax.Array, kernel_size: tuple[int, int],
                              chunk: int) -> jax.Array:
    """:func:`kernel_gradient`'s value as ``Σ`` over ``chunk``-image slices of the batch in a ``lax.scan``
    (``chunk`` divides the batch)."""
    return sum_over_chunks(lambda xg: _kernel_gradient_whole(padding, xg[0], xg[1], kernel_size), (x, g), chunk)


def _one_cpu() -> bool:
    """One device and it is a CPU: chunking a batch axis there cannot split a sharded axis or serialise a GPU."""
    return jax.device_count() == 1 and jax.default_backend() == "cpu"


def dk_chunk(x_shape: tuple[int, ...], g_shape: tuple[int, ...], itemsize: int, max_bytes: int) -> int:
    """Images per step of :func:`kernel_gradient`'s chunked sum: the largest divisor ``c ≥ 2`` of the batch whose
    ``c`` inputs and output gradients take at most ``max_bytes``; the whole batch when it fits already or no such
    divisor exists."""
    n = g_shape[0]
    per_image = (math.prod(x_shape[1:]) + math.prod(g_shape[1:])) * itemsize
    if n * per_image <= max_bytes:
        return n
    c = largest_divisor(n, max_bytes // per_image)
    return c if c >= 2 else n


def _kernel_gradient_whole(padding, x, g, kernel_size):
    """:func:`kernel_gradient` of the whole batch in one set of products."""
    kh, kw = kernel_size
    n, h, w, c_out = g.shape
    c_in = x.shape[-1]
    xp = jnp.pad(x, ((0, 0), padding[0], padding[1], (0, 0)))
    g2 = g.reshape(n * h * w, c_out)
    if c_in * kw <= _STACK_CHANNELS:
        wide = jnp.concatenate([xp[:, :, b:b + w, :] for b in range(kw)], axis=-1)  # (n, H+pad, w, kw·c_in)
        rows = [wide[:, a:a + h].reshape(n * h * w, kw * c_in).T @ g2 for a in range(kh)]
    else:
        rows = [xp[:, a:a + h, b:b + w, :].reshape(n * h * w, c_in).T @ g2 for a in range(kh) for b in range(kw)]
    return jnp.stack(rows).reshape(kh, kw, c_in, c_out)


def _kernel_gradient_fwd(padding, x, g, kernel_size):
    return kernel_gradient(padding, x, g, kernel_size), (x, g)


def _kernel_gradient_bwd(padding, kernel_size, residuals, c):
    """``dk`` is bilinear in ``(x, g)``; with cotangent ``c`` (a kernel): ``x̄`` is the input gradient of a conv with
    kernel ``c`` at output gradient ``g``, ``ḡ = conv(x, c)``. Both through ``_conv``: a meta-gradient's transpose
    of ``dk`` runs as two 3×3 convolutions instead of ``kh·kw`` products over shifted copies."""
    x, g = residuals
    return _input_gradient(padding, g, c), _conv_any(padding, x, c)


def _input_gradient(padding, g, k):
    """``∂L/∂x`` of ``conv(x, k)`` at output gradient ``g``: ``conv(g, flip(k)ᵀ)`` with the transposed padding
    ``(k-1-lo, k-1-hi)`` (negative pads crop)."""
    kh, kw = k.shape[:2]
    pad_t = ((kh - 1 - padding[0][0], kh - 1 - padding[0][1]), (kw - 1 - padding[1][0], kw - 1 - padding[1][1]))
    return _conv_any(pad_t, g, jnp.flip(k, (0, 1)).transpose(0, 1, 3, 2))


_conv.defvjp(_conv_fwd, _conv_bwd)
kernel_gradient.defvjp(_kernel_gradient_fwd, _kernel_gradient_bwd)
