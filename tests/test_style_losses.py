"""Style statistics (DD for DG eqs. 4-9) and SRe2L's BN-statistics loss against float64 numpy oracles written
loop by loop, their zeros and gradients (central differences of the numpy version)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ddjax import losses
from style_oracles import EPS, np_bn_loss, np_channel_style, np_domain_style, np_normalized_loss


@pytest.fixture(scope="module")
def maps():
    rng = np.random.default_rng(0)
    scale = rng.uniform(0.5, 3.0, size=(1, 1, 1, 6))  # channels on different scales, as in a ResNet
    return (rng.normal(size=(5, 4, 3, 6)) * scale + rng.normal(size=6)).astype(np.float32)


def test_channel_style_matches_numpy(maps):
    mu, sigma = losses.channel_style(jnp.asarray(maps))
    np_mu, np_sigma = np_channel_style(maps)
    np.testing.assert_allclose(mu, np_mu, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(sigma, np_sigma, rtol=1e-5, atol=1e-6)


def test_domain_style_is_mean_of_per_image_variances_not_batch_variance(maps):
    m, s = losses.domain_style(*losses.channel_style(jnp.asarray(maps)))
    np_m, np_s = np_domain_style(maps)
    np.testing.assert_allclose(m, np_m, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(s, np_s, rtol=1e-5, atol=1e-6)
    batch_var = maps.reshape(-1, maps.shape[-1]).var(0)  # includes the spread of the image means: larger
    assert np.all(batch_var + EPS > np.asarray(s) ** 2 - 1e-4)
    # chunking a domain: styles of two halves concatenated give the same domain style
    a, b = losses.channel_style(jnp.asarray(maps[:2])), losses.channel_style(jnp.asarray(maps[2:]))
    m2, s2 = losses.domain_style(jnp.concatenate([a[0], b[0]]), jnp.concatenate([a[1], b[1]]))
    np.testing.assert_allclose(m2, np_m, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(s2, np_s, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("normalize", [True, False])
def test_normalized_style_loss_matches_numpy_and_is_zero_at_target(maps, normalize):
    style = np_domain_style(maps[:2])
    target = np_domain_style(maps[2:])
    got = losses.normalized_style_loss(tuple(map(jnp.asarray, style)), tuple(map(jnp.asarray, target)),
                                       normalize=normalize)
    np.testing.assert_allclose(got, np_normalized_loss(style, target, normalize), rtol=1e-4)
    t32 = tuple(jnp.asarray(v, jnp.float32) for v in target)
    assert float(losses.normalized_style_loss(t32, t32)) == 0.0
    # normalising by the target's channel std: scaling the channels of both by k leaves the loss unchanged
    k = 7.0
    scaled = losses.normalized_style_loss(tuple(k * jnp.asarray(v) for v in style),
                                          tuple(k * jnp.asarray(v) for v in target))
    if normalize:
        np.testing.assert_allclose(scaled, got, rtol=1e-3)


def test_normalized_style_loss_gradient_matches_finite_differences(maps):
    target = tuple(map(np.asarray, np_domain_style(maps[2:])))
    x0 = maps[:2].astype(np.float64)

    def np_loss(x):
        return np_normalized_loss(np_domain_style(x), target)

    def jax_loss(x):
        return losses.normalized_style_loss(losses.set_style(x), tuple(map(jnp.asarray, target)))

    grad = np.asarray(jax.grad(jax_loss)(jnp.asarray(x0, jnp.float32)))
    rng = np.random.default_rng(1)
    for _ in range(4):
        idx = tuple(rng.integers(0, n) for n in x0.shape)
        h = 1e-4
        xp, xm = x0.copy(), x0.copy()
        xp[idx] += h
        xm[idx] -= h
        fd = (np_loss(xp) - np_loss(xm)) / (2 * h)
        np.testing.assert_allclose(grad[idx], fd, rtol=2e-2, atol=1e-4)


def test_bn_statistics_loss_matches_numpy_and_is_zero_at_own_statistics(maps):
    rng = np.random.default_rng(2)
    rm, rv = rng.normal(size=6), rng.uniform(0.5, 2.0, size=6)
    got = losses.bn_statistics_loss(jnp.asarray(maps), jnp.asarray(rm, jnp.float32), jnp.asarray(rv, jnp.float32))
    np.testing.assert_allclose(got, np_bn_loss(maps, rm, rv), rtol=1e-5)
    flat = maps.reshape(-1, 6).astype(np.float64)
    own = losses.bn_statistics_loss(jnp.asarray(maps), jnp.asarray(flat.mean(0), jnp.float32),
                                    jnp.asarray(flat.var(0), jnp.float32))
    assert float(own) < 1e-5
    # leading batch axes: one value per index
    stacked = losses.bn_statistics_loss(jnp.stack([maps, maps * 2]), jnp.asarray(rm, jnp.float32),
                                        jnp.asarray(rv, jnp.float32))
    assert stacked.shape == (2,)
    np.testing.assert_allclose(stacked[1], np_bn_loss(maps * 2, rm, rv), rtol=1e-5)


def test_style_losses_reject_bad_shapes():
    with pytest.raises(ValueError, match="NHWC"):
        losses.channel_style(jnp.zeros((3, 4)))
    with pytest.raises(ValueError, match="running_mean"):
        losses.bn_statistics_loss(jnp.zeros((2, 3, 3, 4)), jnp.zeros(5), jnp.ones(5))
    with pytest.raises(ValueError, match="equal C"):
        losses.normalized_style_loss((jnp.zeros(3), jnp.ones(3)), (jnp.zeros(4), jnp.ones(4)))
