"""Value checks for DREAM+'s representative matching and IDC/DREAM+'s network warm-up (issue 14 items 2 and 6):
re-clustering exactly every ``interval`` calls, the representatives being the real images nearest the k-means
centres of the current network's features."""
import jax
import jax.numpy as jnp
import numpy as np

from ddjax import cluster
from ddjax.algorithms import base, samplers

SHAPE = (4, 4, 1)


def _pool(per_class=(12, 9), seed=0):
    rng = np.random.default_rng(seed)
    labels = np.concatenate([np.full(n, c) for c, n in enumerate(per_class)])
    images = (rng.normal(size=(len(labels),) + SHAPE) + 3 * labels[:, None, None, None]).astype(np.float32)
    return images, labels, base.make_real_pool(images, labels, len(per_class))


def _projection(i):
    """A different random linear 'network' per call: the features the representatives must follow."""
    w = jax.random.normal(jax.random.PRNGKey(100 + i), (int(np.prod(SHAPE)), 3))
    return lambda x: x.reshape(x.shape[:2] + (-1,)) @ w


def test_representatives_are_reselected_exactly_every_interval_calls():
    _, _, real = _pool()
    sampler = samplers.representatives(4, subsample=2, interval=3, kmeans_iters=20)
    carry = sampler.init(2, SHAPE)
    sample = jax.jit(sampler.sample, static_argnums=3)
    batches = []
    for i in range(7):
        key = jax.random.PRNGKey(i)
        batch, carry = sample(key, carry, i, _projection(i), real)
        batches.append(np.asarray(batch))
        if i % 3 == 0:   # a fresh selection with this call's features (DREAM: ot % interval == 0)
            expected = samplers.select_representatives(key, _projection(i), real, 2, 2, kmeans_iters=20)
            np.testing.assert_array_equal(batch, expected)
        else:            # kept until the next clustering
            np.testing.assert_array_equal(batch, batches[i - 1])
    assert not np.array_equal(batches[0], batches[3])


def test_representatives_are_the_real_images_nearest_each_kmeans_centre():
    images, labels, real = _pool()
    key = jax.random.PRNGKey(3)
    embed = _projection(0)
    got = np.asarray(samplers.select_representatives(key, embed, real, 3, 2, kmeans_iters=50))
    assert got.shape == (2, 6) + SHAPE
    k_km = jax.random.split(key)[1]
    all_feats = embed(real.images)                     # (K, M, D), padded classes masked below
    for c, kk in zip(range(2), jax.random.split(k_km, 2)):
        n = int(real.counts[c])
        mask = jnp.arange(real.images.shape[1]) < n
        res = cluster.kmeans(kk, all_feats[c], 3, mask, max_iter=50)
        feats = np.asarray(all_feats[c, :n], np.float64)
        members = images[labels == c]
        for j, centre in enumerate(np.asarray(res.centers, np.float64)):  # oracle: the 2 members nearest centre j
            order = np.argsort(np.linalg.norm(feats - centre, axis=1), kind="stable")[:2]
            np.testing.assert_allclose(got[c, 2 * j:2 * j + 2], members[order], rtol=1e-6)
