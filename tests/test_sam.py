"""ddjax.sam: perturbations and GSAM's descent against float64 numpy oracles."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ddjax import sam
from ddjax.errors import ConfigError


def _tree(seed, scale=1.0):
    rng = np.random.default_rng(seed)
    return {"images": (scale * rng.normal(size=(2, 4, 4, 1))).astype(np.float32),
            "lr": np.float32(scale * rng.normal()),
            "w": [(scale * rng.normal(size=(3, 5))).astype(np.float32)]}


def _flat(tree):
    return np.concatenate([np.asarray(x, np.float64).ravel() for x in jax.tree.leaves(tree)])


def _close(tree, flat, **kw):
    np.testing.assert_allclose(_flat(tree), flat, **kw)


def test_sam_epsilon_has_norm_rho_and_direction_of_g():
    g, rho = _tree(0), 0.37
    want = rho * _flat(g) / np.linalg.norm(_flat(g))
    for variant in ("sam", "gsam"):
        eps = sam.sam_perturbation(g, rho, variant=variant)
        assert jax.tree.structure(eps) == jax.tree.structure(g)
        np.testing.assert_allclose(np.linalg.norm(_flat(eps)), rho, rtol=1e-6)
        _close(eps, want, rtol=1e-5, atol=1e-7)
        p = sam.perturbation(rho, variant=variant)
        state = p.init(g)
        eps2, state2 = p.perturb(g, state)
        _close(eps2, want, rtol=1e-5, atol=1e-7)
        assert state2 == state
    # rho may be a traced scalar (a schedule) inside jit
    eps3 = jax.jit(lambda g, r: sam.sam_perturbation(g, r))(g, jnp.float32(rho))
    np.testing.assert_allclose(np.linalg.norm(_flat(eps3)), rho, rtol=1e-6)


def test_asam_matches_numpy():
    g, w, rho, eta = _tree(1), _tree(2), 0.5, 0.01
    t = np.abs(_flat(w)) + eta
    want = rho * t * t * _flat(g) / np.linalg.norm(t * _flat(g))
    eps = sam.sam_perturbation(g, rho, variant="asam", params=w, eta=eta)
    _close(eps, want, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(np.linalg.norm(_flat(eps) / t), rho, rtol=1e-5)  # ‖T⁻¹ε‖ = ρ
    eps2, _ = sam.perturbation(rho, variant="asam", eta=eta).perturb(g, optax.EmptyState(), w)
    _close(eps2, want, rtol=1e-5, atol=1e-7)
    with pytest.raises(ConfigError, match="needs params"):
        sam.sam_perturbation(g, rho, variant="asam")


def test_zero_gradient_gives_zero_epsilon_and_finite_gradients():
    zero = jax.tree.map(np.zeros_like, _tree(3))
    w, v = _tree(4), _tree(5)
    vasso = sam.perturbation(0.1, variant="vasso")
    fns = {
        "sam": lambda g: sam.sam_perturbation(g, 0.1),
        "asam": lambda g: sam.sam_perturbation(g, 0.1, variant="asam", params=w),
        "vasso": lambda g: vasso.perturb(g, vasso.init(g))[0],
        "gsam": lambda g: sam.gsam_descent(g, g, 0.2),
    }
    for name, fn in fns.items():
        eps = fn(zero)
        assert np.all(_flat(eps) == 0), name
        grad = jax.grad(lambda g: optax.tree.vdot(fn(g), v))(zero)
        assert np.all(np.isfinite(_flat(grad))), name
    # GSAM with a zero perturbed gradient: g_perp = g, descent = -alpha g
    g = _tree(6)
    _close(sam.gsam_descent(g, zero, 0.2), -0.2 * _flat(g), rtol=1e-6)
    assert np.all(np.isfinite(_flat(jax.grad(lambda z: optax.tree.vdot(sam.gsam_descent(g, z, 0.2), v))(zero))))


def test_sam_gradient_matches_finite_differences():
    """The zero-safe normalisation keeps the ordinary gradient at g != 0 (d/dg of <ε(g), v>)."""
    g, v, rho = _tree(7), _tree(8), 0.3
    grad = _flat(jax.grad(lambda g: optax.tree.vdot(sam.sam_perturbation(g, rho), v))(g))
    x, u = _flat(g), _flat(v)
    f = lambda x: rho * np.dot(x, u) / np.linalg.norm(x)
    h = 1e-6
    fd = np.array([(f(x + h * e) - f(x - h * e)) / (2 * h) for e in np.eye(x.size)])
    np.testing.assert_allclose(grad, fd, rtol=1e-4, atol=1e-6)


def test_gsam_descent_matches_numpy_and_is_orthogonal():
    g, gp, alpha = _tree(9), _tree(10), 0.3
    x, y = _flat(g), _flat(gp)
    perp = x - np.dot(x, y) / np.dot(y, y) * y
    d = sam.gsam_descent(g, gp, alpha)
    assert jax.tree.structure(d) == jax.tree.structure(g)
    _close(d, y - alpha * perp, rtol=1e-5, atol=1e-6)
    # the change -alpha*g_perp is orthogonal to g_sam: same component along g_sam as SAM's descent
    change = _flat(d) - y
    assert abs(np.dot(change, y)) < 1e-5 * np.linalg.norm(change) * np.linalg.norm(y)
    assert abs(np.dot(change, x)) > 0.1 * np.linalg.norm(change) * np.linalg.norm(x)  # it does move against g
    _close(sam.gsam_descent(g, gp, 0.0), y, rtol=0, atol=0)


def test_vasso_state_over_three_steps_matches_numpy():
    rho, theta = 0.2, 0.4
    p = sam.perturbation(rho, variant="vasso", theta=theta)
    state = p.init(_tree(11))
    assert int(state.count) == 0 and np.all(_flat(state.direction) == 0)
    step = jax.jit(p.perturb)
    d = None
    for t in range(3):
        g = _tree(20 + t)
        d = _flat(g) if d is None else (1 - theta) * d + theta * _flat(g)
        eps, state = step(g, state)
        assert int(state.count) == t + 1
        _close(state.direction, d, rtol=1e-5, atol=1e-7)
        _close(eps, rho * d / np.linalg.norm(d), rtol=1e-5, atol=1e-7)
    with pytest.raises(ConfigError, match="use ddjax.sam.perturbation"):
        sam.sam_perturbation(_tree(0), rho, variant="vasso")


def test_bad_input_is_one_clear_config_error():
    g = _tree(0)
    for call in (lambda: sam.sam_perturbation(g, 0.1, variant="adam"),
                 lambda: sam.perturbation(0.1, variant="adam")):
        with pytest.raises(ConfigError, match="valid choices: sam, asam, gsam, vasso") as e:
            call()
        assert "\n" not in str(e.value)
    for call in (lambda: sam.sam_perturbation(g, -0.1), lambda: sam.perturbation(-1.0, variant="vasso"),
                 lambda: sam.sam_perturbation(g, float("nan"))):
        with pytest.raises(ConfigError, match="rho must be >= 0"):
            call()
    with pytest.raises(ConfigError, match="theta must be in"):
        sam.perturbation(0.1, variant="vasso", theta=1.5)
    with pytest.raises(ConfigError, match="eta must be >= 0"):
        sam.perturbation(0.1, variant="asam", eta=-0.1)
    with pytest.raises(ConfigError, match="alpha must be >= 0"):
        sam.gsam_descent(g, g, -0.1)
    assert np.all(_flat(sam.sam_perturbation(g, 0.0)) == 0)  # rho = 0 is allowed: no perturbation


def test_documented_image_ema_recipe():
    """The module docstring's EMA recipe: optax.incremental_update(new, ema, 1 - decay) = decay·ema + (1-decay)·new."""
    new, ema, decay = _tree(30), _tree(31), 0.9
    _close(optax.incremental_update(new, ema, step_size=1 - decay), decay * _flat(ema) + (1 - decay) * _flat(new),
           rtol=1e-5, atol=1e-6)


def test_value_and_grad_is_the_gradient_at_the_perturbed_point():
    """``sam.value_and_grad`` on f(x, a) = a·Σx² + Σc·x (+ Σrestart on the second call) against float64 numpy:
    SAM's ε from the (noise-smoothed) gradient, ∇ₓf at x + ε, a's gradient and the loss from the first call, the
    first call's aux handed to the second, and GSAM's descent."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, 3, 3, 1)).astype(np.float32)
    c = rng.normal(size=x.shape).astype(np.float32)
    a, rho, gamma, alpha = np.float32(0.7), 0.3, 0.05, 0.2

    def f(x, a, restart=None):
        loss = a * jnp.sum(x ** 2) + jnp.sum(c * x)
        return (loss if restart is None else loss + jnp.sum(restart)), x

    key = jax.random.PRNGKey(4)
    noisy = np.asarray(x + sam.smoothing_noise(key, jnp.asarray(x), gamma), np.float64)
    norms = np.sqrt(np.sum(np.asarray(x, np.float64) ** 2, axis=(1, 2, 3)))
    assert np.all(np.abs(noisy - x).reshape(2, -1).std(1) < 3 * gamma * norms)  # the noise's scale: γ‖x_j‖
    x64, c64, a64 = np.asarray(x, np.float64), np.asarray(c, np.float64), float(a)
    g1 = 2 * a64 * noisy + c64
    eps = rho * g1 / np.linalg.norm(g1)
    g_sam = 2 * a64 * (x64 + eps) + c64
    for gsam_alpha in (None, alpha):
        grad_fn = jax.jit(sam.value_and_grad(f, sam.perturbation(rho), noise_gamma=gamma, gsam_alpha=gsam_alpha))
        (loss, aux), (gx, ga), state, info = grad_fn(optax.EmptyState(), key, jnp.asarray(x), jnp.asarray(a))
        np.testing.assert_allclose(loss, a64 * np.sum(noisy ** 2) + np.sum(c64 * noisy), rtol=1e-5)
        np.testing.assert_allclose(aux, noisy, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(ga, np.sum(noisy ** 2), rtol=1e-5)
        np.testing.assert_allclose(info["eps_norm"], rho, rtol=1e-5)
        xe = x64 + eps
        np.testing.assert_allclose(info["loss_perturbed"], a64 * np.sum(xe ** 2) + np.sum(c64 * xe) + np.sum(noisy),
                                   rtol=1e-5)
        want = g_sam
        if gsam_alpha is not None:
            g_perp = g1 - np.sum(g1 * g_sam) / np.sum(g_sam ** 2) * g_sam
            want = g_sam - alpha * g_perp
        np.testing.assert_allclose(gx, want, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(info["sam_cosine"], np.sum(g1 * want) / np.linalg.norm(g1) / np.linalg.norm(want),
                                   rtol=1e-4)
        assert state == optax.EmptyState()
