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


def test_warmup_runs_one_epoch_of_real_batches_and_trains_the_network():
    """DREAM+'s warm-up (condense_improve.py: train_epoch(loader_real) on every new network): ⌊K·M/batch⌋ SGD steps
    per epoch on real batches, which lower the network's real-data loss; a step-counting optimiser checks the count."""
    import optax
    from ddjax import models
    from ddjax.algorithms import gradient_matching as gm
    images, labels, real = _pool(per_class=(12, 12))
    model = models.build_model("convnet", 2, width=4, depth=1)
    variables = models.init_model(model, jax.random.PRNGKey(0), SHAPE)
    logits_fn = lambda p, x: models.apply_model(model, {"params": p}, x, train=True)[0]  # noqa: E731
    loops = gm.loops("map")
    counter = optax.scale_by_schedule(lambda count: 0.0)   # counts updates, moves nothing
    warm = gm.real_data_warmup(2, 5, counter)
    _, state = warm.update(jax.random.PRNGKey(1), logits_fn, variables["params"], warm.init(variables["params"]),
                           None, real, loops)
    assert int(state.count) == 2 * (2 * 12 // 5)
    assert gm.real_data_warmup(0, 5, counter).update(None, None, "p", "s", None, real, loops) == ("p", "s")

    tx = gm.network_sgd(0.05, 0.9, 5e-4)
    warm = gm.real_data_warmup(3, 8, tx)
    trained, _ = jax.jit(lambda p, s: warm.update(jax.random.PRNGKey(2), logits_fn, p, s, None, real, loops))(
        variables["params"], tx.init(variables["params"]))
    ce = lambda p: float(optax.softmax_cross_entropy_with_integer_labels(  # noqa: E731
        logits_fn(p, jnp.asarray(images)), jnp.asarray(labels)).mean())
    assert ce(trained) < 0.9 * ce(variables["params"])   # measured 0.68 -> 0.52


def test_dream_warms_up_by_default_and_idc_does_not():
    """Defaults as the authors: DREAM+ (condense_improve.py) one epoch, IDC (--early 0) none; a DC-based DREAM+
    (network trained on the synthetic set) refuses a warm-up on real data."""
    import dataclasses

    import ml_collections
    import pytest
    from ddjax import algorithms
    from ddjax.algorithms import dream, idc
    from ddjax.errors import ConfigError
    assert idc.spec_from_idc_config(idc.default_config(), 1).warmup_epochs == 0
    config = ml_collections.ConfigDict(dict(algorithm="dream", ipc=1, dsa_strategy="none"))
    config.dream = algorithms.default_config("dream")
    spec = dream.spec_from_config(config)
    assert spec.warmup_epochs == 1 and spec.net_batch == spec.batch_real == 128
    with pytest.raises(ConfigError, match="warmup_epochs"):
        dataclasses.replace(spec, net_source="synthetic").validate()


def test_distribution_matching_takes_dreams_representatives_as_its_real_batch():
    """DREAM+ on DM/M3D: config.<dm|m3d>.real_batch.kind picks the family's sampler; the representatives sampler
    keeps its selection in the state between clusterings (configs/dream_dm_tiny.py)."""
    import ml_collections
    import pytest
    from ddjax import algorithms, models
    from ddjax.errors import ConfigError
    model = models.build_model("convnet", 2, width=4, depth=1)
    _, _, real = _pool()
    syn = algorithms.init_synthetic(jax.random.PRNGKey(0), real, 1)
    for name in ("dm", "m3d"):
        config = ml_collections.ConfigDict(dict(algorithm=name, ipc=1, dsa_strategy="none"))
        config[name] = algorithms.default_config(name)
        config[name].batch_real = 4
        assert config[name].real_batch.kind == "random"
        state = algorithms.get_algorithm(config, model, 2, SHAPE).init(jax.random.PRNGKey(1), syn)
        assert jax.tree.leaves(state.extras) == []
        config[name].real_batch.kind = "representatives"
        state = algorithms.get_algorithm(config, model, 2, SHAPE).init(jax.random.PRNGKey(1), syn)
        assert state.extras.shape == (2, 4) + SHAPE
        config[name].real_batch.kind = "herding"
        with pytest.raises(ConfigError, match="real_batch.kind"):
            algorithms.get_algorithm(config, model, 2, SHAPE)


def test_idc_network_update_is_one_hand_sgd_step_on_the_same_cutmix_batch():
    """IDC's network update between rounds (condense.py: train_epoch(loader_real, n_data, mixup='cut')): one step
    = the drawn real batch (each image of its class), CutMix, r·CE(y) + (1−r)·CE(y_π) averaged over the batch,
    weight decay 5e-4 added to the gradient, SGD momentum 0.9 (first step: v = g), written by hand in numpy."""
    from ddjax import augment, models
    from ddjax.algorithms import gradient_matching as gm
    images, labels, real = _pool(per_class=(12, 12))
    model = models.build_model("convnet", 2, width=4, depth=1)
    params = models.init_model(model, jax.random.PRNGKey(0), SHAPE)["params"]
    logits_fn = lambda p, x: models.apply_model(model, {"params": p}, x, train=True)[0]  # noqa: E731
    lr, wd, batch = 0.1, 5e-4, 6
    update = gm.real_data_sgd(batch, batch, gm.network_sgd(lr, 0.9, wd), cutmix=1.0)   # one step, CutMix always
    key = jax.random.PRNGKey(4)
    new, _ = jax.jit(lambda p: update.update(key, logits_fn, p, update.init(p), None, real, gm.loops("map")))(params)
    # the same draws as the step (its documented key order), then everything by hand (one jitted oracle)
    @jax.jit
    def oracle(p):
        k_data, _, k_mix = jax.random.split(jax.random.fold_in(key, 10_000), 3)
        x, y = gm._sample_real_flat(k_data, real, batch)
        mixed, perm, kept = augment.cutmix(k_mix, x, 1.0)

        def loss(p):
            logp = jax.nn.log_softmax(logits_fn(p, mixed))
            rows = jnp.arange(batch)
            return jnp.mean(-kept * logp[rows, y] - (1.0 - kept) * logp[rows, y[perm]])

        return x, y, kept, jax.grad(loss)(p)

    x, y, kept, g = oracle(params)
    for xi, yi in zip(np.asarray(x), np.asarray(y)):   # every drawn image is a real image of its label
        assert np.any(np.all(np.isclose(images[labels == yi], xi), axis=(1, 2, 3)))
    assert float(kept) < 1.0   # CutMix did paste a box
    expected = jax.tree.map(lambda p, gp: np.asarray(p) - lr * (np.asarray(gp) + wd * np.asarray(p)), params, g)
    for a, b in zip(jax.tree.leaves(new), jax.tree.leaves(expected)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert max(float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) for a, b in
               zip(jax.tree.leaves(new), jax.tree.leaves(params))) > 1e-3



def test_dream_idc_base_per_class_step_representatives_feature_term_and_clamp():
    """One compiled DREAM+ step on the IDC base with the authors' image update, checked by hand:

    - the real batch is the representatives of the step's network's features (select_representatives with the
      round's sampling key), and the logged terms are numpy's Σ_c ||ē(R_c) − ē(S_c)||² / K (feature term, mse)
      and Σ_c Σ_layers ||∇ℓ(R_c) − ∇ℓ(S_c)||² / K;
    - ``image_step="per_class"`` (condense.py: zero_grad, backward, step for every class) is K SGD-momentum steps,
      class c's on ∇L_c at the images left by classes 0..c−1, one trace v = g + 0.5 v for the whole tensor
      (class 0 moves 1.5× its gradient step here, unlike one step on the summed loss);
    - ``clamp_images`` clips to the real data's per-channel range before the rounds (the bounds are pixels 0 and
      1 through the data set's normalisation, checked on the digits): a wild set steps as its clipped copy."""
    import ml_collections
    import optax
    from ddjax import algorithms, data, models
    from ddjax.algorithms import dream
    from ddjax.algorithms import gradient_matching as gm
    digits = data.load_dataset("digits")
    low, high = gm.pixel_bounds(algorithms.make_real_pool(digits.train_images, digits.train_labels, 10))
    np.testing.assert_allclose(low, (0.0 - digits.mean) / digits.std, rtol=1e-6)
    np.testing.assert_allclose(high, (1.0 - digits.mean) / digits.std, rtol=1e-6)

    _, _, real = _pool(per_class=(12, 12))
    model = models.build_model("convnet", 2, width=4, depth=1)
    config = ml_collections.ConfigDict(dict(algorithm="dream", ipc=1, dsa_strategy="none"))
    config.dream = dream.default_config()
    config.dream.update(dict(init="given", interval=1, kmeans_iters=20))
    lr = 0.05
    config.dream.idc.update(dict(factor=1, batch_real=4, inner_loop=1, n_data=0, warmup_epochs=0, metric="mse",
                                 layers="all", aug_type="", mix_p=0.0, lr_img=lr, momentum=0.5,
                                 image_step="per_class", clamp_images=True))
    algo = dream.make(config, model, 2, SHAPE)
    state = algo.init(jax.random.PRNGKey(2), algorithms.init_synthetic(jax.random.PRNGKey(1), real, 1))
    step = jax.jit(algo.step)
    new, metrics = step(state, real)

    _, k_net, _, k_rounds = jax.random.split(state.rng, 4)
    variables = models.init_model(model, k_net, SHAPE)
    embed_flat = lambda x: models.apply_model(model, variables, x, train=True, output="embed")[0]  # noqa: E731
    embed = lambda x: embed_flat(x.reshape((-1,) + x.shape[2:])).reshape(x.shape[:2] + (-1,))  # noqa: E731
    k_sample = jax.random.split(jax.random.fold_in(k_rounds, 0), 5)[0]
    reps = jax.jit(lambda k: samplers.select_representatives(k, embed, real, 4, 1, kmeans_iters=20))(k_sample)

    def ce(p, x, c):
        logits = models.apply_model(model, {**variables, "params": p}, x, train=True)[0]
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, jnp.full(x.shape[0], c)))

    def terms(x_c, r_c, c):   # class c's L_c = feature + gradient term, written out; aux: the two terms
        feature = jnp.sum((embed_flat(r_c).mean(0) - embed_flat(x_c).mean(0)) ** 2)
        gr, gs = jax.grad(ce)(variables["params"], r_c, c), jax.grad(ce)(variables["params"], x_c, c)
        grad = sum(jnp.sum((a - b) ** 2) for a, b in zip(jax.tree.leaves(gr), jax.tree.leaves(gs)))
        return feature + grad, (feature, grad)

    grad_c = jax.jit(jax.value_and_grad(terms, has_aux=True))
    x0 = np.asarray(state.synthetic.images, np.float64)
    values = np.array([[float(v) for v in grad_c(jnp.asarray(x0[c:c + 1], jnp.float32), reps[c], c)[0][1]]
                       for c in range(2)])
    np.testing.assert_allclose(metrics["feature_match"], values[:, 0].sum() / 2, rtol=1e-4)
    np.testing.assert_allclose(metrics["grad_match"], values[:, 1].sum() / 2, rtol=1e-4)
    assert values[:, 0].min() > 1e-3
    x, v, g_first = x0.copy(), np.zeros_like(x0), None
    for c in range(2):
        g = np.zeros_like(x)
        g[c:c + 1] = grad_c(jnp.asarray(x[c:c + 1], jnp.float32), reps[c], c)[1]
        g_first = g if c == 0 else g_first
        v = g + 0.5 * v
        x = x - lr * v
    np.testing.assert_allclose(new.synthetic.images, x, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(x0[0] - x[0], 1.5 * lr * g_first[0], rtol=1e-4, atol=1e-7)  # not the summed step
    assert np.max(np.abs(x - x0)) > 1e-3

    low, high = (np.asarray(b) for b in gm.pixel_bounds(real))
    wild = state.synthetic.images * 3.0 + 2.0    # beyond the real range on both sides
    assert wild.min() < low.min() and wild.max() > high.max()
    stepped = [np.asarray(step(state.replace(synthetic=state.synthetic.replace(images=im)), real)[0]
                          .synthetic.images) for im in (wild, jnp.clip(wild, low, high))]
    np.testing.assert_allclose(stepped[0], stepped[1], rtol=1e-5, atol=1e-6)
    assert not np.allclose(stepped[0], wild, atol=0.5)
