"""k-means: centres of separated blobs, inertia vs scikit-learn on real features, masking, vmap over classes,
determinism, nearest-sample selection against numpy, and the one-line error for k > points."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
# scikit-learn is in the test extra (pip install -e '.[test]'): without it these oracle tests fail, never skip.
import sklearn.cluster as sklearn_cluster

from ddjax import cluster, data
from ddjax.errors import ConfigError


@functools.partial(jax.jit, static_argnames=("k",))
def _kmeans(key, x, k, mask=None):
    return cluster.kmeans(key, x, k, mask)


def _blobs(seed=0, k=4, per=50, d=3, spread=0.05):
    rng = np.random.default_rng(seed)
    centres = rng.uniform(-5, 5, size=(k, d))
    x = np.concatenate([c + spread * rng.normal(size=(per, d)) for c in centres]).astype(np.float32)
    return x, centres


def test_recovers_blob_centres():
    x, centres = _blobs()
    res = _kmeans(jax.random.PRNGKey(0), jnp.asarray(x), 4)
    found = np.asarray(res.centers)
    # each true centre has a found centre within the blob's noise
    dist = np.linalg.norm(centres[:, None] - found[None], axis=-1)
    assert np.all(dist.min(1) < 0.05)
    assert sorted(np.argmin(dist, 1).tolist()) == [0, 1, 2, 3]
    assert bool(res.converged) and 1 <= int(res.n_iter) < 100
    labels = np.asarray(res.labels)
    for b in range(4):  # points of one blob share one label
        assert len(set(labels[b * 50:(b + 1) * 50].tolist())) == 1
    # inertia equals its definition computed in numpy from the returned centres and labels
    np.testing.assert_allclose(res.inertia, np.sum((x - found[labels]) ** 2), rtol=1e-4)


def test_inertia_within_one_percent_of_scikit_learn_on_real_features():
    """Three digit classes of different sizes, padded to one shape with a mask (one compiled program, DREAM's
    layout), against scikit-learn on the unpadded rows."""
    ds = data.load_dataset("digits")
    classes = [ds.train_images[ds.train_labels == c].reshape(-1, 64).astype(np.float32) for c in (0, 3, 8)]
    n = max(len(f) for f in classes)
    padded = jnp.asarray(np.stack([np.pad(f, ((0, n - len(f)), (0, 0))) for f in classes]))
    mask = jnp.asarray(np.stack([np.arange(n) < len(f) for f in classes]))
    batched = jax.jit(jax.vmap(lambda k, x, m: cluster.kmeans(k, x, 10, m).inertia))
    ours = np.stack([np.asarray(batched(jax.random.split(jax.random.PRNGKey(s), 3), padded, mask))
                     for s in range(3)])  # (seeds, classes)
    for i, feats in enumerate(classes):
        theirs = [sklearn_cluster.KMeans(10, n_init=1, random_state=s).fit(feats).inertia_ for s in range(3)]
        assert np.mean(ours[:, i]) <= 1.01 * np.mean(theirs), (i, ours[:, i], theirs)


def test_mask_ignores_padded_rows():
    x, _ = _blobs(seed=1, k=3, per=30)
    # append far-away junk rows that a mask hides
    junk = np.full((20, 3), 100.0, np.float32)
    padded = jnp.asarray(np.concatenate([x, junk]))
    mask = jnp.arange(padded.shape[0]) < x.shape[0]
    res = _kmeans(jax.random.PRNGKey(2), padded, 3, mask)
    assert np.all(np.abs(np.asarray(res.centers)) < 10)  # no centre pulled towards the junk
    assert np.all(np.asarray(res.labels)[x.shape[0]:] == -1)
    plain = _kmeans(jax.random.PRNGKey(2), jnp.asarray(x), 3)
    np.testing.assert_allclose(res.inertia, plain.inertia, rtol=1e-4)
    idx = np.asarray(cluster.nearest_indices(padded, res.centers, 2, mask))
    assert idx.max() < x.shape[0]


def test_vmap_over_classes_equals_per_class_calls_and_is_deterministic():
    xs = np.stack([_blobs(seed=s, k=3, per=20)[0] for s in range(4)])
    keys = jax.random.split(jax.random.PRNGKey(5), 4)
    program = jax.jit(jax.vmap(lambda k, x: cluster.kmeans(k, x, 3)))
    batched = program(keys, jnp.asarray(xs))
    for c in range(4):
        single = _kmeans(keys[c], jnp.asarray(xs[c]), 3)
        np.testing.assert_allclose(batched.centers[c], single.centers, rtol=1e-5, atol=1e-5)
    again = program(keys, jnp.asarray(xs))
    np.testing.assert_array_equal(batched.centers, again.centers)


def test_nearest_indices_matches_numpy():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(40, 5)).astype(np.float32)
    centres = rng.normal(size=(6, 5)).astype(np.float32)
    got = np.asarray(cluster.nearest_indices(jnp.asarray(x), jnp.asarray(centres), 3))
    d2 = ((centres[:, None] - x[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(got, np.argsort(d2, axis=1)[:, :3])


def test_plusplus_picks_distinct_valid_points():
    x, _ = _blobs(seed=4, k=5, per=10)
    centres, idx = jax.jit(lambda k: cluster.kmeans_plusplus(k, jnp.asarray(x), 5))(jax.random.PRNGKey(0))
    assert len(set(np.asarray(idx).tolist())) == 5
    np.testing.assert_array_equal(centres, x[np.asarray(idx)])
    # greedy k-means++ on well separated blobs seeds one centre per blob
    assert len({int(i) // 10 for i in np.asarray(idx)}) == 5


def test_too_many_clusters_is_one_clear_line():
    with pytest.raises(ConfigError, match="asks for 5 clusters but only 4"):
        cluster.kmeans(jax.random.PRNGKey(0), jnp.zeros((4, 2)), 5)
    with pytest.raises(ConfigError, match=r"\(N, D\)"):
        cluster.kmeans(jax.random.PRNGKey(0), jnp.zeros((4,)), 2)
