"""Real-batch samplers (ddjax.algorithms.samplers): random batches, DREAM+'s representatives against an independent
k-means selection, the carry between re-clusterings, and the representative sampler inside distribution matching."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from ddjax import algorithms, cluster, models
from ddjax.algorithms import distribution_family as family, samplers
from ddjax.errors import ConfigError

K, SHAPE = 3, (8, 8, 1)


@pytest.fixture(scope="module")
def pool():
    rng = np.random.default_rng(0)
    per_class = (9, 12, 10)
    labels = np.concatenate([np.full(n, c) for c, n in enumerate(per_class)])
    images = (rng.normal(size=(len(labels),) + SHAPE) + 3 * labels[:, None, None, None]).astype(np.float32)
    return algorithms.make_real_pool(images, labels, K)


def _flat_embed(images):
    return images.reshape(images.shape[:2] + (-1,))


def test_random_real_is_sample_per_class(pool):
    s = samplers.random_real(5)
    key = jax.random.PRNGKey(1)
    batch, carry = s.sample(key, s.init(K, SHAPE), 0, _flat_embed, pool)
    np.testing.assert_array_equal(batch, algorithms.sample_per_class(key, pool, 5))
    assert carry == () and s.batch == 5


def test_representatives_match_an_independent_selection_and_persist(pool):
    s = samplers.representatives(4, subsample=2, interval=2, kmeans_iters=20)
    key = jax.random.PRNGKey(2)
    sample = jax.jit(s.sample, static_argnums=3)
    chosen, carry = sample(key, s.init(K, SHAPE), 0, _flat_embed, pool)
    assert chosen.shape == (K, 4) + SHAPE
    _, k_km = jax.random.split(key)
    kmeans = jax.jit(lambda kk, x, valid: cluster.kmeans(kk, x, 2, valid, max_iter=20).centers)  # one compile
    for c, kk in enumerate(jax.random.split(k_km, K)):  # k-means itself: tests/test_kmeans.py
        n = int(pool.counts[c])
        padded = pool.images[c].reshape(pool.images.shape[1], -1)
        centres = np.asarray(kmeans(kk, padded, jnp.arange(padded.shape[0]) < n))
        x = np.asarray(padded[:n])
        d2 = ((centres[:, None] - x[None]) ** 2).sum(-1)            # 2 centres, the 2 nearest valid images each
        want = x[np.argsort(d2, axis=1)[:, :2]]                     # (centre, 2, D)
        got = np.asarray(chosen[c]).reshape(2, 2, -1)
        for g, w in zip(got, want):  # a centre of two points is equidistant from both: compare as sets
            np.testing.assert_allclose(g[np.argsort(g[:, 0])], w[np.argsort(w[:, 0])], atol=1e-6)
    again, carry2 = sample(jax.random.PRNGKey(9), carry, 1, _flat_embed, pool)  # 1 % interval != 0: kept
    np.testing.assert_array_equal(again, chosen)
    np.testing.assert_array_equal(carry2, carry)
    with pytest.raises(ConfigError, match="multiple of subsample"):
        samplers.representatives(6, subsample=4)


def test_distribution_matching_takes_the_representative_sampler(pool):
    """DM's step with DREAM+'s sampler (the base of 'DREAM+ on distribution matching'): the real batch is the
    selection kept in ``state.extras``, real images of each class, re-selected every ``interval`` steps."""
    config = ml_collections.ConfigDict(dict(ipc=1, dsa_strategy="none"))
    hp = ml_collections.ConfigDict(dict(lr_img=1.0, momentum=0.5, batch_real=4))
    model = models.build_model("convnet", K, width=8, depth=1)
    algo = family.distribution_matching(config, hp, "dm", model, K, SHAPE, terms=(family.mean_embedding_term(),),
                                        sampler=samplers.representatives(4, interval=2, kmeans_iters=5))
    state = algo.init(jax.random.PRNGKey(0), algorithms.init_synthetic(jax.random.PRNGKey(1), pool, 1))
    step = jax.jit(algo.step)
    state1, metrics = step(state, pool)
    state2, _ = step(state1, pool)
    assert np.isfinite(float(metrics["loss"])) and float(metrics["loss_base"]) == float(metrics["loss"])
    chosen = np.asarray(state1.extras)
    assert chosen.shape == (K, 4) + SHAPE
    for c in range(K):
        real = np.asarray(pool.images[c, :int(pool.counts[c])]).reshape(int(pool.counts[c]), -1)
        assert all(np.any(np.all(real == row, axis=1)) for row in chosen[c].reshape(4, -1))
    np.testing.assert_array_equal(state2.extras, chosen)  # step 1: not a multiple of interval, selection kept
