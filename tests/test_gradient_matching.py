"""Gradient matching: distances against numpy, DC's loop schedule, the DC/DSA step against an independent per-class
computation and finite differences, the network update between rounds, IDC's multi-formation against numpy, and
one-line errors for bad input. Few distinct compiled steps (compiling dominates): each test compiles at most two."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from ddjax import algorithms, losses, models
from ddjax.algorithms import gradient_matching as gm
from ddjax.algorithms import idc, multiformation
from ddjax.errors import ConfigError

K, SHAPE = 3, (8, 8, 1)


def _tree(rng):
    return {"conv": {"kernel": rng.normal(size=(3, 3, 2, 4)), "bias": rng.normal(size=(4,))},
            "dense": {"kernel": rng.normal(size=(5, 3)), "bias": rng.normal(size=(3,))},
            "norm": {"scale": rng.normal(size=(4,))}}


def _np_rows(g):
    return np.moveaxis(g, -1, 0).reshape(g.shape[-1], -1)  # (out, rest) like PyTorch's (out, in*kh*kw)


def _np_distance(real, syn, metric, layers):
    min_dims = {"all": 0, "weights": 2, "conv": 3}[layers]
    pairs = [(r, s) for r, s in zip(jax.tree.leaves(real), jax.tree.leaves(syn)) if r.ndim >= min_dims]
    if metric == "layerwise_cos":
        total = 0.0
        for r, s in pairs:
            if r.ndim < 2:
                continue
            r2, s2 = _np_rows(r), _np_rows(s)
            for o in range(r2.shape[0]):
                total += 1 - r2[o] @ s2[o] / (np.linalg.norm(r2[o]) * np.linalg.norm(s2[o]) + 1e-6)
        return total
    rv = np.concatenate([r.ravel() for r, _ in pairs])
    sv = np.concatenate([s.ravel() for _, s in pairs])
    if metric == "mse":
        return np.sum((rv - sv) ** 2)
    if metric == "l1":
        return np.sum(np.abs(rv - sv))
    return 1 - rv @ sv / (np.linalg.norm(rv) * np.linalg.norm(sv) + 1e-6)


@pytest.mark.parametrize("metric", losses.GRADIENT_METRICS)
@pytest.mark.parametrize("layers", losses.GRADIENT_LAYERS)
def test_gradient_matching_distance_matches_numpy(metric, layers):
    rng = np.random.default_rng(0)
    real, syn = _tree(rng), _tree(rng)
    got = losses.gradient_matching_distance(jax.tree.map(jnp.asarray, real), jax.tree.map(jnp.asarray, syn),
                                            metric, layers)
    np.testing.assert_allclose(got, _np_distance(real, syn, metric, layers), rtol=1e-5)


def test_gradient_matching_distance_properties():
    rng = np.random.default_rng(1)
    g = jax.tree.map(jnp.asarray, _tree(rng))
    for metric in ("layerwise_cos", "cos", "mse", "l1"):
        assert abs(float(losses.gradient_matching_distance(g, g, metric))) < 1e-5
    # layerwise_cos: 2 matrices with 4 and 3 output rows; opposite gradients give 2 per row
    neg = jax.tree.map(lambda x: -x, g)
    np.testing.assert_allclose(losses.gradient_matching_distance(g, neg, "layerwise_cos"), 2 * (4 + 3), rtol=1e-5)
    # per-class form sums over a leading class axis
    a, b = _tree(rng), _tree(rng)
    stacked_r = jax.tree.map(lambda x, y: jnp.stack([x, y]), g, jax.tree.map(jnp.asarray, a))
    stacked_s = jax.tree.map(lambda x, y: jnp.stack([x, y]), neg, jax.tree.map(jnp.asarray, b))
    expected = _np_distance(jax.tree.map(np.asarray, g), jax.tree.map(np.asarray, neg), "mse", "all") + \
        _np_distance(a, b, "mse", "all")
    np.testing.assert_allclose(losses.gradient_matching_distance_per_class(stacked_r, stacked_s, "mse"), expected,
                               rtol=1e-5)


def test_gradient_matching_distance_bad_input_is_one_line():
    g = {"w": jnp.ones((2, 2))}
    with pytest.raises(ConfigError, match="layerwise_cos, mse, l1, cos"):
        losses.gradient_matching_distance(g, g, "ours")
    with pytest.raises(ConfigError, match="all, weights, conv"):
        losses.gradient_matching_distance(g, g, "mse", layers="dense")
    with pytest.raises(ConfigError, match="different structures"):
        losses.gradient_matching_distance(g, {"v": jnp.ones((2, 2))}, "mse")


def test_dc_loop_schedule_and_error():
    assert gm.dc_loops(1) == (1, 1) and gm.dc_loops(10) == (10, 50) and gm.dc_loops(50) == (50, 10)
    assert gm.dc_loops(7, 3, 2) == (3, 2)
    with pytest.raises(ConfigError, match="no outer/inner loop schedule for ipc=7"):
        gm.dc_loops(7)
    c = _config("dc", ipc=7)
    with pytest.raises(ConfigError, match="ipc=7"):
        gm.make(c, _model(), K, SHAPE)


# --- the DC/DSA step -------------------------------------------------------------------------------------------

def _config(name="dc", ipc=2, strategy="none", **hp):
    c = ml_collections.ConfigDict(dict(algorithm=name, ipc=ipc, dsa_strategy=strategy))
    c[name] = algorithms.default_config(name)
    for k, v in hp.items():
        c[name][k] = v
    return c


def _pool(seed=0, per_class=(10, 12, 9)):
    rng = np.random.default_rng(seed)
    labels = np.concatenate([np.full(n, c) for c, n in enumerate(per_class)])
    images = (rng.normal(size=(len(labels),) + SHAPE) + labels[:, None, None, None]).astype(np.float32)
    return algorithms.make_real_pool(images, labels, K)


def _model():
    return models.build_model("convnet", K, width=8, depth=2)


def _state(algo, pool, ipc=2):
    return algo.init(jax.random.PRNGKey(2), algorithms.init_synthetic(jax.random.PRNGKey(1), pool, ipc))


def _reference_loss(model, params, real, images, ipc, metric):
    """DC's loss written from the paper with a Python loop over classes (independent of the engine)."""
    import optax

    def ce(p, x, c):
        logits = model.apply({"params": p}, x)
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, jnp.full(x.shape[0], c)))

    total = 0.0
    for c in range(K):
        gr = jax.grad(ce)(params, real[c], c)
        gs = jax.grad(ce)(params, images[c * ipc:(c + 1) * ipc], c)
        for r, s in zip(jax.tree.leaves(gr), jax.tree.leaves(gs)):
            if metric == "mse":
                total += jnp.sum((r - s) ** 2)
            elif r.ndim >= 2:
                r2 = jnp.moveaxis(r, -1, 0).reshape(r.shape[-1], -1)
                s2 = jnp.moveaxis(s, -1, 0).reshape(s.shape[-1], -1)
                total += jnp.sum(1 - jnp.sum(r2 * s2, -1) / (jnp.linalg.norm(r2, axis=-1)
                                                             * jnp.linalg.norm(s2, axis=-1) + 1e-6))
    return total


def test_dc_step_equals_independent_computation():
    """Two rounds of DC (image SGD with momentum, one epoch of network SGD on the synthetic set in between) against
    the paper's loss written with Python loops. This step unrolls the class and network-step loops; the other
    step tests run the default rolled loops (``unroll`` only changes ``lax.scan``'s unroll argument)."""
    import optax

    pool, model = _pool(), _model()
    common = dict(ipc=2, outer_loop=2, inner_loop=1, batch_real=8, lr_img=0.5, momentum=0.5, lr_net=0.5)
    algo = gm.make(_config(unroll="classes_net", **common), model, K, SHAPE)
    state = _state(algo, pool)
    new_state, metrics = jax.jit(algo.step)(state, pool)
    # independent: per-class loss by hand, optax.sgd's momentum trace (v = g + 0.5 v), and the network step on
    # the whole synthetic set (6 images < batch 256: one full batch per epoch, so the shuffle does not matter)
    _, k_net, _, k_rounds = jax.random.split(state.rng, 4)
    params = params0 = models.init_model(model, k_net, SHAPE)["params"]
    # one jitted reference program for all three uses (eager op-by-op dispatch compiles far more)
    ref = jax.jit(jax.value_and_grad(lambda y, p, real: _reference_loss(model, p, real, y, 2, "layerwise_cos")))
    labels = jnp.repeat(jnp.arange(K), 2)
    net_grad = jax.jit(jax.grad(lambda p, y: jnp.mean(optax.softmax_cross_entropy_with_integer_labels(
        model.apply({"params": p}, y), labels))))
    x, v, losses_ref, x_frozen = state.synthetic.images, 0.0, [], None
    for r in range(2):
        k_real = jax.random.split(jax.random.fold_in(k_rounds, r), 5)[0]
        real = algorithms.sample_per_class(k_real, pool, 8)
        loss, g = ref(x, params, real)
        if r == 1:  # what round 2 would give had the network not trained
            x_frozen = x - 0.5 * (ref(x, params0, real)[1] + 0.5 * v)
        v = g + 0.5 * v
        x = x - 0.5 * v
        losses_ref.append(loss)
        if r == 0:
            params = jax.tree.map(lambda p, d: p - 0.5 * d, params, net_grad(params, x))
    np.testing.assert_allclose(metrics["loss"], np.mean(losses_ref) / K, rtol=1e-4)
    np.testing.assert_allclose(new_state.synthetic.images, x, rtol=1e-4, atol=1e-5)
    assert np.max(np.abs(np.asarray(x) - np.asarray(x_frozen))) > 1e-3  # the network update matters here
    assert int(new_state.step) == 1


def test_unroll_choices_resolve_and_bad_ones_are_one_line():
    assert gm.resolve_unroll("auto", "cpu") == frozenset(gm.CPU_UNROLL)
    assert gm.resolve_unroll("auto", "gpu") == frozenset() == gm.resolve_unroll("none")
    assert gm.resolve_unroll("classes_net") == {"classes", "net"}
    with pytest.raises(ConfigError, match="unknown loop 'epochs' in unroll='classes_epochs'"):
        gm.make(_config(ipc=1, unroll="classes_epochs"), _model(), K, SHAPE)


def test_dsa_gradient_matches_finite_differences():
    pool = _pool()
    config = _config("dsa", ipc=2, strategy="color_crop_cutout_scale_rotate", outer_loop=1, inner_loop=1,
                     batch_real=8, lr_img=1.0, metric="mse")
    algo = gm.make_dsa(config, _model(), K, SHAPE)
    state = _state(algo, pool)
    step = jax.jit(algo.step)
    images = state.synthetic.images
    grad = np.asarray(images - step(state, pool)[0].synthetic.images, np.float64)  # lr 1, first SGD step

    def loss_at(x):
        return K * float(step(state.replace(synthetic=state.synthetic.replace(images=x)), pool)[1]["loss"])

    rng = np.random.default_rng(0)
    for _ in range(2):
        d = rng.normal(size=images.shape).astype(np.float32)
        d /= np.linalg.norm(d)
        eps = 1e-2
        fd = (loss_at(images + eps * d) - loss_at(images - eps * d)) / (2 * eps)
        np.testing.assert_allclose(fd, np.sum(grad * d), rtol=3e-2, atol=1e-4)


# --- IDC ---------------------------------------------------------------------------------------------------------

def _np_bilinear_up(img, out_h, out_w):
    """PyTorch ``Upsample(mode='bilinear', align_corners=False)`` for one (h, w) map, written out."""
    h, w = img.shape
    out = np.zeros((out_h, out_w))
    for i in range(out_h):
        for j in range(out_w):
            y = max((i + 0.5) * h / out_h - 0.5, 0)
            x = max((j + 0.5) * w / out_w - 0.5, 0)
            y0, x0 = min(int(np.floor(y)), h - 1), min(int(np.floor(x)), w - 1)
            y1, x1 = min(y0 + 1, h - 1), min(x0 + 1, w - 1)
            dy, dx = y - y0, x - x0
            out[i, j] = ((1 - dy) * (1 - dx) * img[y0, x0] + (1 - dy) * dx * img[y0, x1]
                         + dy * (1 - dx) * img[y1, x0] + dy * dx * img[y1, x1])
    return out


def test_decode_zoom_matches_numpy_and_mosaic_tiles():
    rng = np.random.default_rng(0)
    stored = rng.normal(size=(2, 8, 8, 1)).astype(np.float32)
    dec = np.asarray(multiformation.decode_zoom(jnp.asarray(stored), 2))
    assert dec.shape == (8, 8, 8, 1)
    for i in range(2):
        for j in range(2):
            for m in range(2):
                crop = stored[m, 4 * i:4 * i + 4, 4 * j:4 * j + 4, 0]
                np.testing.assert_allclose(dec[(2 * i + j) * 2 + m, :, :, 0], _np_bilinear_up(crop, 8, 8),
                                           rtol=1e-5, atol=1e-5)
    parts = rng.normal(size=(8, 8, 8, 1)).astype(np.float32)  # 4 cells x 2 stored images
    tiled = np.asarray(multiformation.mosaic(jnp.asarray(parts), 2))
    assert tiled.shape == (2, 8, 8, 1)
    for k in range(4):
        i, j = divmod(k, 2)
        for m in range(2):
            cell = tiled[m, 4 * i:4 * i + 4, 4 * j:4 * j + 4, 0]
            # nearest-neighbour shrink by 2 keeps one pixel of every 2x2 block
            assert np.all(np.isin(cell, parts[k * 2 + m, :, :, 0]))


def test_idc_step_decodes_and_inits_by_mosaic():
    pool, model = _pool(per_class=(20, 20, 20)), _model()
    config = _config("idc", ipc=1, inner_loop=2, n_data=16, net_batch=8, batch_real=8, mix_p=0.5)
    algo = idc.make(config, model, K, SHAPE)
    state = _state(algo, pool, ipc=1)
    assert state.synthetic.extras["stored"].shape == (K,) + SHAPE
    assert state.synthetic.images.shape == (4 * K,) + SHAPE
    np.testing.assert_array_equal(state.synthetic.labels, np.repeat(np.arange(K), 4))
    step = jax.jit(algo.step)
    new, metrics = step(state, pool)
    assert np.isfinite(float(metrics["loss"])) and float(metrics["loss"]) > 0
    stored = np.asarray(new.synthetic.extras["stored"])
    np.testing.assert_allclose(new.synthetic.images,
                               multiformation.decode_zoom(jnp.asarray(stored).reshape((K, 1) + SHAPE), 2)
                               .reshape((4 * K,) + SHAPE), rtol=1e-6)
    # step 0 replaced the given set by mosaics of real images (then one update moved them a little)
    assert not np.allclose(stored, np.asarray(state.synthetic.extras["stored"]), atol=0.5)
    again, _ = step(new, pool)  # later steps keep optimising the stored set (no re-init)
    assert np.max(np.abs(np.asarray(again.synthetic.extras["stored"]) - stored)) < 0.5


def test_bad_spec_values_are_one_line():
    with pytest.raises(ConfigError, match="factor must be in"):
        idc.make(_config("idc", ipc=1, factor=9), _model(), K, SHAPE)
    with pytest.raises(ConfigError, match="metric"):
        gm.make(_config(ipc=1, metric="ours"), _model(), K, SHAPE)
    algo = gm.make(_config(ipc=1), _model(), K, SHAPE)
    with pytest.raises(ConfigError, match="expected"):
        algo.init(jax.random.PRNGKey(0), algorithms.SyntheticSet(jnp.zeros((5,) + SHAPE), jnp.zeros(5, jnp.int32)))



def test_batch_gradients_in_chunks_equal_the_whole_batch_and_skip_batch_norm(monkeypatch):
    """``Loops.sum_in_chunks`` through ``class_stats_in_chunks`` on 12 images: the chunk is the largest divisor of
    12 up to ``Loops.chunk`` (8 → 6, 5 → 4), the whole batch when that divisor is below ``MIN_GRAD_CHUNK`` (3 → 3
    < 4), is the batch (12), or the net has batch norm; the gradient and mean embedding equal one pass over the
    whole batch."""
    x = jnp.asarray(np.random.default_rng(0).normal(size=(12,) + SHAPE), jnp.float32)
    seen = []
    plain = gm.class_stats

    def recording(model, rest, params, images, label):
        seen.append(images.shape[0])   # once per trace: lax.scan traces its body once
        return plain(model, rest, params, images, label)

    monkeypatch.setattr(gm, "class_stats", recording)
    for norm, limit, chunk in (("instance", 8, 6), ("instance", 5, 4), ("instance", 3, 12), ("instance", 12, 12),
                               ("batch", 8, 12)):
        model = models.build_model("convnet", K, width=8, depth=2, norm=norm)
        variables = models.init_model(model, jax.random.PRNGKey(0), SHAPE)
        rest = {k: v for k, v in variables.items() if k != "params"}
        seen.clear()
        out = gm.class_stats_in_chunks(model, rest, variables["params"], x, jnp.int32(1),
                                       gm.loops("map", "none")._replace(chunk=limit))
        assert seen[-1] == chunk, (norm, limit, seen)
        whole = plain(model, rest, variables["params"], x, jnp.int32(1))
        for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(whole)):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_network_step_in_chunks_equals_the_whole_batch():
    """One epoch of network SGD on 12 synthetic images in batches of 10 (the second one short: 2 rows and 8
    zero-weight padding rows), with CutMix: the weighted-mean gradient summed over chunks of 5 gives the same
    parameters as whole batches, and the forward passes see 5 images at a time."""
    model = _model()
    params = models.init_model(model, jax.random.PRNGKey(0), SHAPE)["params"]
    rng = np.random.default_rng(1)
    syn = jnp.asarray(rng.normal(size=(K, 4) + SHAPE), jnp.float32)   # 12 images, batch 10: a 2-row short batch
    update = gm.synthetic_sgd(1, 10, gm.network_sgd(0.1), cutmix=1.0)
    rows = []

    def logits_fn(p, x):
        rows.append(x.shape[0])   # the images one forward pass sees
        return model.apply({"params": p}, x)

    def step(chunk):
        rows.clear()
        new = update.update(jax.random.PRNGKey(3), logits_fn, params, update.init(params), syn, None,
                            gm.loops("map", "none")._replace(chunk=chunk))[0]
        return new, max(rows)

    (whole, whole_rows), (chunked, chunk_rows) = step(0), step(5)
    assert (whole_rows, chunk_rows) == (10, 5)
    moved = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(whole), jax.tree.leaves(params)))
    assert moved > 1e-3
    for a, b in zip(jax.tree.leaves(chunked), jax.tree.leaves(whole)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="chunks are a CPU-only choice")
def test_batch_gradients_are_chunked_on_one_cpu_device_only():
    """The step sums first-order batch gradients in chunks of ``GRAD_CHUNK`` on one CPU device, with no mesh or the
    launcher's one-device mesh; over an 8-device mesh each device's share of the batch stays whole; an explicit
    ``Loops.chunk`` is kept. DM's real features follow the same rule (``base.one_cpu``)."""
    from ddjax.algorithms import distribution_family, dm
    from ddjax.sharding import make_mesh

    config = _config(outer_loop=1, inner_loop=1)
    one_device = make_mesh(jax.devices()[:1])
    for mesh, chunk in ((None, gm.GRAD_CHUNK), (one_device, gm.GRAD_CHUNK), (make_mesh(), 0)):
        step = gm.make(config, _model(), K, SHAPE, mesh=mesh).step
        assert step.func is gm.matching_step and step.args[0].parts.loops.chunk == chunk, mesh
    assert gm.GRAD_CHUNK == 8
    parts = gm.dc_parts(gm.spec_from_dc_config(config.dc, 2, ""))
    kept = gm.matching(parts._replace(loops=parts.loops._replace(chunk=0)), _model(), K, SHAPE)
    assert kept.step.args[0].parts.loops.chunk == 0

    dm_config = ml_collections.ConfigDict(dict(algorithm="dm", ipc=2, dsa_strategy="none",
                                               dm=algorithms.default_config("dm")))
    for mesh, chunked in ((None, True), (one_device, True), (make_mesh(), False)):
        family = dm.make(dm_config, _model(), K, SHAPE, mesh=mesh).step.args[0]
        assert (family.real_features is not family.features) == chunked, mesh
    assert distribution_family.REAL_CHUNK == 64


@pytest.mark.parametrize("norm", ["instance", "batch"])
def test_dc_step_with_chunked_batch_gradients_equals_whole_batches(norm, monkeypatch):
    """One DC step (2 rounds, 16 real images a class, one network epoch on 3 × 6 synthetic images between rounds)
    with ``Loops.chunk`` 8 (the real statistics in chunks of 8, the network step in chunks of 6) against chunk 0:
    the same images. With batch norm the chunks are skipped: the forward passes see the whole 16 and 18."""
    pool = _pool(per_class=(20, 20, 20))
    model = models.build_model("convnet", K, width=8, depth=2, norm=norm)
    spec = gm.spec_from_dc_config(_config(outer_loop=2, inner_loop=1, batch_real=16, lr_img=0.5, lr_net=0.5).dc,
                                  6, "")
    parts = gm.dc_parts(spec)
    if norm == "instance":   # (with batch norm the chunks are skipped, checked below: the same program)
        images = []
        for chunk in (0, 8):
            algo = gm.matching(parts._replace(loops=parts.loops._replace(chunk=chunk)), model, K, SHAPE)
            state = _state(algo, pool, ipc=6)
            new, _ = jax.jit(algo.step)(state, pool)
            images.append(np.asarray(new.synthetic.images))
            assert np.max(np.abs(images[-1] - np.asarray(state.synthetic.images))) > 1e-3   # the step moved them
        np.testing.assert_allclose(images[1], images[0], rtol=1e-4, atol=1e-5)
    sizes = []
    plain = gm._logits

    def recording(model, rest, params, x, output="logits"):
        sizes.append(x.shape[0])   # every forward pass of the step (traced once per loop body)
        return plain(model, rest, params, x, output)

    monkeypatch.setattr(gm, "_logits", recording)
    algo = gm.matching(parts._replace(loops=parts.loops._replace(chunk=8)), model, K, SHAPE)
    jax.make_jaxpr(algo.step)(_state(algo, pool, ipc=6), pool)
    assert set(sizes) == ({8, 6} if norm == "instance" else {16, 6, 18}), sizes   # 6: a class's synthetic images
