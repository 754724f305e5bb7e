"""DM: loss against numpy, per-class sampling, the step's update against an independent per-class computation,
finite differences, and 1-vs-8-device equality."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from ddjax import algorithms, losses, models
from ddjax.algorithms import dm
from ddjax.errors import ConfigError
from ddjax.sharding import batch_splitter, jit_step, make_mesh, replicate
from step_checks import assert_step_gradient_matches_fd

K, IPC, SHAPE = 3, 2, (8, 8, 1)


def _config(strategy="none", batch_real=8, lr_img=1.0):
    c = ml_collections.ConfigDict(dict(algorithm="dm", ipc=IPC, dsa_strategy=strategy))
    c.dm = dm.default_config()
    c.dm.batch_real = batch_real
    c.dm.lr_img = lr_img
    return c


def _pool(seed=0, per_class=(10, 12, 9)):
    rng = np.random.default_rng(seed)
    labels = np.concatenate([np.full(n, c) for c, n in enumerate(per_class)])
    images = (rng.normal(size=(len(labels),) + SHAPE) + labels[:, None, None, None]).astype(np.float32)
    return images, labels, algorithms.make_real_pool(images, labels, K)


def _model():
    return models.build_model("convnet", K, width=8, depth=2)


def test_mean_embedding_distance_matches_numpy():
    rng = np.random.default_rng(0)
    r, s = rng.normal(size=(7, 5)), rng.normal(size=(3, 5))
    expected = np.sum((r.mean(0) - s.mean(0)) ** 2)
    np.testing.assert_allclose(losses.mean_embedding_distance(jnp.asarray(r), jnp.asarray(s)), expected, rtol=1e-6)
    rb, sb = rng.normal(size=(4, 7, 5)), rng.normal(size=(4, 3, 5))
    per = [np.sum((rb[c].mean(0) - sb[c].mean(0)) ** 2) for c in range(4)]
    np.testing.assert_allclose(losses.mean_embedding_distance_per_class(rb, sb), sum(per), rtol=1e-6)
    assert float(losses.mean_embedding_distance(jnp.asarray(r), jnp.asarray(r))) == 0.0
    with pytest.raises(ValueError, match="agree"):
        losses.mean_embedding_distance(jnp.zeros((3, 4)), jnp.zeros((3, 5)))


def test_make_real_pool_groups_by_class_and_rejects_empty_class():
    images, labels, pool = _pool()
    np.testing.assert_array_equal(pool.counts, [10, 12, 9])
    for c in range(K):
        np.testing.assert_array_equal(pool.images[c, :pool.counts[c]], images[labels == c])
    with pytest.raises(ConfigError, match=r"classes \[2\]"):
        algorithms.make_real_pool(images[labels < 2], labels[labels < 2], K)


def test_sample_per_class_draws_distinct_images_of_the_right_class():
    images, labels, pool = _pool()
    batch = np.asarray(algorithms.sample_per_class(jax.random.PRNGKey(3), pool, 9))
    assert batch.shape == (K, 9) + SHAPE
    for c in range(K):
        own = images[labels == c].reshape(int((labels == c).sum()), -1)
        rows = batch[c].reshape(9, -1)
        idx = [int(np.flatnonzero((own == r).all(1))[0]) for r in rows]  # every row is a real image of class c
        assert len(set(idx)) == 9  # without replacement (9 <= smallest class)
    # a batch larger than a class cycles through its permutation: class 2 has 9 images
    big = np.asarray(algorithms.sample_per_class(jax.random.PRNGKey(3), pool, 18))
    np.testing.assert_array_equal(big[2, :9], big[2, 9:])


def test_init_synthetic_real_and_errors():
    _, _, pool = _pool()
    syn = algorithms.init_synthetic(jax.random.PRNGKey(0), pool, IPC)
    assert syn.images.shape == (K * IPC,) + SHAPE
    np.testing.assert_array_equal(syn.labels, np.repeat(np.arange(K), IPC))
    with pytest.raises(ConfigError, match="smallest class"):
        algorithms.init_synthetic(jax.random.PRNGKey(0), pool, 10)
    with pytest.raises(ConfigError, match="ipc must be >= 1"):
        algorithms.init_synthetic(jax.random.PRNGKey(0), pool, 0)
    with pytest.raises(ConfigError, match="real, noise"):
        algorithms.init_synthetic(jax.random.PRNGKey(0), pool, 1, init="zeros")


def test_dm_step_equals_independent_per_class_computation():
    """Rebuild the step from its definition with a Python loop over classes (no augmentation) and compare."""
    _, _, pool = _pool()
    model, config = _model(), _config(lr_img=0.5)
    algo = dm.make(config, model, K, SHAPE)
    syn = algorithms.init_synthetic(jax.random.PRNGKey(1), pool, IPC)
    state = algo.init(jax.random.PRNGKey(2), syn)
    new_state, metrics = jax.jit(algo.step)(state, pool)

    # the same random draws as the step
    _, k_net, k_real, _ = jax.random.split(state.rng, 4)
    variables = models.init_model(model, k_net, SHAPE)
    real = algorithms.sample_per_class(k_real, pool, config.dm.batch_real)

    def embed(x):
        return models.apply_model(model, variables, x, train=True, output="embed")[0]

    def loss(images):
        total = 0.0
        for c in range(K):
            total += jnp.sum((embed(real[c]).mean(0) - embed(images[c * IPC:(c + 1) * IPC]).mean(0)) ** 2)
        return total

    expected_loss, grads = jax.value_and_grad(loss)(syn.images)
    np.testing.assert_allclose(metrics["loss"], expected_loss, rtol=1e-5)
    # first SGD step: momentum buffer starts at the gradient, update = -lr * g
    np.testing.assert_allclose(new_state.synthetic.images, syn.images - 0.5 * grads, rtol=1e-5, atol=1e-6)
    assert int(new_state.step) == 1
    assert not np.array_equal(new_state.rng, state.rng)


def test_dm_gradient_matches_finite_differences():
    _, _, pool = _pool()
    model = _model()
    algo = dm.make(_config(lr_img=1.0), model, K, SHAPE)
    syn = algorithms.init_synthetic(jax.random.PRNGKey(1), pool, IPC)
    state = algo.init(jax.random.PRNGKey(2), syn)
    assert_step_gradient_matches_fd(jax.jit(algo.step), state, pool, directions=3)


def test_dm_with_dsa_is_siamese_and_deterministic():
    _, _, pool = _pool()
    algo = dm.make(_config(strategy="color_crop_cutout_flip_scale_rotate"), _model(), K, SHAPE)
    state = algo.init(jax.random.PRNGKey(2), algorithms.init_synthetic(jax.random.PRNGKey(1), pool, IPC))
    a, ma = jax.jit(algo.step)(state, pool)
    b, mb = jax.jit(algo.step)(state, pool)
    np.testing.assert_array_equal(a.synthetic.images, b.synthetic.images)
    assert np.isfinite(float(ma["loss"])) and float(ma["loss"]) > 0


def test_dm_step_same_on_one_and_eight_devices():
    """batch_real=12 over 8 devices: split unevenly (XLA pads to 2 rows a device), the same result."""
    assert jax.device_count() == 8, "conftest sets 8 simulated CPU devices"
    _, _, pool = _pool(per_class=(20, 18, 17))
    model = _model()
    results = []
    for devices in (jax.devices()[:1], jax.devices()):
        mesh = make_mesh(devices)
        algo = dm.make(_config(strategy="color_crop_cutout_flip_scale_rotate", batch_real=12), model, K, SHAPE,
                       mesh=mesh)
        state = algo.init(jax.random.PRNGKey(2), algorithms.init_synthetic(jax.random.PRNGKey(1), pool, IPC))
        state, real = replicate(state, mesh), replicate(pool, mesh)
        step = jit_step(algo.step, mesh, donate=False)   # the launcher's jit
        for _ in range(3):
            state, metrics = step(state, real)
        assert state.synthetic.images.sharding.is_fully_replicated and step._cache_size() == 1
        results.append((np.asarray(state.synthetic.images), float(metrics["loss"])))
    np.testing.assert_allclose(results[0][0], results[1][0], atol=1e-5)
    np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-5)


def _dm_step_flops_per_device(mesh) -> float:
    """XLA's FLOPs per device of one compiled DM step with DSA, a large real batch (64 a class) and IPC 1."""
    _, _, pool = _pool(per_class=(70, 70, 70))
    config = _config(strategy="color_crop_cutout_flip_scale_rotate", batch_real=64)
    config.ipc = 1
    algo = dm.make(config, _model(), K, SHAPE, mesh=mesh)
    state = algo.init(jax.random.PRNGKey(2), algorithms.init_synthetic(jax.random.PRNGKey(1), pool, 1))
    if mesh is not None:
        state, pool = replicate(state, mesh), replicate(pool, mesh)
    cost = jit_step(algo.step, mesh, donate=False).lower(state, pool).compile().cost_analysis()
    return float((cost[0] if isinstance(cost, (list, tuple)) else cost)["flops"])


def test_dm_real_batch_with_dsa_splits_over_eight_devices(monkeypatch):
    """Issue 15: the real batch's per-class DSA ran after the batch was split, so XLA gathered the batch for it and
    each of 8 devices embedded most of it (docs/scaling.md "Weak scaling": 35.8 GFLOP per device at 8 devices
    against 13.6 at 1, same work per device). Augmenting first and splitting the augmented batch leaves each device
    about 1/8 of the real embedding."""
    from ddjax.algorithms import distribution_family
    monkeypatch.setattr(distribution_family, "REAL_CHUNK", 10 ** 6)   # one pass: XLA counts a loop body once
    one, eight = _dm_step_flops_per_device(None), _dm_step_flops_per_device(make_mesh())
    assert eight < 0.3 * one, (eight, one)


def test_jit_step_keeps_the_state_replicated_so_the_step_compiles_once():
    """A step whose new state XLA would leave split over ``data`` (here: forced by the batch rule; DM's synthetic
    images at CIFAR size on 2 devices did this): plain ``jax.jit`` hands back a split state, whose next call needs
    a second program; ``sharding.jit_step`` keeps it replicated and compiles once."""
    mesh = make_mesh()
    split = batch_splitter(mesh)

    def step(state, data):
        new = split(state * 2.0 + data)
        return new, {"loss": new.sum()}

    state, data = replicate(jnp.ones((16, 3)), mesh), replicate(jnp.ones((16, 3)), mesh)
    plain = jax.jit(step)
    assert not plain(state, data)[0].sharding.is_fully_replicated   # what the launcher's jit had to prevent
    pinned = jit_step(step, mesh, donate=False)
    for _ in range(3):
        state, metrics = pinned(state, data)
        assert state.sharding.is_fully_replicated and metrics["loss"].sharding.is_fully_replicated
    assert pinned._cache_size() == 1
    np.testing.assert_allclose(np.asarray(state), 15.0)   # 1 -> 3 -> 7 -> 15


def test_dm_bad_config():
    with pytest.raises(ConfigError, match="dm.batch_real=6 is smaller than the 8 devices"):
        dm.make(_config(batch_real=6), _model(), K, SHAPE, mesh=make_mesh())
    with pytest.raises(ConfigError, match="valid"):
        dm.make(_config(strategy="color_blur"), _model(), K, SHAPE)
    with pytest.raises(ConfigError, match="batch_real"):
        dm.make(_config(batch_real=0), _model(), K, SHAPE)
    algo = dm.make(_config(), _model(), K, SHAPE)
    with pytest.raises(ConfigError, match="expected"):
        algo.init(jax.random.PRNGKey(0), algorithms.SyntheticSet(jnp.zeros((5,) + SHAPE), jnp.zeros(5, jnp.int32)))


def test_real_features_in_chunks_equal_the_whole_batch_and_skip_batch_norm(monkeypatch):
    """``distribution_family.chunked`` on 3 × 8 images: the chunk is the largest divisor of K·n up to the limit
    (8 → 8, 16 → 12), the whole batch when that divisor is below ``MIN_REAL_CHUNK`` (here 6: limit 5 → 4) or
    the net has batch norm; the embeddings equal one pass over the whole batch."""
    from ddjax.algorithms import distribution_family as fam
    monkeypatch.setattr(fam, "MIN_REAL_CHUNK", 6)
    seen = []

    def recording(model):
        plain = fam.embeddings(model)

        def features(variables, images):
            seen.append(images.shape[:2])   # once per call: lax.map traces its body once
            return plain(variables, images)
        return features

    images = jnp.asarray(np.random.default_rng(0).normal(size=(3, 8) + SHAPE), jnp.float32)
    for norm, limit, chunk in (("instance", 8, (1, 8)), ("instance", 16, (1, 12)), ("instance", 5, (3, 8)),
                               ("batch", 8, (3, 8))):
        model = models.build_model("convnet", K, width=8, depth=2, norm=norm)
        variables = models.init_model(model, jax.random.PRNGKey(0), SHAPE)
        seen.clear()
        out = fam.chunked(recording(model), limit)(variables, images)
        assert seen == [chunk], (norm, limit, seen)
        np.testing.assert_allclose(out.embed, fam.embeddings(model)(variables, images).embed, rtol=1e-5, atol=1e-6)
