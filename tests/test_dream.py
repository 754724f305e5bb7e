"""DREAM+: cluster initialisation against an independent k-means selection, representative matching batches,
the bidirectional loss, the IDC base, and one-line errors (too few images per class, unknown base)."""
import jax
import ml_collections
import numpy as np
import pytest

from ddjax import algorithms, cluster, models
from ddjax.algorithms import dream
from ddjax.errors import ConfigError
from ddjax.sharding import make_mesh, replicate

K, SHAPE = 3, (8, 8, 1)


def _config(base="dc", ipc=1, **hp):
    c = ml_collections.ConfigDict(dict(algorithm="dream", ipc=ipc, dsa_strategy="none"))
    c.dream = dream.default_config()
    c.dream.base = base
    for k, v in hp.items():
        if k in ("interval", "subsample", "feature_weight", "init", "cluster_pool", "representative"):
            c.dream[k] = v
        else:
            c.dream[base][k] = v
    return c


def _pool(per_class=(24, 20, 22)):
    rng = np.random.default_rng(0)
    labels = np.concatenate([np.full(n, c) for c, n in enumerate(per_class)])
    images = (rng.normal(size=(len(labels),) + SHAPE) + labels[:, None, None, None]).astype(np.float32)
    return algorithms.make_real_pool(images, labels, K)


def _model():
    return models.build_model("convnet", K, width=8, depth=2)


def test_kmeans_init_and_bidirectional_loss():
    """One round of DREAM+ (DC base) with and without the feature term, lr_img ~ 0 so the returned set is the
    cluster initialisation: it equals an independent k-means selection per class; the same network,
    representatives and images give equal gradient terms, and the loss grows by exactly the feature term."""
    pool, model = _pool(), _model()
    base = dict(ipc=2, batch_real=4, outer_loop=1, inner_loop=1, metric="mse", interval=1, lr_img=1e-9)
    with_f = dream.make(_config(feature_weight=1.0, **base), model, K, SHAPE)
    no_f = dream.make(_config(feature_weight=0.0, **base), model, K, SHAPE)
    state = with_f.init(jax.random.PRNGKey(2), algorithms.init_synthetic(jax.random.PRNGKey(1), pool, 2))
    new, m1 = jax.jit(with_f.step)(state, pool)
    _, m0 = jax.jit(no_f.step)(state, pool)
    got = np.asarray(new.synthetic.images)
    # independent selection with the same network and keys (the engine's documented draw order)
    _, k_net, k_init, _ = jax.random.split(state.rng, 4)
    variables = models.init_model(model, k_net, SHAPE)
    _, k_km = jax.random.split(k_init)
    keys = jax.random.split(k_km, K)
    kmeans = jax.jit(lambda k, x: cluster.kmeans(k, x, 2, max_iter=100).centers)
    for c in range(K):
        n = int(pool.counts[c])
        imgs = pool.images[c, :n]
        feats = models.apply_model(model, variables, imgs, train=True, output="embed")[0]
        centres = np.asarray(kmeans(keys[c], feats))
        d2 = ((centres[:, None] - np.asarray(feats)[None]) ** 2).sum(-1)
        expected = np.asarray(imgs)[np.argmin(d2, 1)]
        np.testing.assert_allclose(got[2 * c:2 * c + 2], expected, atol=1e-5)
    assert float(m1["feature_match"]) > 0 and "feature_match" not in m0
    np.testing.assert_allclose(m1["loss"], m1["grad_match"] + m1["feature_match"], rtol=1e-5)
    np.testing.assert_allclose(m1["grad_match"], m0["grad_match"], rtol=1e-5)
    np.testing.assert_allclose(m0["loss"], m0["grad_match"], rtol=1e-6)


def test_idc_base_same_on_one_and_eight_devices():
    """DREAM+ on IDC with the bidirectional term and network updates on real data: the real batches split over 8
    simulated devices give the step of one device. Clustering is off here: k-means is discrete, so float noise
    in the sharded reductions can change a selection (metric mse for the same reason: l1's sign gradient)."""
    assert jax.device_count() == 8, "conftest sets 8 simulated CPU devices"
    pool = _pool()
    config = _config("idc", ipc=1, batch_real=8, inner_loop=2, n_data=16, net_batch=8, metric="mse",
                     representative=False, init="given")
    results = []
    for devices in (jax.devices()[:1], jax.devices()):
        mesh = make_mesh(devices)
        algo = dream.make(config, _model(), K, SHAPE, mesh=mesh)
        state = algo.init(jax.random.PRNGKey(2), algorithms.init_synthetic(jax.random.PRNGKey(1), pool, 1))
        new, metrics = jax.jit(algo.step)(replicate(state, mesh), replicate(pool, mesh))
        assert new.synthetic.images.shape == (4 * K,) + SHAPE
        assert np.isfinite(float(metrics["loss"])) and float(metrics["feature_match"]) > 0
        results.append((np.asarray(new.synthetic.images), float(metrics["loss"])))
    np.testing.assert_allclose(results[0][0], results[1][0], atol=1e-4)
    np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-4)


def test_too_few_images_and_unknown_base_are_one_line():
    pool = _pool()
    with pytest.raises(ConfigError, match="asks for 128 clusters but only 20"):
        dream.prepare(_config(), None, pool)
    with pytest.raises(ConfigError, match="asks for 40 clusters"):
        dream.prepare(_config(ipc=10, batch_real=4, base="idc"), None, pool)  # 10 * 2² cluster-init images
    with pytest.raises(ConfigError, match="idc, dc, dsa"):
        dream.make(_config(base="mtt"), _model(), K, SHAPE)
    with pytest.raises(ConfigError, match="multiple of subsample"):
        dream.make(_config(batch_real=6, subsample=4), _model(), K, SHAPE)
    assert dream.prepare(_config(batch_real=8, subsample=2), None, pool) is pool
    with pytest.raises(ConfigError, match="batch_real=6 is smaller than the 8 devices"):
        dream.make(_config(batch_real=6), _model(), K, SHAPE, mesh=make_mesh())
    with pytest.raises(ConfigError, match="net_batch=4 is smaller than the 8 devices"):
        dream.make(_config("idc", batch_real=8, net_batch=4), _model(), K, SHAPE, mesh=make_mesh())
