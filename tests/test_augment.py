"""Tests for ddjax.augment (DSA): op formulas against independent numpy code, siamese property, per-sample
independence, mode S/M semantics, gradients, jit/vmap, and user errors.

Images are deliberately non-square (H=12, W=20) so that any H/W (or x/y) mix-up fails.
"""
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ddjax.augment import DSA_OPS, DSAParams, apply_group, dsa, parse_strategy
from ddjax.augment.dsa import (affine, brightness, contrast, cutout, flip, rotate, rotation_theta, saturation,
                               scale, select_group, translate)
from ddjax.errors import ConfigError, DDJaxError

H, W, C = 12, 20, 3
SY, SX = 2, 3            # int(12*0.125+0.5), int(20*0.125+0.5): reference crop ranges
CUT_H, CUT_W = 6, 10     # int(12*0.5+0.5), int(20*0.5+0.5): reference cutout sizes
FULL = "color_crop_cutout_flip_scale_rotate"


def _images(seed, n, h=H, w=W, c=C):
    """Random images with no exact zeros (so zeroed pixels identify cutout/padding)."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.5, 1.5, size=(n, h, w, c)) * rng.choice([-1.0, 1.0], size=(n, h, w, c))
    return x.astype(np.float32)


def _keys(n, seed=0):
    return jax.random.split(jax.random.key(seed), n)


# ---------------------------------------------------------------- independent numpy references

def np_translate(x, ty, tx):
    """out[i, j] = x[i + ty, j + tx], zero outside."""
    n, h, w, c = x.shape
    out = np.zeros_like(x)
    for i in range(h):
        for j in range(w):
            si, sj = i + ty, j + tx
            if 0 <= si < h and 0 <= sj < w:
                out[:, i, j] = x[:, si, sj]
    return out


def np_affine(x, theta):
    """PyTorch affine_grid + grid_sample(bilinear, zeros, align_corners=False), written out with loops (float64)."""
    n, h, w, c = x.shape
    theta = np.broadcast_to(np.asarray(theta, np.float64), (n, 2, 3))
    x = x.astype(np.float64)
    out = np.zeros_like(x)
    for b in range(n):
        t = theta[b]
        for i in range(h):
            for j in range(w):
                xn, yn = (2 * j + 1) / w - 1, (2 * i + 1) / h - 1
                xs = t[0, 0] * xn + t[0, 1] * yn + t[0, 2]
                ys = t[1, 0] * xn + t[1, 1] * yn + t[1, 2]
                ix, iy = ((xs + 1) * w - 1) / 2, ((ys + 1) * h - 1) / 2
                x0, y0 = math.floor(ix), math.floor(iy)
                for yy in (y0, y0 + 1):
                    for xx in (x0, x0 + 1):
                        if 0 <= yy < h and 0 <= xx < w:
                            out[b, i, j] += (1 - abs(iy - yy)) * (1 - abs(ix - xx)) * x[b, yy, xx]
    return out


# ---------------------------------------------------------------- parsing and errors

def test_parse_strategy():
    assert parse_strategy(FULL) == DSA_OPS
    assert parse_strategy("crop_flip") == ("crop", "flip")
    assert parse_strategy("") == () and parse_strategy("none") == () and parse_strategy("None") == ()


@pytest.mark.parametrize("bad", ["color_foo", "colour", "crop__flip", "crop_"])
def test_unknown_token_lists_choices(bad):
    with pytest.raises(ConfigError) as e:
        parse_strategy(bad)
    msg = str(e.value)
    assert "\n" not in msg and all(op in msg for op in DSA_OPS)
    with pytest.raises(ConfigError):
        dsa(jax.random.key(0), _images(0, 2), bad, per_sample=False)


def test_user_errors_are_ddjax_errors():
    x, k = _images(0, 2), jax.random.key(0)
    with pytest.raises(ConfigError, match="valid choices: S, M"):
        dsa(k, x, FULL, per_sample=False, mode="X")
    with pytest.raises(ConfigError, match="rank 4"):
        dsa(k, x[0], FULL, per_sample=False)
    with pytest.raises(ConfigError, match="bool"):
        dsa(k, x, FULL, per_sample=1)
    with pytest.raises(ConfigError, match="DSAParams"):
        dsa(k, x, FULL, per_sample=False, params={"prob_flip": 0.5})
    with pytest.raises(ConfigError, match="prob_flip"):
        DSAParams(prob_flip=1.5)
    with pytest.raises(DDJaxError):
        parse_strategy(None)
    with pytest.raises(ConfigError, match="valid choices"):
        apply_group(k, x, "zoom", per_sample=False)


def test_defaults_are_reference():
    p = DSAParams()
    assert (p.prob_flip, p.ratio_scale, p.ratio_rotate, p.ratio_crop_pad, p.ratio_cutout, p.brightness,
            p.saturation, p.contrast) == (0.5, 1.2, 15.0, 0.125, 0.5, 1.0, 2.0, 0.5)
    hash(p)  # usable as a static jit argument


@pytest.mark.parametrize("strategy", ["", "none", "None"])
@pytest.mark.parametrize("per_sample", [False, True])
def test_none_is_identity(strategy, per_sample):
    x = _images(1, 3)
    np.testing.assert_array_equal(np.asarray(dsa(jax.random.key(3), x, strategy, per_sample=per_sample)), x)


# ---------------------------------------------------------------- explicit-parameter ops vs numpy

def test_color_formulas():
    x = _images(2, 4)
    u = np.array([0.1, 0.5, 0.7, 0.95], np.float32)
    mc = x.mean(axis=3, keepdims=True)
    m = x.mean(axis=(1, 2, 3), keepdims=True)
    u4 = u[:, None, None, None]
    np.testing.assert_allclose(brightness(x, u, 1.0), x + (u4 - 0.5) * 1.0, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(brightness(x, 0.8, 1.0), x + 0.3, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(saturation(x, u, 2.0), (x - mc) * (u4 * 2.0) + mc, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(contrast(x, u, 0.5), (x - m) * (u4 + 0.5) + m, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(contrast(x, 0.2, 0.5), (x - m) * 0.7 + m, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("ty,tx", [(0, 0), (2, -3), (-2, 3), (1, 1), (-1, 0), (0, -2)])
def test_translate_vs_numpy(ty, tx):
    x = _images(3, 2)
    want = np_translate(x, ty, tx)
    np.testing.assert_array_equal(translate(x, ty, tx, max_shift=(SY, SX)), want)   # pad + dynamic_slice
    np.testing.assert_array_equal(translate(x, ty, tx), want)                        # default pad (H, W)
    np.testing.assert_array_equal(translate(x, jnp.full((2,), ty), jnp.full((2,), tx)), want)  # per image


def test_translate_per_image():
    x = _images(4, 3)
    ty, tx = np.array([2, -1, 0]), np.array([-3, 3, 1])
    got = np.asarray(translate(x, ty, tx))
    for b in range(3):
        np.testing.assert_array_equal(got[b], np_translate(x[b:b + 1], ty[b], tx[b])[0])


@pytest.mark.parametrize("oy,ox", [(6, 10), (0, 0), (12, 20), (3, 17), (11, 1)])
def test_cutout_vs_numpy(oy, ox):
    x = _images(5, 2)
    mask = np.ones((H, W), np.float32)
    r0, c0 = oy - CUT_H // 2, ox - CUT_W // 2
    mask[max(r0, 0):max(r0 + CUT_H, 0), max(c0, 0):max(c0 + CUT_W, 0)] = 0
    want = x * mask[None, :, :, None]
    np.testing.assert_array_equal(cutout(x, oy, ox, (CUT_H, CUT_W)), want)
    np.testing.assert_array_equal(cutout(x, np.array([oy, oy]), np.array([ox, ox]), (CUT_H, CUT_W)), want)
    if (oy, ox) == (6, 10):
        assert (np.asarray(cutout(x, oy, ox, (CUT_H, CUT_W))) == 0).all(-1)[0].sum() == CUT_H * CUT_W


def test_flip_vs_numpy():
    x = _images(6, 3)
    np.testing.assert_array_equal(flip(x, True), x[:, :, ::-1])
    np.testing.assert_array_equal(flip(x, False), x)
    got = np.asarray(flip(x, np.array([True, False, True])))
    np.testing.assert_array_equal(got, np.stack([x[0, :, ::-1], x[1], x[2, :, ::-1]]))


def test_affine_identity_and_rot90():
    x = _images(7, 2)
    ident = np.array([[1, 0, 0], [0, 1, 0]], np.float32)
    np.testing.assert_allclose(affine(x, ident), x, atol=1e-5)
    np.testing.assert_allclose(affine(x, np.stack([ident, ident])), x, atol=1e-5)
    np.testing.assert_allclose(scale(x, 1.0, 1.0), x, atol=1e-5)
    np.testing.assert_allclose(rotate(x, 0.0), x, atol=1e-5)
    sq = _images(8, 2, 9, 9)
    # [[0,-1,0],[1,0,0]]: output (i, j) reads source (j, W-1-i) = counter-clockwise np.rot90 (the reference's
    # "90: anticlockwise" convention); pixel centres map onto pixel centres so it is exact.
    rot = np.array([[0, -1, 0], [1, 0, 0]], np.float32)
    np.testing.assert_allclose(affine(sq, rot), np.rot90(sq, 1, axes=(1, 2)), atol=1e-5)
    np.testing.assert_allclose(rotate(sq, math.pi / 2), np.rot90(sq, 1, axes=(1, 2)), atol=1e-5)
    np.testing.assert_allclose(rotation_theta(0.3), [[math.cos(0.3), -math.sin(0.3), 0],
                                                     [math.sin(0.3), math.cos(0.3), 0]], atol=1e-6)


def test_affine_vs_numpy_bilinear():
    x = _images(9, 3)
    rng = np.random.default_rng(0)
    thetas = (np.eye(2, 3) + rng.uniform(-0.4, 0.4, (3, 2, 3))).astype(np.float32)
    np.testing.assert_allclose(affine(x, thetas[0]), np_affine(x, thetas[0]), atol=2e-5)   # shared
    np.testing.assert_allclose(affine(x, thetas), np_affine(x, thetas), atol=2e-5)         # per image


@pytest.mark.parametrize("sy,sx", [(1.2, 1 / 1.2), (0.9, 1.1), (1 / 1.2, 1.2)])
def test_scale_vs_numpy_bilinear(sy, sx):
    x = _images(10, 2)
    theta = np.array([[sx, 0, 0], [0, sy, 0]])
    np.testing.assert_allclose(scale(x, sy, sx), np_affine(x, theta), atol=2e-5)
    got = scale(x, np.array([sy, 1.0]), np.array([sx, 1.0]))
    np.testing.assert_allclose(got[0], np_affine(x[:1], theta)[0], atol=2e-5)
    np.testing.assert_allclose(got[1], x[1], atol=2e-5)
    mixed = scale(x, sy, np.array([sx, sx]))          # scalar sy with per-image sx broadcasts
    np.testing.assert_allclose(mixed, np_affine(x, theta), atol=2e-5)


@pytest.mark.parametrize("deg", [15.0, -15.0, 7.0])
def test_rotate_vs_numpy_bilinear(deg):
    x = _images(11, 2)
    a = deg / 180 * math.pi
    theta = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0]])
    np.testing.assert_allclose(rotate(x, a), np_affine(x, theta), atol=2e-5)
    np.testing.assert_allclose(rotate(x, np.array([a, -a]))[1], np_affine(x[1:], theta * [[1, -1, 1], [-1, 1, 1]])[0],
                               atol=2e-5)


# ---------------------------------------------------------------- dsa draws: reconstruct parameters

def _batched(strategy, x, keys, per_sample=False, mode="S"):
    return np.asarray(jax.jit(jax.vmap(lambda k: dsa(k, x, strategy, per_sample=per_sample, mode=mode)))(keys))


def test_dsa_crop_draws_reference_translation():
    x = _images(12, 4)
    out = _batched("crop", x, _keys(150))
    shifts = list(itertools.product(range(-SY, SY + 1), range(-SX, SX + 1)))
    cands = np.stack([np_translate(x, ty, tx) for ty, tx in shifts])        # (S, N, H, W, C)
    match = (out[:, None] == cands[None]).all(axis=(2, 3, 4, 5))            # whole batch, one shift
    assert (match.sum(1) == 1).all(), "each draw must be exactly one integer shift in the reference range"
    used = {shifts[i] for i in match.argmax(1)}
    assert {s[0] for s in used} == set(range(-SY, SY + 1)) and {s[1] for s in used} == set(range(-SX, SX + 1))


def test_dsa_cutout_draws_reference_rectangle():
    x = _images(13, 3)
    out = _batched("cutout", x, _keys(200))
    zero = out == 0
    assert (zero.all(-1) == zero.any(-1)).all()                    # whole pixels (all channels)
    z = zero[..., 0]
    assert (z == z[:, :1]).all()                                    # same cutout for every image in the batch
    z = z[:, 0]                                                     # (K, H, W)
    rows, cols = z.any(2), z.any(1)
    np.testing.assert_array_equal(z, rows[:, :, None] & cols[:, None, :])   # a rectangle
    nr, nc = rows.sum(1), cols.sum(1)
    assert nr.max() == CUT_H and nc.max() == CUT_W and nr.min() >= CUT_H // 2 and nc.min() >= CUT_W // 2
    # offsets span [0, H] for an even size, so both half-cut border strips occur (offset 0 and offset H)
    assert any(r[:CUT_H // 2].all() and r.sum() == CUT_H // 2 for r in rows)
    assert any(r[H - CUT_H // 2:].all() and r.sum() == CUT_H // 2 for r in rows)
    assert any(c[:CUT_W // 2].all() and c.sum() == CUT_W // 2 for c in cols)
    assert any(c[W - CUT_W // 2:].all() and c.sum() == CUT_W // 2 for c in cols)
    kept = np.broadcast_to(~z[:, None, :, :, None], out.shape)     # everything outside the rectangle is untouched
    np.testing.assert_array_equal(out[kept], np.broadcast_to(x, out.shape)[kept])


def test_dsa_flip_draws():
    x = _images(14, 3)
    out = _batched("flip", x, _keys(64))
    is_id = (out == x).all(axis=(1, 2, 3, 4))
    is_fl = (out == x[:, :, ::-1]).all(axis=(1, 2, 3, 4))
    assert (is_id ^ is_fl).all() and 16 < is_fl.sum() < 48


def _fit_color(x, y):
    """Least squares for y - M = k*s*(x - m_c) + k*(m_c - M) + b (brightness b, saturation s, contrast k)."""
    mc = x.mean(-1, keepdims=True)
    m = x.mean(axis=(-3, -2, -1), keepdims=True)
    a = np.stack([np.broadcast_to(v, x.shape).ravel() for v in (x - mc, mc - m, np.ones_like(x))], 1)
    coef, *_ = np.linalg.lstsq(a.astype(np.float64), (y - m).ravel().astype(np.float64), rcond=None)
    resid = np.abs(a @ coef - (y - m).ravel()).max()
    ks, k, b = coef
    return ks / k, k, b, resid


def test_dsa_color_draws_reference_ranges():
    x = _images(15, 4)
    out = _batched("color", x, _keys(40))
    fits = np.array([_fit_color(x, o) for o in out])             # one (s, k, b) for the whole batch
    s, k, b, resid = fits.T
    assert resid.max() < 1e-4
    assert (0 <= s).all() and (s <= 2).all() and (0.5 <= k).all() and (k <= 1.5).all()
    assert (-0.5 <= b).all() and (b <= 0.5).all()
    assert s.std() > 0.2 and k.std() > 0.1 and b.std() > 0.1


# ---------------------------------------------------------------- siamese property

@pytest.mark.parametrize("mode,num_keys", [("S", 24), ("M", 3)])
def test_siamese_same_key_same_transform(mode, num_keys):
    """Same key => same transform on batches of different sizes (5 = 3 + 2). Mode S over 24 keys draws every op
    group on its own (checked), so each op is tested individually; mode M chains all of them."""
    a, b = _images(16, 3), _images(17, 2)
    ab = np.concatenate([a, b])
    keys = _keys(num_keys, seed=7)
    if mode == "S":
        drawn = {int(select_group(k, len(DSA_OPS))[0]) for k in keys}
        assert drawn == set(range(len(DSA_OPS)))
    unchanged = 0
    for key in keys:
        f = lambda x: np.asarray(dsa(key, x, FULL, per_sample=False, mode=mode))
        y = f(ab)
        unchanged += np.allclose(y, ab)     # only an un-flipped "flip" draw leaves the batch as it was
        np.testing.assert_allclose(y[:3], f(a), atol=1e-5)
        np.testing.assert_allclose(y[3:], f(b), atol=1e-5)
    assert unchanged <= num_keys // 4


# ---------------------------------------------------------------- per-sample independence

def test_per_sample_flip_and_crop_differ_across_images():
    base = _images(20, 1)
    x = np.repeat(base, 64, axis=0)
    key = jax.random.key(11)
    fl = np.asarray(dsa(key, x, "flip", per_sample=True))
    n_flipped = (fl == base[:, :, ::-1]).all(axis=(1, 2, 3)).sum()
    n_same = (fl == base).all(axis=(1, 2, 3)).sum()
    assert n_flipped + n_same == 64 and 16 < n_flipped < 48
    cr = np.asarray(dsa(key, x, "crop", per_sample=True))
    shifts = list(itertools.product(range(-SY, SY + 1), range(-SX, SX + 1)))
    cands = np.stack([np_translate(base, ty, tx)[0] for ty, tx in shifts])
    match = (cr[:, None] == cands[None]).all(axis=(2, 3, 4))
    assert (match.sum(1) == 1).all()                              # each image: one valid reference shift
    assert len(set(match.argmax(1))) > 15                          # many different shifts across the batch
    for strategy in ("color", "cutout", "scale", "rotate"):
        y = np.asarray(dsa(key, x, strategy, per_sample=True))
        assert len({yi.tobytes() for yi in y}) > 32, strategy


def test_per_sample_is_not_siamese():
    x = np.repeat(_images(21, 1), 8, axis=0)
    y = np.asarray(dsa(jax.random.key(0), x, "rotate", per_sample=True))
    assert not np.allclose(y[0], y[1])


# ---------------------------------------------------------------- modes

def test_mode_s_draws_every_group_and_applies_it():
    tokens = parse_strategy(FULL)
    idx = np.asarray(jax.vmap(lambda k: select_group(k, len(tokens))[0])(_keys(600)))
    counts = np.bincount(idx, minlength=len(tokens))
    assert len(counts) == len(tokens) and counts.min() > 600 / len(tokens) * 0.6
    x = _images(22, 3)
    for per_sample, n in ((False, 10), (True, 3)):
        for key in _keys(n, seed=5):
            i, sub = select_group(key, len(tokens))
            want = apply_group(sub, x, tokens[int(i)], per_sample=per_sample)
            got = dsa(key, x, FULL, per_sample=per_sample, mode="S")
            np.testing.assert_allclose(got, want, atol=2e-5)


def test_mode_m_applies_every_group_in_order():
    x = _images(23, 3)
    key = jax.random.key(9)
    k1, k2, k3 = jax.random.split(key, 3)
    want = apply_group(k3, apply_group(k2, apply_group(k1, x, "flip", per_sample=False), "crop", per_sample=False),
                       "color", per_sample=False)
    np.testing.assert_allclose(dsa(key, x, "flip_crop_color", per_sample=False, mode="M"), want, atol=1e-6)


# ---------------------------------------------------------------- transformations of functions

@pytest.mark.parametrize("strategy", list(DSA_OPS))
@pytest.mark.parametrize("per_sample", [False, True])
def test_gradients_match_finite_differences(strategy, per_sample):
    """Each op is linear in the images for a fixed key, so a smooth loss gives exact directional derivatives."""
    x = jnp.asarray(_images(24, 2, 6, 8, 3))
    key = jax.random.key(2)
    loss = lambda x: jnp.sum(jnp.sin(dsa(key, x, strategy, per_sample=per_sample)))
    g = jax.grad(loss)(x)
    assert np.isfinite(np.asarray(g)).all() and np.abs(np.asarray(g)).sum() > 0
    rng = np.random.default_rng(0)
    for _ in range(3):
        v = jnp.asarray(rng.normal(size=x.shape).astype(np.float32))
        eps = 1e-2
        fd = (loss(x + eps * v) - loss(x - eps * v)) / (2 * eps)
        np.testing.assert_allclose(float(jnp.vdot(g, v)), float(fd), rtol=2e-2, atol=2e-2)


def test_gradient_full_strategy_finite_under_jit():
    x = jnp.asarray(_images(25, 4))
    for per_sample, mode in ((False, "S"), (True, "M")):
        loss = lambda x, k: jnp.sum(dsa(k, x, FULL, per_sample=per_sample, mode=mode) ** 2)
        g = jax.jit(jax.grad(loss))(x, jax.random.key(4))
        assert np.isfinite(np.asarray(g)).all() and np.abs(np.asarray(g)).sum() > 0


@pytest.mark.parametrize("per_sample", [False, True])
def test_jit_matches_eager_and_vmap_over_classes(per_sample):
    x = _images(26, 6).reshape(2, 3, H, W, C)       # (classes, n, H, W, C)
    keys = _keys(2, seed=13)
    f = lambda k, xc: dsa(k, xc, FULL, per_sample=per_sample, mode="S")
    vm = np.asarray(jax.jit(jax.vmap(f))(keys, x))   # vmap turns lax.switch into a select over all branches
    jf = jax.jit(f)                                  # key traced by an outer jit
    for c in range(2):
        eager = np.asarray(f(keys[c], x[c]))
        np.testing.assert_allclose(vm[c], eager, atol=1e-5)
        np.testing.assert_allclose(np.asarray(jf(keys[c], x[c])), eager, atol=1e-5)


def test_raw_uint32_keys_work():
    x = _images(27, 2)
    y = dsa(jax.random.PRNGKey(0), x, FULL, per_sample=False)
    assert y.shape == x.shape and y.dtype == jnp.float32
