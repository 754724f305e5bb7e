"""SATM's sharpness-aware step (issue 14 item 5): ε's sign and effect on a quadratic with a known SAM update, ρ
relative to ‖ϕ‖, the smoothing noise's scale, ι's default, the easy-to-hard window and the first-order α rule as
the step uses them, and the measured sharpness L(ϕ+ε) − L(ϕ) of a real step."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from ddjax import algorithms, experts, models, sam
from ddjax.algorithms import trajectory
from ddjax.errors import ConfigError

K, IPC, SHAPE = 3, 2, (8, 8, 1)


def _quadratic(seed=0, d=6):
    rng = np.random.default_rng(seed)
    m = rng.normal(size=(d, d))
    a = m @ m.T + d * np.eye(d)          # symmetric positive definite
    b, x = rng.normal(size=d), rng.normal(size=d)
    return a, b, x


@pytest.mark.parametrize("relative", [False, True])
def test_sam_gradient_on_a_quadratic_is_the_known_sam_update(relative):
    """F(x) = ½xᵀAx − bᵀx: g = Ax − b, ε = ρ g/‖g‖ (ρ‖x‖ with relative=True), the descent gradient is
    A(x + ε) − b and the sharpness F(x + ε) − F(x) = ρ‖g‖ + ½ρ²ĝᵀAĝ > 0 (a flipped or dropped ε fails)."""
    a, b, x = _quadratic()
    rho = 0.05 if relative else 0.3

    def fun(v, scale, restart=None):
        return 0.5 * v @ jnp.asarray(a, jnp.float32) @ v * scale - jnp.asarray(b, jnp.float32) @ v, None
    grad_fn = sam.value_and_grad(fun, sam.perturbation(rho, variant="sam", relative=relative))
    (loss, _), (g_sam, _), _, info = jax.jit(grad_fn)(optax_empty(), jax.random.PRNGKey(0),
                                                     jnp.asarray(x, jnp.float32), jnp.float32(1.0))
    g = a @ x - b
    radius = rho * np.linalg.norm(x) if relative else rho
    eps = radius * g / np.linalg.norm(g)
    np.testing.assert_allclose(float(info["eps_norm"]), radius, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(g_sam), a @ (x + eps) - b, rtol=1e-5, atol=1e-5)
    f = lambda v: 0.5 * v @ a @ v - b @ v  # noqa: E731
    np.testing.assert_allclose(float(loss), f(x), rtol=1e-5)
    sharp = float(info["loss_perturbed"] - loss)
    g_hat = g / np.linalg.norm(g)
    expected = radius * np.linalg.norm(g) + 0.5 * radius ** 2 * g_hat @ a @ g_hat
    np.testing.assert_allclose(sharp, expected, rtol=1e-3)
    assert sharp > 0


def optax_empty():
    import optax
    return optax.EmptyState()


def test_relative_rho_is_refused_for_asam_which_is_already_scale_adaptive():
    with pytest.raises(ConfigError, match="relative"):
        sam.perturbation(0.1, variant="asam", relative=True)


def test_smoothing_noise_has_std_gamma_times_each_images_norm():
    """SATM eq. 10 read as a standard deviation: n_j ~ N(0, (γ‖ϕ_j‖₂)² I), independent per pixel and image."""
    rng = np.random.default_rng(0)
    images = rng.normal(size=(4, 40, 40, 3)).astype(np.float32) * np.array([0.5, 1.0, 2.0, 4.0])[:, None, None, None]
    gamma = 0.01
    noise = np.asarray(sam.smoothing_noise(jax.random.PRNGKey(3), jnp.asarray(images), gamma), np.float64)
    norms = np.linalg.norm(images.reshape(4, -1), axis=1)
    flat = noise.reshape(4, -1)
    np.testing.assert_allclose(flat.std(axis=1), gamma * norms, rtol=0.05)   # 4,800 pixels: ~1% std error
    assert np.all(np.abs(flat.mean(axis=1)) < 4 * gamma * norms / np.sqrt(flat.shape[1]))
    assert abs(np.corrcoef(flat[0], flat[1])[0, 1]) < 0.06
    assert not np.asarray(sam.smoothing_noise(jax.random.PRNGKey(3), jnp.asarray(images), 0.0)).any()


@pytest.mark.parametrize("n", [1, 2, 3, 20, 30, 50, 80])
def test_iota_defaults_to_keeping_the_last_third(n):
    hp = trajectory.satm_config()
    hp.syn_steps = n
    assert trajectory.resolved_truncate(hp) == n - n // 3
    assert trajectory.resolved_reuse_at(hp) == n - n // 3   # τ = ι (paper §3.3.2)
    mtt = trajectory.mtt_config()
    mtt.syn_steps = n
    assert trajectory.resolved_truncate(mtt) == 0


# ------------------------------------------------------------------------------------ through the real step


def _config(name="satm", **hp):
    c = ml_collections.ConfigDict(dict(algorithm=name, ipc=IPC, dsa_strategy="none"))
    c[name] = algorithms.default_config(name)
    h = c[name]
    h.syn_steps, h.expert_epochs, h.max_start_epoch, h.lr_img, h.lr_lr, h.lr_teacher = 4, 1, 6, 1.0, 1e-3, 0.05
    for key, value in hp.items():
        target = h
        *path, last = key.split("__")
        for p in path:
            target = target[p]
        target[last] = value
    return c


def _setup(config, snapshots=8):
    """A tiny model, a random 'expert buffer' of its parameters (training does not matter to the arithmetic)."""
    model = models.build_model("convnet", K, width=4, depth=1)
    keys = jax.random.split(jax.random.PRNGKey(5), 2 * snapshots)
    params = jax.vmap(lambda k: models.init_model(model, k, SHAPE)["params"])(keys)
    buffer = experts.ExpertBuffer(params=jax.tree.map(lambda p: p.reshape((2, snapshots) + p.shape[1:]), params))
    algo = algorithms.get_algorithm(config, model, K, SHAPE)
    images = jax.random.normal(jax.random.PRNGKey(1), (K * IPC,) + SHAPE)
    syn = algorithms.SyntheticSet(images=images, labels=jnp.repeat(jnp.arange(K), IPC))
    return algo, algo.init(jax.random.PRNGKey(2), syn), buffer


def test_step_sharpness_is_rho_times_the_gradient_norm_to_first_order():
    """In the real SATM step (γ = 0): L(ϕ+ε) − L(ϕ) ≈ ρ‖∇L(ϕ)‖ > 0 for a small ρ, and the reported gradient (at ϕ+ε)
    is close to ∇L(ϕ) — so ε points up the loss and enters the update."""
    rho = 3e-3   # small enough for first order, large enough that the float32 losses (~1) resolve the difference
    config = _config(noise_gamma=0.0, sam__rho=rho, sam__rho_relative=False)
    algo, state, buffer = _setup(config)
    mtt_like = _config(noise_gamma=0.0, sam__variant="none", sam__rho=0.0)
    algo0 = algorithms.get_algorithm(mtt_like, models.build_model("convnet", K, width=4, depth=1), K, SHAPE)
    step, step0 = jax.jit(algo.step), jax.jit(algo0.step)
    for _ in range(3):
        new, m = step(state, buffer)
        _, m0 = step0(state, buffer)
        sharp = float(m["loss_perturbed"] - m["loss"])
        np.testing.assert_allclose(float(m["loss"]), float(m0["loss"]), rtol=1e-6)  # same ϕ, same segment
        # atol: 4 float32 steps of the loss, the rounding of a difference of two losses near 1
        np.testing.assert_allclose(sharp, rho * float(m0["grad_norm"]), rtol=0.05,
                                   atol=4 * np.finfo(np.float32).eps * abs(float(m["loss"])))
        assert sharp > 0
        state = new


def test_relative_rho_scales_epsilon_with_the_images_norm():
    config = _config(noise_gamma=0.0, sam__rho=0.02, sam__rho_relative=True)
    algo, state, buffer = _setup(config)
    _, m = jax.jit(algo.step)(state, buffer)
    np.testing.assert_allclose(float(m["eps_norm"]), 0.02 * float(jnp.linalg.norm(state.synthetic.images)),
                               rtol=1e-5)


def test_easy_to_hard_window_bounds_every_sampled_start_epoch():
    """SATM-DA / DATM: the start epoch's upper end grows linearly from initial_max_start_epoch to max_start_epoch
    over grow_steps; every step's sampled start lies below that step's bound, and the bound is reached."""
    config = _config(noise_gamma=0.0, window__initial_max_start_epoch=1, window__grow_steps=10, max_start_epoch=6)
    hp = config.satm
    for s, expected in [(0, 1), (1, 1), (2, 2), (5, 3), (9, 5), (10, 6), (50, 6)]:
        assert int(trajectory.max_start(hp, jnp.asarray(s))) == expected   # floor(1 + min(s/10, 1) * 5)
    algo, state, buffer = _setup(config)
    step = jax.jit(algo.step)
    starts = []
    for s in range(24):
        state, m = step(state, buffer)
        bound = int(np.floor(1 + min(s / 10, 1) * 5))
        starts.append(int(m["start_epoch"]))
        assert 0 <= starts[-1] < bound, (s, starts)
    assert starts[:2] == [0, 0] and max(starts[12:]) >= 3


def test_first_order_lr_rule_in_the_step_is_exact_for_one_inner_step():
    """Eq. 12: ∂𝓛/∂α ≈ (∂𝓛/∂θ_N)·(−Σ∇L_CE(θ_i)). With N = 1 nothing downstream depends on α except θ_1, so the
    SAM step's first-order α update (from the unperturbed evaluation) equals autodiff's exact one.
    (tests/test_trajectory.py checks the rule against a hand computation at N > 1.)"""
    new_lrs = {}
    for rule in ("first_order", "autodiff"):
        config = _config(noise_gamma=0.0, sam__rho=0.05, syn_steps=1, truncate=0, lr_gradient=rule)
        algo, state, buffer = _setup(config)
        new, _ = jax.jit(algo.step)(state, buffer)
        new_lrs[rule] = float(new.synthetic.extras["lr"])
    assert abs(new_lrs["first_order"] - 0.05) > 1e-6          # α moved
    np.testing.assert_allclose(new_lrs["first_order"], new_lrs["autodiff"], rtol=1e-5)
