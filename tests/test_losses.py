"""Public losses: each against an independent float64 numpy implementation, their properties (symmetry, zero,
positivity), gradients against central differences of the numpy version, jit/vmap/per-class forms, one-line errors,
and the code blocks of docs/losses.md executed as written."""
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ddjax import losses
from ddjax.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ----------------------------------------------------------------------------- independent numpy versions


def np_sqdist(a, b):
    return np.array([[np.sum((ai - bj) ** 2) for bj in b] for ai in a])


def np_median_sigma(x, y):
    z = np.concatenate([x, y])
    d = [np.sum((z[i] - z[j]) ** 2) for i in range(len(z)) for j in range(i + 1, len(z))]
    return np.sqrt(np.median(d))


def np_mmd(x, y, sigmas, unbiased=False):
    def k(a, b):
        d = np_sqdist(a, b)
        return sum(np.exp(-d / (2 * s * s)) for s in sigmas)

    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    n, m = len(x), len(y)
    if unbiased:
        exx = (kxx.sum() - np.trace(kxx)) / (n * (n - 1))
        eyy = (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    else:
        exx, eyy = kxx.mean(), kyy.mean()
    return exx + eyy - 2 * kxy.mean()


def np_cov(maps):
    b, h, w, c = maps.shape
    x = maps.reshape(b, h * w, c)
    mean = x.mean(0)
    return sum((x[i] - mean).T @ (x[i] - mean) for i in range(b)) / b


def np_cc(e, alpha, beta, form):
    d = np.sum((e - e.mean(0)) ** 2, axis=1)
    if form == "squared":
        return d.sum()
    return np.sum(np.maximum(0.0, np.exp(alpha * d) - beta))


def _rand(seed, *shape):
    return np.random.default_rng(seed).normal(size=shape)


def _fd_grad(f, x, eps=1e-6):
    """Central differences of a float64 numpy function, every coordinate."""
    g = np.zeros_like(x)
    for idx in np.ndindex(*x.shape):
        e = np.zeros_like(x)
        e[idx] = eps
        g[idx] = (f(x + e) - f(x - e)) / (2 * eps)
    return g


def _f32(a):
    return jnp.asarray(a, jnp.float32)


# ------------------------------------------------------------------------------------------ mean embedding


def test_mean_embedding_distance_matches_numpy_with_leading_axes():
    r, s = _rand(0, 3, 7, 5), _rand(1, 3, 4, 5)
    expected = [np.sum((r[c].mean(0) - s[c].mean(0)) ** 2) for c in range(3)]
    np.testing.assert_allclose(losses.mean_embedding_distance(_f32(r), _f32(s)), expected, rtol=1e-5)
    np.testing.assert_allclose(losses.mean_embedding_distance_per_class(_f32(r), _f32(s)), sum(expected), rtol=1e-5)
    g = jax.grad(lambda y: losses.mean_embedding_distance(_f32(r[0]), y))(_f32(s[0]))
    fd = _fd_grad(lambda y: np.sum((r[0].mean(0) - y.mean(0)) ** 2), s[0])
    np.testing.assert_allclose(g, fd, rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------------------------------------------- MMD


@pytest.mark.parametrize("unbiased", [False, True])
def test_gaussian_mmd_matches_numpy(unbiased):
    x, y = _rand(2, 6, 4), _rand(3, 5, 4) + 0.5
    sigmas = (0.7, 1.5, 3.0)
    got = losses.gaussian_mmd(_f32(x), _f32(y), sigmas, unbiased=unbiased)
    np.testing.assert_allclose(got, np_mmd(x, y, sigmas, unbiased), rtol=1e-4, atol=1e-6)
    # default bandwidths: (0.5, 1, 2) x the median heuristic of the pooled set
    med = np_median_sigma(x, y)
    np.testing.assert_allclose(losses.median_bandwidth(_f32(x), _f32(y)), med, rtol=1e-5)
    np.testing.assert_allclose(losses.gaussian_mmd(_f32(x), _f32(y), unbiased=unbiased),
                               np_mmd(x, y, [0.5 * med, med, 2 * med], unbiased), rtol=1e-4, atol=1e-6)


def test_gaussian_mmd_properties():
    x, y = _f32(_rand(4, 6, 3)), _f32(_rand(5, 4, 3) * 2.0)
    sig = (1.0, 2.0)
    assert float(losses.gaussian_mmd(x, x, sig)) == pytest.approx(0.0, abs=1e-6)
    assert float(losses.gaussian_mmd(x, x)) == pytest.approx(0.0, abs=1e-6)
    np.testing.assert_allclose(losses.gaussian_mmd(x, y, sig), losses.gaussian_mmd(y, x, sig), rtol=1e-6)
    assert float(losses.gaussian_mmd(x, y, sig)) > 0          # biased: a squared RKHS norm
    far = losses.gaussian_mmd(x, y + 10.0, sig)
    assert float(far) > float(losses.gaussian_mmd(x, y, sig))  # moving y away increases the discrepancy
    # one sample per set is fine for the biased statistic (IPC 1)
    assert np.isfinite(float(losses.gaussian_mmd(x[:1], y[:1], sig)))


def test_gaussian_mmd_gradient_matches_finite_differences():
    x, y = _rand(6, 5, 3), _rand(7, 3, 3) + 0.3
    sigmas = (0.8, 2.0)
    for unbiased in (False, True):
        g = jax.grad(lambda b: losses.gaussian_mmd(_f32(x), b, sigmas, unbiased=unbiased))(_f32(y))
        fd = _fd_grad(lambda b: np_mmd(x, b, sigmas, unbiased), y)
        np.testing.assert_allclose(g, fd, rtol=2e-3, atol=1e-5)
    # with the median heuristic the bandwidth is a constant of the gradient (stop_gradient)
    med = np_median_sigma(x, y)
    g = jax.grad(lambda b: losses.gaussian_mmd(_f32(x), b))(_f32(y))
    fd = _fd_grad(lambda b: np_mmd(x, b, [0.5 * med, med, 2 * med]), y)
    np.testing.assert_allclose(g, fd, rtol=2e-3, atol=1e-5)


def test_gaussian_mmd_finite_and_differentiable_when_sets_coincide():
    x = _f32(_rand(8, 4, 3))
    for sigmas in (None, (1.0,)):
        g = jax.grad(lambda a: losses.gaussian_mmd(a, x, sigmas))(x)
        assert np.all(np.isfinite(g)) and float(jnp.max(jnp.abs(g))) < 1e-4  # a minimum: zero gradient
    same = jnp.ones((3, 2))  # every point equal: median 0, floored
    assert np.isfinite(float(losses.gaussian_mmd(same, same)))
    assert np.all(np.isfinite(jax.grad(lambda a: losses.gaussian_mmd(a, same))(same)))


def test_gaussian_mmd_per_class_vmap_jit_and_per_class_bandwidths():
    r, s = _rand(9, 3, 6, 4), _rand(10, 3, 2, 4)
    per = [np_mmd(r[c], s[c], [0.5 * m, m, 2 * m]) for c in range(3) for m in [np_median_sigma(r[c], s[c])]]
    np.testing.assert_allclose(losses.gaussian_mmd(_f32(r), _f32(s)), per, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(jax.jit(losses.gaussian_mmd_per_class)(_f32(r), _f32(s)), sum(per), rtol=1e-4)
    np.testing.assert_allclose(jax.vmap(losses.gaussian_mmd)(_f32(r), _f32(s)), per, rtol=1e-4, atol=1e-6)
    sig = np.array([[1.0, 2.0], [0.5, 1.0], [3.0, 4.0]])  # (K, S): one pair of bandwidths per class
    np.testing.assert_allclose(losses.gaussian_mmd(_f32(r), _f32(s), _f32(sig)),
                               [np_mmd(r[c], s[c], sig[c]) for c in range(3)], rtol=1e-4, atol=1e-6)


def test_gaussian_mmd_errors():
    x = jnp.zeros((4, 3))
    with pytest.raises(ConfigError, match="> 0"):
        losses.gaussian_mmd(x, x, (1.0, 0.0))
    with pytest.raises(ConfigError, match="> 0"):
        losses.gaussian_mmd(x, x, (-1.0,))
    with pytest.raises(ConfigError, match="empty"):
        losses.gaussian_mmd(x, x, ())
    with pytest.raises(ConfigError, match="unbiased=False"):
        losses.gaussian_mmd(x, x[:1], unbiased=True)
    with pytest.raises(ValueError, match="agree"):
        losses.gaussian_mmd(x, jnp.zeros((4, 5)))
    with pytest.raises(ValueError, match="at least one sample"):
        losses.gaussian_mmd(x, jnp.zeros((0, 3)))


# -------------------------------------------------------------------------------------------- covariance


def test_feature_covariance_matches_numpy_and_is_psd():
    maps = _rand(11, 5, 3, 2, 4)
    cov = np.asarray(losses.feature_covariance(_f32(maps)))
    np.testing.assert_allclose(cov, np_cov(maps), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(cov, cov.T, atol=1e-5)
    assert np.linalg.eigvalsh(cov).min() > -1e-4
    # leading class axis
    stack = _rand(12, 2, 5, 3, 2, 4)
    np.testing.assert_allclose(losses.feature_covariance(_f32(stack)), [np_cov(m) for m in stack], rtol=1e-4,
                               atol=1e-5)
    # one sample: zero covariance (IID at IPC 1)
    np.testing.assert_allclose(losses.feature_covariance(_f32(maps[:1])), 0.0, atol=1e-7)
    with pytest.raises(ValueError, match="B, H, W, C"):
        losses.feature_covariance(jnp.zeros((5, 4)))


def test_covariance_matching_matches_numpy_properties_and_gradient():
    real, syn = _rand(13, 6, 2, 2, 3), _rand(14, 3, 2, 2, 3)
    expected = np.sum((np_cov(syn) - np_cov(real)) ** 2)
    np.testing.assert_allclose(losses.covariance_matching(_f32(real), _f32(syn)), expected, rtol=1e-4)
    np.testing.assert_allclose(losses.covariance_matching(_f32(real), _f32(syn)),
                               losses.covariance_matching(_f32(syn), _f32(real)), rtol=1e-6)
    assert float(losses.covariance_matching(_f32(real), _f32(real))) == pytest.approx(0.0, abs=1e-8)
    # spatial sizes may differ; only C x C is compared
    assert losses.covariance_matching(_f32(real), _f32(_rand(15, 3, 1, 1, 3))).shape == ()
    g = jax.grad(lambda s: losses.covariance_matching(_f32(real), s))(_f32(syn))
    fd = _fd_grad(lambda s: np.sum((np_cov(s) - np_cov(real)) ** 2), syn)
    np.testing.assert_allclose(g, fd, rtol=2e-3, atol=1e-4)
    # per class: sum over the leading axis
    r2, s2 = _rand(16, 2, 6, 2, 2, 3), _rand(17, 2, 3, 2, 2, 3)
    np.testing.assert_allclose(losses.covariance_matching_per_class(_f32(r2), _f32(s2)),
                               sum(np.sum((np_cov(s2[c]) - np_cov(r2[c])) ** 2) for c in range(2)), rtol=1e-4)
    with pytest.raises(ValueError, match="channel"):
        losses.covariance_matching(_f32(real), jnp.zeros((3, 2, 2, 4)))


# ---------------------------------------------------------------------------------------- centralization


@pytest.mark.parametrize("form,alpha,beta", [("exp", 0.3, 1.5), ("exp", 0.1, 0.0), ("squared", 1.0, 0.0)])
def test_class_centralization_matches_numpy_and_gradient(form, alpha, beta):
    e = _rand(18, 4, 3)
    np.testing.assert_allclose(losses.class_centralization(_f32(e), alpha, beta, form), np_cc(e, alpha, beta, form),
                               rtol=1e-5)
    g = jax.grad(lambda a: losses.class_centralization(a, alpha, beta, form))(_f32(e))
    fd = _fd_grad(lambda a: np_cc(a, alpha, beta, form), e)
    np.testing.assert_allclose(g, fd, rtol=1e-3, atol=1e-5)
    stack = _rand(19, 3, 4, 3)
    np.testing.assert_allclose(losses.class_centralization_per_class(_f32(stack), alpha, beta, form),
                               sum(np_cc(s, alpha, beta, form) for s in stack), rtol=1e-5)


def test_class_centralization_properties_and_errors():
    same = jnp.ones((5, 3))
    assert float(losses.class_centralization(same, form="squared")) == 0.0
    # exp: exp(0) = 1 per sample, so beta >= 1 switches a collapsed class off entirely
    assert float(losses.class_centralization(same, 0.5, 1.0)) == 0.0
    assert float(losses.class_centralization(same, 0.5, 0.0)) == pytest.approx(5.0)
    # one sample per class (IPC 1): zero gradient in both forms
    one = _f32(_rand(20, 1, 3))
    for form in ("exp", "squared"):
        np.testing.assert_array_equal(jax.grad(lambda a: losses.class_centralization(a, 0.2, 0.0, form))(one), 0.0)
    spread = _f32(_rand(21, 5, 3))
    assert float(losses.class_centralization(2 * spread, form="squared")) > float(
        losses.class_centralization(spread, form="squared"))
    with pytest.raises(ConfigError, match="exp, squared"):
        losses.class_centralization(spread, form="cosine")
    with pytest.raises(ConfigError, match="alpha"):
        losses.class_centralization(spread, alpha=-1.0)


# ------------------------------------------------------------------------------------- docs stay runnable


def test_docs_losses_code_blocks_run():
    """Every ```python block of docs/losses.md, executed in order in one namespace (examples assert their claims)."""
    with open(os.path.join(ROOT, "docs", "losses.md"), encoding="utf-8") as f:
        blocks = re.findall(r"```python\n(.*?)```", f.read(), flags=re.S)
    assert len(blocks) >= 5, "docs/losses.md should show one example per loss"
    namespace: dict = {}
    for i, block in enumerate(blocks):
        try:
            exec(compile(block, f"docs/losses.md block {i}", "exec"), namespace)
        except Exception as e:  # pragma: no cover - the message names the block
            raise AssertionError(f"docs/losses.md python block {i} failed: {type(e).__name__}: {e}") from e
