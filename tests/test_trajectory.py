"""MTT and SATM: SATM reduces to MTT with its parts off, ε has norm ρ, the first-order lr gradient matches a hand
computation, trajectory reuse replays the tail, expert training, bad input, 1-vs-8-device equality."""
import io

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from ddjax import algorithms, experts, inner, models
from ddjax.algorithms import trajectory
from ddjax.errors import ConfigError, DataNotFoundError
from ddjax.sharding import make_mesh, replicate
from step_checks import assert_step_gradient_matches_fd

K, IPC, SHAPE = 3, 4, (8, 8, 1)


def _model():
    return models.build_model("convnet", K, width=8, depth=2)


def _config(name="satm", **hp):
    c = ml_collections.ConfigDict(dict(algorithm=name, ipc=IPC, dsa_strategy="none"))
    c[name] = trajectory.satm_config() if name == "satm" else trajectory.mtt_config()
    h = c[name]
    h.syn_steps, h.expert_epochs, h.max_start_epoch, h.lr_img, h.lr_lr = 4, 2, 2, 10.0, 1e-3
    h.batch_syn = 6
    h.scan_unroll = 1  # rolled: compiles faster; the tiny nets run fast either way
    for key, value in hp.items():
        obj = h
        *path, last = key.split(".")
        for p in path:
            obj = obj[p]
        obj[last] = value
    return c


def _buffer(num_experts=2, snapshots=5):
    """A stand-in expert buffer: a random walk from the model's initialisation."""
    init = models.init_model(_model(), jax.random.PRNGKey(0), SHAPE)["params"]
    keys = iter(jax.random.split(jax.random.PRNGKey(1), 100))

    def walk(p):
        steps = 0.05 * jax.random.normal(next(keys), (num_experts, snapshots) + p.shape)
        return p[None, None] + jnp.cumsum(steps, axis=1)
    return experts.ExpertBuffer(params=jax.tree.map(walk, init))


def _synthetic():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(K), IPC).astype(np.int32)
    images = (rng.normal(size=(K * IPC,) + SHAPE) + labels[:, None, None, None]).astype(np.float32)
    return algorithms.SyntheticSet(images=jnp.asarray(images), labels=jnp.asarray(labels))


def _one_step(config, mesh=None, buffer=None):
    algo = algorithms.get_algorithm(config, _model(), K, SHAPE, mesh=mesh)
    state = algo.init(jax.random.PRNGKey(3), _synthetic())
    buffer = _buffer() if buffer is None else buffer
    if mesh is not None:
        state, buffer = replicate(state, mesh), replicate(buffer, mesh)
    return jax.jit(algo.step)(state, buffer)


def test_satm_with_its_parts_off_is_mtt():
    mtt_state, mtt_metrics = _one_step(_config("mtt"))
    off = dict(truncate=0, noise_gamma=0.0, **{"sam.variant": "none"})
    s_state, s_metrics = _one_step(_config("satm", lr_gradient="autodiff", **off))
    np.testing.assert_allclose(s_state.synthetic.images, mtt_state.synthetic.images, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(s_state.synthetic.extras["lr"], mtt_state.synthetic.extras["lr"], rtol=1e-6)
    np.testing.assert_allclose(s_metrics["loss"], mtt_metrics["loss"], rtol=1e-6)
    # the first-order lr rule changes only the learning rate, not the image hypergradient
    f_state, _ = _one_step(_config("satm", **off))
    np.testing.assert_allclose(f_state.synthetic.images, mtt_state.synthetic.images, rtol=1e-6, atol=1e-7)
    assert mtt_state.synthetic.images.shape == (K * IPC,) + SHAPE
    assert not np.allclose(mtt_state.synthetic.images, _synthetic().images)


def test_mtt_hypergradient_matches_finite_differences_of_the_loss():
    # a smooth activation (ReLU kinks make a float32 finite difference meaningless) and a near target so the loss
    # is sensitive to the images
    config = _config("mtt", lr_img=1.0, momentum=0.0, lr_teacher=0.1)
    smooth = models.build_model("convnet", K, width=8, depth=2, activation="sigmoid")
    algo = algorithms.get_algorithm(config, smooth, K, SHAPE)
    state = algo.init(jax.random.PRNGKey(3), _synthetic())
    init = models.init_model(smooth, jax.random.PRNGKey(0), SHAPE)["params"]
    buffer = experts.ExpertBuffer(params=jax.tree.map(
        lambda p: jnp.stack([p, p + 0.01, p + 0.02, p + 0.03, p + 0.04])[None], init))
    # along the gradient: a random direction's change of this loss (~1) is ~1e-5, a few float32 steps of it
    assert_step_gradient_matches_fd(jax.jit(algo.step), state, buffer, directions=0, along_gradient=True, eps=5e-2,
                                    rtol=1e-2, atol=1e-6)


def test_sam_perturbation_has_norm_rho_and_changes_the_update():
    state, metrics = _one_step(_config("satm", **{"sam.rho": 0.05, "sam.rho_relative": False}))
    np.testing.assert_allclose(metrics["eps_norm"], 0.05, rtol=1e-5)
    plain, _ = _one_step(_config("satm", **{"sam.variant": "none"}))
    assert not np.allclose(state.synthetic.images, plain.synthetic.images)


@pytest.mark.parametrize("variant", ["gsam", "vasso"])  # asam's formula is checked in test_sam
def test_sam_variants_and_ema_run(variant):
    state, metrics = _one_step(_config("satm", ema_decay=0.9, **{"sam.variant": variant}))
    assert np.isfinite(float(metrics["loss"]))
    ema = state.extras.ema_images
    np.testing.assert_allclose(ema, 0.9 * _synthetic().images + 0.1 * state.synthetic.images, rtol=1e-5, atol=1e-6)
    view = trajectory.eval_view(state, _config("satm", ema_decay=0.9).satm)
    assert view["images"] is ema and float(view["lr"]) == float(state.synthetic.extras["lr"])


def test_trajectory_reuse_replays_the_tail_of_the_first_unroll():
    # with a vanishing perturbation and no noise, the second (reused) unroll ends where the first did
    _, metrics = _one_step(_config("satm", noise_gamma=0.0, **{"sam.rho": 1e-9}))
    np.testing.assert_allclose(metrics["loss_perturbed"], metrics["loss"], rtol=1e-5)


def test_first_order_lr_gradient_matches_a_hand_computation():
    """Eq. 12 on softmax regression: dL/dα ≈ (2(θ_N − θ*)/δ) · (−Σ_i ∇L_CE(θ_i)), computed here in numpy."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 2, 2, 1)).astype(np.float32)
    y = np.array([0, 1, 2, 0])
    w0 = (0.1 * rng.normal(size=(4, 3))).astype(np.float32)
    target = {"w": jnp.asarray(w0 + 0.3)}
    lr, key = 0.4, jax.random.PRNGKey(0)

    def ce(theta, xb, yb):
        logits = xb.reshape(xb.shape[0], -1) @ theta["w"]
        return jnp.mean(-jax.nn.log_softmax(logits)[jnp.arange(yb.shape[0]), yb])

    res = inner.student_steps(ce, {"w": jnp.asarray(w0)}, jnp.asarray(x), jnp.asarray(y), lr, key, num_steps=3,
                              batch_size=4)
    denom = float(jnp.sum((w0 - target["w"]) ** 2))
    got = trajectory._first_order_lr_grad(res, target, jnp.float32(denom))

    w, grad_sum = w0.astype(np.float64), np.zeros((4, 3))
    xs = x.reshape(4, -1).astype(np.float64)
    for _ in range(3):  # batch = whole set, so the order of samples does not matter
        logits = xs @ w
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        p[np.arange(4), y] -= 1.0
        g = xs.T @ p / 4
        grad_sum += g
        w = w - lr * g
    expected = np.sum(2 * (w - np.asarray(target["w"], np.float64)) / denom * (-grad_sum))
    np.testing.assert_allclose(float(got), expected, rtol=1e-4)


def test_one_and_eight_devices_agree():
    """The whole set (12 images) a student step over 8 devices: unevenly split (2 rows a device, 4 of them
    padding; ddjax.sharding's policy), equal to one device."""
    config = _config("satm", batch_syn=0)
    single, m1 = _one_step(config)
    multi, m8 = _one_step(config, mesh=make_mesh())
    np.testing.assert_allclose(multi.synthetic.images, single.synthetic.images, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(m8["loss"], m1["loss"], rtol=1e-5)


def test_train_experts_snapshots_every_epoch():
    rng = np.random.default_rng(0)
    labels = np.arange(24) % K
    images = (rng.normal(size=(24,) + SHAPE) + labels[:, None, None, None]).astype(np.float32)
    buffer = experts.train_experts(jax.random.PRNGKey(0), _model(), images, labels, num_experts=2, epochs=2,
                                   batch_size=8, dsa_strategy="none")
    assert buffer.num_experts == 2 and buffer.num_snapshots == 3
    from ddjax import evaluate
    init = evaluate.init_networks(jax.random.PRNGKey(0), _model(), SHAPE, num_seeds=2)["params"]
    final = evaluate.train_networks(jax.random.PRNGKey(0), _model(), images, labels, num_seeds=2, epochs=2,
                                    lr=0.01, momentum=0.0, weight_decay=0.0, batch_size=8, dsa_strategy="none",
                                    lr_decay=False)["params"]
    for snap, want in ((0, init), (2, final)):
        jax.tree.map(lambda b, w: np.testing.assert_allclose(b[:, snap], w, rtol=1e-5, atol=1e-6),
                     buffer.params, want)
    trajectory.check_buffer(buffer, _model(), SHAPE)
    with pytest.raises(ConfigError, match="does not hold parameters of this model"):
        trajectory.check_buffer(buffer, models.build_model("convnet", K, width=16, depth=2), SHAPE)
    flat = experts.train_experts(jax.random.PRNGKey(0), _model(), images, labels, num_experts=2, epochs=1,
                                 batch_size=8, dsa_strategy="none", sharpness=("gsam", 0.05, 0.4))
    assert not np.allclose(flat.params["head"]["kernel"][:, 1], buffer.params["head"]["kernel"][:, 1])


def test_batch_norm_experts_are_refused():
    images = np.zeros((6,) + SHAPE, np.float32)
    bn = models.build_model("convnet", K, width=8, depth=2, norm="batch")
    with pytest.raises(ConfigError, match="norm=instance"):
        experts.train_experts(jax.random.PRNGKey(0), bn, images, np.arange(6) % K, num_experts=1, epochs=1)


@pytest.mark.parametrize("hp, match", [
    ({"truncate": 4}, "iota"),
    ({"sam.rho": -0.1}, "rho must be >= 0"),
    ({"sam.variant": "adam"}, "sam, asam, gsam, vasso"),
    ({"reuse_at": 1, "truncate": 3}, "tau"),
    ({"batch_syn": 99}, "batch_syn"),
    ({"lr_gradient": "second"}, "autodiff, first_order"),
])
def test_bad_hyper_parameters_are_one_line_errors(hp, match):
    with pytest.raises(ConfigError, match=match):
        algorithms.get_algorithm(_config("satm", **hp), _model(), K, SHAPE)


def test_start_epoch_beyond_the_buffer_is_refused():
    with pytest.raises(ConfigError, match="holds epochs 0..4"):
        experts.check_segment(5, max_start_epoch=4, expert_epochs=2)
    experts.check_segment(5, max_start_epoch=3, expert_epochs=2)


def test_missing_experts_say_how_to_make_them(tmp_path):
    from launch.config import base_config
    from ddjax import data
    config = base_config("satm")
    config.pretrained_dir = str(tmp_path)
    config.make_pretrained = False
    dataset = data.load_dataset("digits")
    with pytest.raises(DataNotFoundError, match="python -m launch.experts"):
        algorithms.prepare_data(config, dataset, None, stream=io.StringIO())


def _default_hp(name, n, **hp):
    """The algorithm's default hyper-parameters with ``syn_steps = n`` and ``hp`` on top (the auto rules' input)."""
    h = trajectory.satm_config() if name == "satm" else trajectory.mtt_config()
    h.syn_steps = n
    h.update(hp)
    return h


def test_auto_scan_unroll_rolls_long_differentiated_loops_on_cpu():
    """``scan_unroll=0`` on CPU: fully unrolled below ``ROLL_FROM_STEPS`` differentiated steps (N − ι), rolled from
    there on (docs/performance.md, 2026-12-07); an explicit value is kept."""
    assert jax.default_backend() == "cpu" and trajectory.ROLL_FROM_STEPS == 25

    def resolved(name, n, **hp):
        return trajectory.resolved_scan_unroll(_default_hp(name, n, **hp))

    assert resolved("mtt", 24) is True and resolved("mtt", 25) == 1 and resolved("mtt", 80) == 1
    assert resolved("satm", 20) is True                  # ι = 20 − 6 = 14: 6 differentiated steps
    assert resolved("satm", 50) is True                  # ι = 34: 16 differentiated steps
    assert resolved("satm", 80) == 1                     # ι = 54: 26 differentiated steps
    assert resolved("mtt", 30, truncate=20) is True      # 10 differentiated steps
    assert resolved("mtt", 80, scan_unroll=3) == 3 and resolved("mtt", 5, scan_unroll=1) == 1


def test_auto_remat_rematerialises_exactly_the_loops_the_cpu_rule_rolls(monkeypatch):
    """``remat=None`` on CPU: ``jax.checkpoint`` on the differentiated steps exactly where ``scan_unroll=0`` rolls
    them (a rolled loop stacks every step's residuals; docs/performance.md, "Remat where the loop rolls"), and the
    inner loop receives that choice; an explicit ``remat`` or ``scan_unroll`` keeps the residuals unless asked."""
    def resolved(name, n, **hp):
        return trajectory.resolved_remat(_default_hp(name, n, **hp))

    assert trajectory.mtt_config().remat is None
    assert resolved("mtt", 24) is False and resolved("mtt", 25) is True and resolved("mtt", 80) is True
    assert resolved("satm", 50) is False and resolved("satm", 80) is True   # 16 and 26 differentiated steps
    assert resolved("mtt", 30, truncate=20) is False                        # 10 differentiated steps: unrolled
    assert resolved("mtt", 80, scan_unroll=1) is False                      # rolled on request (configs/mtt_tiny.py)
    assert resolved("mtt", 5, remat=True) is True and resolved("mtt", 80, remat=False) is False

    seen = []
    student_steps = inner.student_steps
    monkeypatch.setattr(inner, "student_steps", lambda *a, **kw: seen.append(kw["remat"]) or student_steps(*a, **kw))
    for n in (24, 25):
        algo = algorithms.get_algorithm(_config("mtt", syn_steps=n, scan_unroll=0), _model(), K, SHAPE)
        jax.eval_shape(algo.step, algo.init(jax.random.PRNGKey(3), _synthetic()), _buffer())
    assert seen == [False, True]
