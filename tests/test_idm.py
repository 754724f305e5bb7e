"""IDM (ddjax.algorithms.idm) and IID on IDM: the queue's training against hand-written SGD (numpy arithmetic), the
class-aware term against a numpy formula, the step against an independent per-class computation, the partitioned
init against numpy block means, iid.base=idm adding exactly IID's terms, and one-line errors."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from ddjax import algorithms, losses, models
from ddjax.algorithms import idm, iid
from ddjax.algorithms.base import sample_per_class
from ddjax.algorithms.distribution_family import Features, TermInputs
from ddjax.algorithms.multiformation import decode_zoom
from ddjax.errors import ConfigError

sample_flat = jax.jit(idm.sample_flat, static_argnums=2)

K, SHAPE = 2, (8, 8, 1)


def _pool(seed=0, per_class=(10, 12)):
    rng = np.random.default_rng(seed)
    labels = np.concatenate([np.full(n, c) for c, n in enumerate(per_class)])
    images = (rng.normal(size=(len(labels),) + SHAPE) + labels[:, None, None, None]).astype(np.float32)
    return images, labels, algorithms.make_real_pool(images, labels, K)


def _model():
    return models.build_model("convnet", K, width=4, depth=1)


def _config(name="idm", ipc=1, **q):
    c = ml_collections.ConfigDict(dict(algorithm=name, ipc=ipc, dsa_strategy="none"))
    c[name] = algorithms.default_config(name)
    hp = c[name]
    hp.batch_real, hp.lr_img, hp.momentum = 6, 0.5, 0.0
    fields = hp if name == "idm" else hp.idm
    fields.queue_size, fields.train_nets, fields.train_steps, fields.train_batch = 1, 1, 0, 8
    fields.new_every, fields.acc_window = 1000, 1000
    for key, value in q.items():
        fields[key] = value
    return c


def _ce(logits, label):
    z = logits - logits.max(-1, keepdims=True)
    return -(z[..., label] - np.log(np.exp(z).sum(-1)))


def test_class_aware_term_equals_numpy_formula():
    logits = np.random.default_rng(1).normal(size=(K, 4, K)).astype(np.float32)
    feats = Features(jnp.zeros((K, 4, 2)), (), jnp.asarray(logits))
    x = TermInputs(feats, feats, None, None, None, {"acc": jnp.float32(62.5)})
    value, extra = jax.jit(idm.class_aware_term(0.5).fn)(x)
    expected = 62.5 * sum(np.mean(_ce(logits[c], c)) for c in range(K))
    np.testing.assert_allclose(value, expected, rtol=1e-5)
    np.testing.assert_allclose(extra["syn_ce"], expected / 62.5 / K, rtol=1e-5)


def test_queue_update_equals_hand_written_sgd():
    """Two of four members train two steps each: the same batches through hand-written SGD (PyTorch's momentum and
    weight decay) give the same parameters; the others are untouched; the meters count correct predictions."""
    _, _, pool = _pool()
    model = _model()
    lr, mom, wd, steps, batch = 0.05, 0.9, 5e-4, 2, 8
    tx = idm.network_sgd(lr, mom, wd)
    net = idm.network_queue(model, SHAPE, size=4, new_every=1000, initial=4, train_nets=2, train_steps=steps,
                            train_batch=batch, tx=tx, acc_window=1000)
    q0 = net.init(jax.random.PRNGKey(3))
    key = jax.random.PRNGKey(5)
    q1, metrics = jax.jit(net.update)(key, q0, jnp.int32(1), pool)

    k_pick, k_train = jax.random.split(key)
    picks = np.argsort(np.asarray(jax.random.uniform(k_pick, (4,))))[:2]
    grad_fn = jax.jit(jax.grad(lambda p, x, y: jnp.mean(
        -jax.nn.log_softmax(models.apply_model(model, {"params": p}, x, train=True)[0])[jnp.arange(len(y)), y]),
        has_aux=False))
    for j, slot in enumerate(picks):
        params = jax.tree.map(lambda a: np.asarray(a[slot]), q0.variables["params"])
        buf = None
        correct = 0
        k_net = jax.random.split(k_train, 2)[j]
        for t in range(steps):
            x, y, _ = sample_flat(jax.random.fold_in(k_net, t), pool, batch)
            logits = models.apply_model(model, {"params": params}, x, train=True)[0]
            correct += int(np.sum(np.argmax(np.asarray(logits), -1) == np.asarray(y)))
            g = jax.tree.map(lambda gi, p: np.asarray(gi) + wd * p, grad_fn(params, x, y), params)
            buf = g if buf is None else jax.tree.map(lambda b, gi: mom * b + gi, buf, g)
            params = jax.tree.map(lambda p, b: p - lr * b, params, buf)
        got = jax.tree.map(lambda a: np.asarray(a[slot]), q1.variables["params"])
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(params)):
            np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-6)
        assert float(q1.correct[slot]) == correct and float(q1.seen[slot]) == steps * batch
    for slot in set(range(4)) - set(picks.tolist()):
        for a, b in zip(jax.tree.leaves(q1.variables), jax.tree.leaves(q0.variables)):
            np.testing.assert_array_equal(a[slot], b[slot])
        assert float(q1.seen[slot]) == 0
    assert np.isfinite(float(metrics["net_loss"]))


def test_sample_flat_draws_distinct_images_with_their_labels():
    images, labels, pool = _pool()
    x, y, w = sample_flat(jax.random.PRNGKey(0), pool, 20)
    flat = images.reshape(len(images), -1)
    rows = [int(np.flatnonzero((flat == np.asarray(xi).reshape(-1)).all(1))[0]) for xi in x]
    assert len(set(rows)) == 20 and np.array_equal(labels[rows], np.asarray(y)) and np.all(np.asarray(w) == 1)


def _reference_step_loss(config, model, variables, stored, pool, rng, acc):
    """The step's loss with a Python loop over classes: DM's distance on the decoded images plus the weighted CE."""
    hp = config.idm
    _, _, k_real, _ = jax.random.split(rng, 4)
    real = sample_per_class(k_real, pool, hp.batch_real)

    def loss(stored):
        dec = decode_zoom(stored.reshape((K, config.ipc) + SHAPE), hp.factor)
        total = 0.0
        for c in range(K):
            out_r = models.apply_model(model, variables, real[c], train=True, output="features")[0]
            out_s = models.apply_model(model, variables, dec[c], train=True, output="features")[0]
            total += losses.mean_embedding_distance(out_r["embed"], out_s["embed"])
            ce = -jax.nn.log_softmax(out_s["logits"])[:, c]
            total += hp.ce_weight * acc * jnp.mean(ce)
        return total

    return jax.jit(jax.value_and_grad(loss))(stored)


@pytest.fixture(scope="module")
def idm_run():
    """IDM at IPC 1 with a queue of one network trained one step after every step: the jitted step (compiled once
    for the module), the initial state and the first step's result."""
    model = _model()
    config = _config(ipc=1, train_steps=1)
    _, _, pool = _pool()
    algo = algorithms.get_algorithm(config, model, K, SHAPE)
    syn = algorithms.init_synthetic(jax.random.PRNGKey(1), pool, 1)
    state = algo.init(jax.random.PRNGKey(2), syn)
    step = jax.jit(algo.step)
    return dict(model=model, config=config, syn=syn, state=state, step=step, first=step(state, pool))


def test_step_equals_independent_computation_and_init_is_partitioned_real(idm_run):
    images, labels, pool = _pool()
    model, config, state, step = idm_run["model"], idm_run["config"], idm_run["state"], idm_run["step"]
    state1, m0 = idm_run["first"]
    assert float(m0["net_acc"]) == 0.0  # the network pushed at step 0 has not trained: no CE weight
    # ... and trains after the image step: one SGD step on 8 real images, counted by its meter, kept in the state
    assert float(state1.extras.networks.seen[0]) == 8 and int(state1.extras.networks.count) == 2  # 1 + 1 pushed
    assert not np.allclose(state1.extras.networks.variables["params"]["head"]["kernel"],
                           state.extras.networks.variables["params"]["head"]["kernel"])

    # the step-0 init: per class, mosaics of the 2x2 block means of 4 distinct real images of that class
    init = idm.partitioned_real(1, 2)(jax.random.PRNGKey(9), state.synthetic.extras["stored"], pool)
    means = images.reshape(-1, 4, 2, 4, 2, 1).mean((2, 4))  # (N, 4, 4, 1) block means
    for c in range(K):
        cells = [np.asarray(init[c])[i * 4:(i + 1) * 4, j * 4:(j + 1) * 4] for i in range(2) for j in range(2)]
        rows = [int(np.argmin(np.abs(means - cell).reshape(len(means), -1).max(1))) for cell in cells]
        assert all(np.abs(means[r] - cell).max() < 1e-5 for r, cell in zip(rows, cells))
        assert len(set(rows)) == 4 and set(labels[rows]) == {c}

    # step 1 with every meter at 6/8 correct: the CE term weighs 75 (percent)
    q = state1.extras.networks._replace(correct=jnp.full((1,), 6.0), seen=jnp.full((1,), 8.0))
    state1 = state1.replace(extras=state1.extras._replace(networks=q))
    state2, m1 = step(state1, pool)
    variables = jax.tree.map(lambda a: a[0], q.variables)
    stored = state1.synthetic.extras["stored"]
    expected, grads = _reference_step_loss(config, model, variables, stored, pool, state1.rng, 75.0)
    np.testing.assert_allclose(m1["loss"], expected, rtol=1e-4)
    np.testing.assert_allclose(m1["net_acc"], 75.0)
    np.testing.assert_allclose(state2.synthetic.extras["stored"], stored - 0.5 * grads, rtol=1e-4, atol=1e-5)
    dec = decode_zoom(state2.synthetic.extras["stored"].reshape((K, 1) + SHAPE), 2).reshape((-1,) + SHAPE)
    np.testing.assert_allclose(state2.synthetic.images, dec, rtol=1e-6)  # evaluation sees the decoded set
    np.testing.assert_array_equal(state2.synthetic.labels, np.repeat(np.arange(K), 4))


def test_iid_on_idm_adds_exactly_iids_terms(idm_run):
    """iid.base=idm at IPC 1 (4 decoded images per class, so IID's terms are not zero): the same base terms as IDM,
    the loss is IDM's plus lambda_cm * L_CM (checked against the drawn network's maps), and L_CM > 0."""
    _, _, pool = _pool()
    model, syn, (_, ma) = idm_run["model"], idm_run["syn"], idm_run["first"]
    b = _config("iid")
    b.iid.base, b.iid.lambda_cc, b.iid.lambda_cm = "idm", 0.0, 0.3
    algo = algorithms.get_algorithm(b, model, K, SHAPE)
    _, mb = jax.jit(algo.step)(algo.init(jax.random.PRNGKey(2), syn), iid.prepare(b, None, pool))
    for name in ("loss_base", "loss_ce", "net_acc"):
        np.testing.assert_allclose(mb[name], ma[name], rtol=1e-5)
    np.testing.assert_allclose(mb["loss"], ma["loss"] + 0.3 * mb["loss_cm"], rtol=1e-5)
    assert set(mb) - set(ma) == {"loss_cm"}
    # L_CM of the network drawn at step 0: the one pushed there (queue of 1), on the step's real batch
    k_net, k_real = jax.random.split(jax.random.PRNGKey(2), 4)[1:3]  # the step's keys (state.rng)

    @jax.jit
    def reference_cm(syn_images):
        variables = models.init_model(model, jax.random.split(k_net)[0], SHAPE)
        real = sample_per_class(k_real, pool, 6)
        stored = idm.partitioned_real(1, 2)(jax.random.fold_in(k_real, 1), syn_images, pool)
        dec = decode_zoom(stored.reshape((K, 1) + SHAPE), 2)
        maps = lambda x: models.apply_model(model, variables, x, train=True, output="features")[0]["blocks"][-1]  # noqa
        return sum(losses.covariance_matching(maps(real[c]), maps(dec[c])) for c in range(K))

    expected = float(reference_cm(syn.images))
    np.testing.assert_allclose(mb["loss_cm"], expected, rtol=1e-4)
    assert expected > 0


@pytest.mark.parametrize("name,field,value,message", [
    ("idm", "train_nets", 5, "exceeds idm.queue_size"),
    ("idm", "queue_size", 0, "idm.queue_size must be >= 1"),
    ("idm", "factor", 9, "multi-formation factor"),
    ("idm", "ce_weight", -1.0, "idm.ce_weight must be >= 0"),
    ("iid", "new_every", 0, "iid.idm.new_every must be >= 1"),
])
def test_bad_settings_are_one_line_config_errors(name, field, value, message):
    config = _config(name, **{"queue_size": 2, field: value})
    if name == "iid":
        config.iid.base = "idm"
    with pytest.raises(ConfigError, match=message) as info:
        algorithms.get_algorithm(config, _model(), K, SHAPE)
    assert "\n" not in str(info.value)
