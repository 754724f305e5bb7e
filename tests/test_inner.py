"""ddjax.inner: the unrolled student loop (truncation, remat, trajectory reuse, first-order lr gradient)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ddjax import inner
from ddjax.errors import ConfigError

KEY = jax.random.PRNGKey(0)
LABELS = jnp.array([0, 1, 2, 0, 1, 2])


def linear_ce(theta, x, y):
    """Softmax regression: a tiny stand-in for the student network."""
    logits = x.reshape(x.shape[0], -1) @ theta["w"] + theta["b"]
    return jnp.mean(-jax.nn.log_softmax(logits)[jnp.arange(y.shape[0]), y])


def images():
    return jax.random.normal(jax.random.PRNGKey(1), (6, 2, 2, 1))


def theta0():
    return {"w": 0.1 * jax.random.normal(jax.random.PRNGKey(2), (4, 3)), "b": jnp.zeros(3)}


def run(x, lr, **kw):
    kw = {"num_steps": 6, "batch_size": 1, **kw}
    return inner.student_steps(linear_ce, kw.pop("theta", theta0()), x, LABELS, lr, KEY, **kw)


def outer(x, lr, **kw):
    p = run(x, lr, **kw).params
    return jnp.sum(p["w"] ** 2) + jnp.sum(jnp.sin(p["b"]))


def test_minibatches_are_permutation_chunks():
    idx = np.asarray(inner.minibatch_indices(KEY, 5, 2, 5))  # 10 slots = two permutations of 5
    assert idx.shape == (5, 2)
    flat = idx.ravel()
    assert sorted(flat[:5]) == list(range(5)) and sorted(flat[5:]) == list(range(5))


def test_plain_unroll_matches_numpy_sgd():
    x, lr = images(), 0.3
    res = run(x, lr)
    schedule = np.asarray(inner.minibatch_indices(jax.random.split(KEY)[0], 6, 1, 6))
    w, b = np.asarray(theta0()["w"], np.float64), np.zeros(3)
    xs, ys = np.asarray(x, np.float64).reshape(6, -1), np.asarray(LABELS)
    grad_sum_w = np.zeros_like(w)
    for i in range(6):
        j = schedule[i, 0]
        logits = xs[j] @ w + b
        p = np.exp(logits - logits.max()); p /= p.sum()
        p[ys[j]] -= 1.0                      # d CE / d logits
        gw, gb = np.outer(xs[j], p), p
        grad_sum_w += gw
        w, b = w - lr * gw, b - lr * gb
    np.testing.assert_allclose(res.params["w"], w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(res.params["b"], b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(res.grad_sum["w"], grad_sum_w, rtol=1e-5, atol=1e-6)


def test_truncation_cuts_gradient_flow_to_early_inputs():
    x = images()
    schedule = np.asarray(inner.minibatch_indices(jax.random.split(KEY)[0], 6, 1, 6))[:, 0]
    full = np.abs(np.asarray(jax.grad(outer)(x, 0.5))).reshape(6, -1).sum(1)
    assert (full > 0).all()
    for iota in (2, 4):
        g = np.abs(np.asarray(jax.grad(lambda z: outer(z, 0.5, truncate=iota))(x))).reshape(6, -1).sum(1)
        early, late = schedule[:iota], schedule[iota:]
        assert (g[early] == 0).all(), "images used only before iota must get no gradient"
        assert (g[late] > 0).all()
    # the lr gradient too only sees the last steps: with iota = N - 1 it equals the one-step formula's
    g_lr_trunc = jax.grad(lambda a: outer(x, a, truncate=5))(0.5)
    assert np.isfinite(g_lr_trunc) and g_lr_trunc != jax.grad(lambda a: outer(x, a))(0.5)


def test_remat_and_unrolled_scan_give_the_same_hypergradient():
    x = images()
    ref = jax.grad(outer, argnums=(0, 1))(x, 0.5, truncate=2)
    for kw in ({"remat": True}, {"scan_unroll": True}, {"remat": True, "scan_unroll": 3}):
        got = jax.grad(outer, argnums=(0, 1))(x, 0.5, truncate=2, **kw)
        np.testing.assert_allclose(got[0], ref[0], rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(got[1], ref[1], rtol=1e-5)


def test_hypergradient_matches_finite_differences():
    x = images()
    g = np.asarray(jax.grad(outer)(x, 0.5)).ravel()
    direction = np.array(jax.random.normal(jax.random.PRNGKey(3), x.shape), np.float64).ravel()
    direction /= np.linalg.norm(direction)
    f = lambda z: float(outer(jnp.asarray(z, jnp.float32).reshape(x.shape), 0.5))  # noqa: E731
    base = np.asarray(x, np.float64).ravel()
    h = 1e-2
    fd = (f(base + h * direction) - f(base - h * direction)) / (2 * h)
    np.testing.assert_allclose(g @ direction, fd, rtol=2e-2, atol=1e-4)


def test_trajectory_reuse_replays_the_tail_from_theta_tau():
    x, tau = images(), 2
    full = run(x, 0.3, record_at=tau)
    tail = run(x, 0.3, theta=full.params_at, start_step=tau, num_steps=6 - tau, total_steps=6)
    np.testing.assert_allclose(tail.params["w"], full.params["w"], rtol=1e-6, atol=1e-7)
    head = run(x, 0.3, num_steps=tau, total_steps=6)
    np.testing.assert_allclose(full.params_at["w"], head.params["w"], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("kw, match", [
    ({"truncate": 7}, "truncate"),
    ({"batch_size": 7}, "batch size"),
    ({"record_at": 9}, "record_at"),
])
def test_bad_arguments_are_one_line_errors(kw, match):
    with pytest.raises(ConfigError, match=match):
        run(images(), 0.3, **kw)
