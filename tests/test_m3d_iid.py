"""M3D and IID: each step against an independent per-class computation (Python loop over classes, the public
losses that tests/test_losses.py checks against numpy), finite differences, IID = its base at IPC 1, 1-vs-8-device
equality, one-line errors (bad settings, missing teacher pool), and the launcher end to end with a teacher pool."""
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from ddjax import algorithms, losses, models, teachers
from ddjax.algorithms import dm, iid, m3d
from ddjax.errors import ConfigError, DataNotFoundError
from ddjax.sharding import make_mesh, replicate
from step_checks import assert_step_gradient_matches_fd
from repo_files import load_module

K, IPC, SHAPE, T = 3, 2, (8, 8, 1), 2


def _config(name, ipc=IPC, strategy="none", batch_real=8, lr_img=1.0, **hp):
    c = ml_collections.ConfigDict(dict(algorithm=name, ipc=ipc, dsa_strategy=strategy))
    c[name] = algorithms.default_config(name)
    c[name].batch_real = batch_real
    c[name].lr_img = lr_img
    if name == "m3d":
        c.m3d.factor = 1   # plain images here; test_m3d_factor_2_matches_plain_m3d_on_the_decoded_set checks 2
    for key, value in hp.items():
        c[name][key] = value
    if name == "iid":
        t = c.iid.teacher
        t.model, t.width, t.depth, t.norm, t.num_teachers, t.epochs = "convnet", 8, 2, "instance", T, 1
    return c


def _pool(seed=0, per_class=(10, 12, 9)):
    rng = np.random.default_rng(seed)
    labels = np.concatenate([np.full(n, c) for c, n in enumerate(per_class)])
    images = (rng.normal(size=(len(labels),) + SHAPE) + labels[:, None, None, None]).astype(np.float32)
    return images, labels, algorithms.make_real_pool(images, labels, K)


def _model():
    return models.build_model("convnet", K, width=8, depth=2)


def _teacher_pool(config):
    """T randomly initialised teacher networks, stacked (training does not matter for the step's arithmetic)."""
    model = teachers.build_teacher_model(config.iid.teacher, K)
    keys = jax.random.split(jax.random.PRNGKey(7), T)
    return jax.vmap(lambda k: models.init_model(model, k, SHAPE))(keys), model


def _reference_loss(config, model, state, pool, tpool=None, tmodel=None):
    """The step's loss rebuilt with a Python loop over classes and the public per-set losses."""
    name = config.algorithm
    hp = config[name]
    _, k_net, k_real, _ = jax.random.split(state.rng, 4)
    variables = models.init_model(model, k_net, SHAPE)
    real = algorithms.sample_per_class(k_real, pool, hp.batch_real)
    base = "m3d" if name == "m3d" else ("dm" if name == "dm" else hp.base)
    if tpool is not None:
        index = jax.random.randint(jax.random.fold_in(state.rng, 1), (), 0, T)
        tvars = jax.tree.map(lambda leaf: leaf[index], tpool)

    def feats(x):
        out = models.apply_model(model, variables, x, train=True, output="features")[0]
        return out["embed"], out["blocks"][-1]

    def loss(images):
        total = 0.0
        for c in range(K):
            syn = images[c * IPC:(c + 1) * IPC]
            (re, rm), (se, sm) = feats(real[c]), feats(syn)
            if base == "dm":
                total += losses.mean_embedding_distance(re, se)
            else:
                sig = losses.median_bandwidth(re, se) * jnp.asarray(hp.sigmas)
                total += losses.gaussian_mmd(re, se, sig)
            if name == "iid":
                total += hp.lambda_cm * losses.covariance_matching(rm, sm)
                if tpool is not None:
                    emb = teachers.teacher_embed(tmodel, tvars, syn)
                    total += hp.lambda_cc * losses.class_centralization(emb, hp.alpha, hp.beta, hp.cc_form)
        return total

    return jax.jit(jax.value_and_grad(loss))(state.synthetic.images)


@pytest.mark.parametrize("name,base", [("iid", "dm"), ("iid", "m3d")])  # plain M3D: the finite-difference test
def test_step_equals_independent_per_class_computation(name, base):
    _, _, pool = _pool()
    model = _model()
    extra = dict(base=base, lambda_cc=0.3, lambda_cm=0.2)
    if base == "m3d":  # the paper's exp centralization here, the released code's squared one on DM
        extra.update(cc_form="exp", alpha=0.1, beta=0.5)
    config = _config(name, lr_img=0.5, **extra)
    algo = algorithms.get_algorithm(config, model, K, SHAPE)
    syn = algorithms.init_synthetic(jax.random.PRNGKey(1), pool, IPC)
    state = algo.init(jax.random.PRNGKey(2), syn)
    if name == "iid":
        tpool, tmodel = _teacher_pool(config)
        data = {"real": pool, "teachers": tpool}
    else:
        tpool = tmodel = None
        data = pool
    new_state, metrics = jax.jit(algo.step)(state, data)

    expected_loss, grads = _reference_loss(config, model, state, pool, tpool, tmodel)
    np.testing.assert_allclose(metrics["loss"], expected_loss, rtol=1e-4)
    # first SGD step: the momentum buffer starts at the gradient, so the update is -lr * g
    np.testing.assert_allclose(new_state.synthetic.images, syn.images - 0.5 * grads, rtol=1e-4, atol=1e-5)
    if name == "iid":
        for term in ("loss_base", "loss_cm", "loss_cc"):
            assert np.isfinite(float(metrics[term])) and float(metrics[term]) > 0
        np.testing.assert_allclose(metrics["loss"], metrics["loss_base"] + 0.2 * metrics["loss_cm"]
                                   + 0.3 * metrics["loss_cc"], rtol=1e-5)


def test_m3d_gradient_matches_finite_differences():
    _, _, pool = _pool()
    # fixed bandwidths: with the median heuristic the step treats σ as a constant (stop_gradient), so the finite
    # difference of the loss (σ recomputed) and the step's gradient differ by design
    config = _config("m3d", bandwidth="fixed", sigmas=(0.5, 2.0))
    algo = m3d.make(config, _model(), K, SHAPE)
    data = pool
    syn = algorithms.init_synthetic(jax.random.PRNGKey(1), pool, IPC)
    state = algo.init(jax.random.PRNGKey(2), syn)
    assert_step_gradient_matches_fd(jax.jit(algo.step), state, data, rtol=3e-2)


def test_m3d_factor_2_is_plain_m3d_on_the_decoded_set_and_starts_from_downscaled_real_mosaics():
    """M3D's Factor & Up-sampling: past step 0, the loss of M3D with factor 2 is plain M3D's on the 4·IPC decoded
    images per class (same network, real batch and keys); at step 0 every cell of a stored image is one real image
    of its class downscaled by 1/2 (the block mean), as IDM's init."""
    images, labels, pool = _pool()
    model = _model()
    tiny_lr = 1e-9   # the step-0 image update leaves the initialised mosaics as they are
    factor2 = m3d.make(_config("m3d", factor=2, lr_img=tiny_lr), model, K, SHAPE)
    plain = m3d.make(_config("m3d", ipc=4 * IPC), model, K, SHAPE)
    syn = algorithms.init_synthetic(jax.random.PRNGKey(1), pool, IPC)
    state = factor2.init(jax.random.PRNGKey(2), syn)
    assert state.synthetic.images.shape == (K * 4 * IPC,) + SHAPE
    np.testing.assert_array_equal(state.synthetic.labels, np.repeat(np.arange(K), 4 * IPC))
    later = state.replace(step=jnp.ones((), jnp.int32))
    same_set = algorithms.SyntheticSet(images=later.synthetic.images, labels=later.synthetic.labels)
    plain_state = plain.init(jax.random.PRNGKey(2), same_set).replace(step=jnp.ones((), jnp.int32))
    _, m_factor2 = jax.jit(factor2.step)(later, pool)
    _, m_plain = jax.jit(plain.step)(plain_state, pool)
    np.testing.assert_allclose(m_factor2["loss"], m_plain["loss"], rtol=1e-5)

    first, _ = jax.jit(factor2.step)(state, pool)
    stored = np.asarray(first.synthetic.extras["stored"])                     # (K·IPC, 8, 8, 1)
    downscaled = images.reshape(-1, 4, 2, 4, 2, 1).mean(axis=(2, 4))           # every real image's 4x4 block mean
    for index, image in enumerate(stored):
        c = index // IPC
        for i in range(2):
            for j in range(2):
                cell = image[4 * i:4 * i + 4, 4 * j:4 * j + 4]
                distance = np.abs(downscaled - cell).max(axis=(1, 2, 3))
                assert distance.min() < 1e-5 and labels[distance.argmin()] == c, (index, i, j)


def test_iid_at_ipc_1_equals_its_base():
    """One sample per class: zero covariance and zero spread, so IID's extra terms have zero gradient."""
    _, _, pool = _pool()
    model = _model()
    config = _config("iid", ipc=1)
    tpool, _ = _teacher_pool(config)
    base_cfg = _config("dm", ipc=1)
    syn = algorithms.init_synthetic(jax.random.PRNGKey(1), pool, 1)
    a = iid.make(config, model, K, SHAPE)
    b = dm.make(base_cfg, model, K, SHAPE)
    sa, sb = a.init(jax.random.PRNGKey(2), syn), b.init(jax.random.PRNGKey(2), syn)
    step_a, step_b = jax.jit(a.step), jax.jit(b.step)
    for _ in range(2):
        sa, ma = step_a(sa, {"real": pool, "teachers": tpool})
        sb, mb = step_b(sb, pool)
    np.testing.assert_allclose(sa.synthetic.images, sb.synthetic.images, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ma["loss_base"], mb["loss"], rtol=1e-5)


def test_iid_without_centralization_needs_no_teachers():
    images, labels, pool = _pool()
    config = _config("iid", lambda_cc=0.0)
    data = iid.prepare(config, None, pool)  # no dataset needed: nothing to load
    assert set(data) == {"real"}
    algo = iid.make(config, _model(), K, SHAPE)
    state = algo.init(jax.random.PRNGKey(2), algorithms.init_synthetic(jax.random.PRNGKey(1), pool, IPC))
    _, metrics = jax.jit(algo.step)(state, data)
    assert "loss_cc" not in metrics and float(metrics["loss_cm"]) > 0


def test_m3d_and_iid_same_on_one_and_eight_devices():
    assert jax.device_count() == 8, "conftest sets 8 simulated CPU devices"
    _, _, pool = _pool(per_class=(20, 18, 17))
    model = _model()
    config = _config("iid", base="m3d", batch_real=16, lambda_cc=0.3, lambda_cm=0.2)  # DSA: tests/test_dm.py
    tpool, _ = _teacher_pool(config)
    results = []
    for devices in (jax.devices()[:1], jax.devices()):
        mesh = make_mesh(devices)
        algo = iid.make(config, model, K, SHAPE, mesh=mesh)
        state = algo.init(jax.random.PRNGKey(2), algorithms.init_synthetic(jax.random.PRNGKey(1), pool, IPC))
        state, data = replicate(state, mesh), replicate({"real": pool, "teachers": tpool}, mesh)
        step = jax.jit(algo.step)
        for _ in range(2):
            state, metrics = step(state, data)
        results.append((np.asarray(state.synthetic.images), float(metrics["loss"])))
    np.testing.assert_allclose(results[0][0], results[1][0], atol=2e-5)
    np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-5)


@pytest.mark.parametrize("name,field,value,message", [
    ("m3d", "bandwidth", "silverman", "median, fixed"),
    ("m3d", "sigmas", (1.0, 0.0), "positive bandwidths"),
    ("m3d", "sigmas", (), "non-empty"),
    ("m3d", "lr_img", 0.0, "lr_img"),
    ("m3d", "momentum", 1.0, "momentum"),
    ("iid", "base", "idn", "dm, m3d, idm"),
    ("iid", "lambda_cc", -0.1, "lambda_cc"),
    ("iid", "cc_form", "cosine", "exp, squared"),
    ("iid", "cov_blocks", "first", "last, all"),
])
def test_bad_settings_are_one_line_config_errors(name, field, value, message):
    config = _config(name, **{field: value})
    with pytest.raises(ConfigError, match=message) as info:
        algorithms.get_algorithm(config, _model(), K, SHAPE)
    assert "\n" not in str(info.value)


def test_unbiased_mmd_at_ipc_1_is_refused():
    with pytest.raises(ConfigError, match="unbiased=False"):
        m3d.make(_config("m3d", ipc=1, unbiased=True), _model(), K, SHAPE)


def test_missing_teacher_pool_says_how_to_make_it(tmp_path):
    from ddjax import data as ddata
    config = _config("iid")
    config.data = ml_collections.ConfigDict(dict(name="digits", zca=False, zca_regularization=0.1))
    config.pretrained_dir = str(tmp_path)
    config.make_pretrained = False
    dataset = ddata.load_dataset("digits")
    real = algorithms.make_real_pool(dataset.train_images, dataset.train_labels, dataset.num_classes)
    with pytest.raises(DataNotFoundError, match="python -m launch.teachers") as info:
        iid.prepare(config, dataset, real)
    assert "\n" not in str(info.value)


def test_launcher_runs_iid_end_to_end_and_makes_the_teacher_pool(tmp_path):
    """configs/iid_tiny.py at toy scale through launch.run: the missing pool is made on the fly and stored."""

    from launch.run import run
    module = load_module("configs/iid_tiny.py")
    config = module.get_config()
    config.ipc, config.steps, config.log_every, config.checkpoint_every = 2, 2, 1, 2
    config.model.width, config.model.depth, config.iid.batch_real = 8, 2, 8
    config.eval.every, config.eval.num_seeds, config.eval.epochs, config.eval.dsa_strategy = 0, 1, 1, "none"
    t = config.iid.teacher
    t.model, t.width, t.depth, t.norm, t.num_teachers, t.epochs = "convnet", 8, 2, "instance", 2, 1
    config.eval.random_real = False
    config.pretrained_dir = str(tmp_path / "pretrained")
    result = run(config, str(tmp_path / "run"))
    assert result["algorithm"] == "iid" and result["steps"] == 2
    records = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    assert all(k in records[0] for k in ("loss_base", "loss_cm", "loss_cc", "teacher"))
    assert len(os.listdir(tmp_path / "pretrained" / "teachers")) == 1  # reuse is tested in tests/test_teachers.py
