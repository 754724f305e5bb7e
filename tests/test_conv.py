"""ddjax.models.conv's custom convolution against stock ``lax.conv_general_dilated``: values, first-order and
second-order gradients (reverse-over-reverse through both rules) in float64, and the structure that makes it
fast (every convolution of a meta-gradient is a small-kernel one; docs/performance.md)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from ddjax.models import conv
from ddjax.models.conv import conv_general_dilated as custom_conv

DN = ("NHWC", "HWIO", "NHWC")
# (padding, image side, c_in, c_out): symmetric 1 with 10 outputs (XLA's conv for the value; ≤ 8 outputs take
# narrow_conv's product + shifted adds); asymmetric (0,2)/(1,0); the 28×28 first layer's padding 3 on
# one channel (transposed padding -1, cropped); ≤ 8 output channels with many inputs (the first layer's dx shape;
# 20 inputs also take kernel_gradient's nine-product path, 3 and 1 its stacked-shift path)
CASES = [(((1, 1), (1, 1)), (6, 5), 3, 10), (((0, 2), (1, 0)), (6, 5), 3, 4), (((3, 3), (3, 3)), (7, 7), 1, 4),
         (((1, 1), (1, 1)), (5, 6), 20, 1)]


def _stock(x, k, padding):
    return lax.conv_general_dilated(x, k, (1, 1), padding, dimension_numbers=DN)


def _mine(x, k, padding):
    return custom_conv(x, k, (1, 1), padding, dimension_numbers=DN)


def _data(side, c_in, c_out, dtype):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(2,) + side + (c_in,)), dtype)
    k = jnp.asarray(rng.normal(size=(3, 3, c_in, c_out)) / np.sqrt(9 * c_in), dtype)
    return x, k


def _meta_loss(conv, padding):
    """One SGD step on the kernel, then a loss at the new kernel: the outer gradient of this to ``(x, k)``
    differentiates the convolution's backward rule (the MTT/SATM meta-gradient pattern)."""
    def inner(x, k):
        return jnp.sum(jnp.sin(conv(x, k, padding)))

    def outer(x, k):
        k1 = k - 0.3 * jax.grad(inner, 1)(x, k)
        return jnp.sum(jnp.cos(conv(x * 0.7, k1, padding)) ** 2)
    return inner, outer


def _derivatives(conv, padding):
    """Value, first-order gradients, the meta-gradient (reverse-over-reverse through ``dk``) and the gradient of
    the input gradient's squared norm (reverse-over-reverse through ``dx``) to ``(x, k)``, in one jitted call."""
    inner, outer = _meta_loss(conv, padding)

    def dx_norm(x, k):
        return jnp.sum(jax.grad(inner, 0)(x, k) ** 2)

    return jax.jit(lambda x, k: (conv(x, k, padding), jax.grad(inner, (0, 1))(x, k), jax.grad(outer, (0, 1))(x, k),
                                 jax.grad(dx_norm, (0, 1))(x, k)))


@pytest.mark.parametrize("padding,side,c_in,c_out", CASES)
def test_custom_conv_matches_stock_conv_to_second_order_float64(padding, side, c_in, c_out):
    with jax.enable_x64(True):
        x, k = _data(side, c_in, c_out, jnp.float64)
        mine, stock = _derivatives(_mine, padding)(x, k), _derivatives(_stock, padding)(x, k)
        for a, b in zip(jax.tree.leaves(mine), jax.tree.leaves(stock), strict=True):
            assert a.dtype == jnp.float64 and a.shape == b.shape
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12 * float(np.max(np.abs(b))))
    # strided convs fall through to the stock op
    np.testing.assert_array_equal(custom_conv(x, k, (2, 2), padding, dimension_numbers=DN),
                                  lax.conv_general_dilated(x, k, (2, 2), padding, dimension_numbers=DN))


def test_meta_gradient_uses_only_small_kernel_convolutions():
    """Fix A: the outer pass re-enters the custom rule, so no convolution in the meta-gradient's program has a
    large window (stock transposes compute ``dk`` as a conv whose kernel is the whole output gradient map)."""
    padding = ((1, 1), (1, 1))
    x, k = _data((8, 8), 12, 16, jnp.float32)   # > 8 outputs both ways: XLA convs, not narrow_conv
    _, outer = _meta_loss(_mine, padding)
    _, outer_stock = _meta_loss(_stock, padding)
    assert (8, 8) in _conv_windows(outer_stock, x, k)   # the check can fail: stock rules emit image-sized windows
    assert _conv_windows(outer, x, k) == {(3, 3)}


def _conv_windows(loss, x, k) -> set[tuple[int, ...]]:
    """Spatial kernel shapes of every ``conv_general_dilated`` in the jaxpr of ``grad(loss)``."""
    return {tuple(eqn.invars[1].aval.shape[d] for d in eqn.params["dimension_numbers"].rhs_spec[2:])  # (o, i, sp…)
            for eqn in _gradient_equations(loss, x, k, "conv_general_dilated")}


def _gradient_equations(loss, x, k, primitive: str) -> list:
    """Every equation of ``primitive`` in the jaxpr of ``grad(loss)`` to ``(x, k)``, nested jaxprs included."""
    found = []

    def visit(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == primitive:
                found.append(eqn)
            for value in eqn.params.values():
                for sub in value if isinstance(value, (list, tuple)) else [value]:
                    inner = getattr(sub, "jaxpr", sub)
                    if hasattr(inner, "eqns"):
                        visit(inner)
    visit(jax.make_jaxpr(jax.grad(loss, (0, 1)))(x, k).jaxpr)
    return found


@pytest.mark.parametrize("c_in", [12, 20])   # 3·12 ≤ 48: stacked-shift products; 20: nine products
def test_meta_gradient_transposes_the_kernel_gradient_as_convolutions(c_in):
    """``kernel_gradient`` has its own rule: its transpose (the meta-gradient's pass through ``dk``) is two 3×3
    convolutions, not ``kh·kw`` products over shifted copies of the output gradient. So every matrix product in
    the meta-gradient's program is a kernel gradient, with a kernel-shaped ``(··C_in, C_out)`` output; the old
    rule also had ``(N·H·W, ·)``-shaped ones (its transposes)."""
    padding = ((1, 1), (1, 1))
    x, k = _data((8, 8), c_in, 16, jnp.float32)
    _, outer = _meta_loss(_mine, padding)
    shapes = {tuple(eqn.outvars[0].aval.shape) for eqn in _gradient_equations(outer, x, k, "dot_general")}
    assert shapes and shapes <= {(3 * c_in, 16), (c_in, 16)}, shapes


def test_kernel_gradient_chunk_is_the_largest_fitting_divisor_of_the_batch():
    # MTT's three layers at batch 100, float32, the 3 MiB default: 16×16 128→128 (262,144 bytes an image, 12
    # fit, largest divisor 10); 8×8 (65,536 bytes, 48 fit → 25); 32×32 1→128 (528,384 bytes, 5 fit → 5)
    limit = conv._DK_CHUNK_BYTES
    assert conv.dk_chunk((100, 16, 16, 128), (100, 16, 16, 128), 4, limit) == 10
    assert conv.dk_chunk((100, 8, 8, 128), (100, 8, 8, 128), 4, limit) == 25
    assert conv.dk_chunk((100, 32, 32, 1), (100, 32, 32, 128), 4, limit) == 5
    assert conv.dk_chunk((10, 16, 16, 128), (10, 16, 16, 128), 4, limit) == 10      # 2.6 MB: whole
    assert conv.dk_chunk((97, 16, 16, 128), (97, 16, 16, 128), 4, limit) == 97      # prime: no divisor ≥ 2 fits
    assert conv.dk_chunk((6, 4, 4, 3), (6, 4, 4, 5), 8, 2 * 8 * (16 * 3 + 16 * 5)) == 2


@pytest.mark.parametrize("c_in", [3, 20])   # stacked-shift and nine-product paths
def test_chunked_kernel_gradient_matches_stock_conv_to_second_order_float64(monkeypatch, c_in):
    """On one CPU, a batch over ``_DK_CHUNK_BYTES`` sums its kernel gradient over chunks in a ``lax.scan``: same
    values, first- and second-order gradients as stock ``lax.conv``. Forced here (the suite has 8 devices) with a
    limit of two images, so 6 images take 3 chunks."""
    padding = ((1, 1), (1, 1))
    monkeypatch.setattr(conv, "_one_cpu", lambda: True)
    monkeypatch.setattr(conv, "_DK_CHUNK_BYTES", 2 * 8 * 6 * 5 * (c_in + 10))
    with jax.enable_x64(True):
        rng = np.random.default_rng(1)
        x = jnp.asarray(rng.normal(size=(6, 6, 5, c_in)))
        k = jnp.asarray(rng.normal(size=(3, 3, c_in, 10)) / np.sqrt(9 * c_in))
        _, outer = _meta_loss(_mine, padding)
        lengths = [eqn.params["length"] for eqn in _gradient_equations(outer, x, k, "scan")]
        assert lengths and set(lengths) == {3}   # each kernel gradient of the meta-gradient: 3 chunks
        mine, stock = _derivatives(_mine, padding)(x, k), _derivatives(_stock, padding)(x, k)
        for a, b in zip(jax.tree.leaves(mine), jax.tree.leaves(stock), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12 * float(np.max(np.abs(b))))
