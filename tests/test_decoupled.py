"""Decoupled distillation (SRe2L, RDED, DTL + DSM): batch layouts, DSM's λ distribution, DTL's stop-gradient,
two jitted steps and the relabelled view of every registered method, a leave-one-domain-out leak check, and one-line
errors for bad input."""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from ddjax import algorithms, models, relabel, squeeze
from ddjax.algorithms import decoupled, dtl
from ddjax.errors import CheckpointError, ConfigError, DataNotFoundError
from launch.config import base_config
from style_oracles import np_domain_style, np_normalized_loss

IMAGE_SHAPE = (6, 6, 3)
K = 3


# ----------------------------------------------------------------------------------------------- batches


def test_class_first_batches_and_groups():
    batches, groups = decoupled.recover_batches(3, 4, 2)
    np.testing.assert_array_equal(batches, [[0, 1, 4, 5, 8, 9], [2, 3, 6, 7, 10, 11]])
    np.testing.assert_array_equal(groups, [0, 0])
    batches, groups = decoupled.recover_batches(2, 4, 0, num_groups=2)  # per-domain blocks
    np.testing.assert_array_equal(batches, [[0, 1, 4, 5], [2, 3, 6, 7]])
    np.testing.assert_array_equal(groups, [0, 1])
    with pytest.raises(ConfigError, match="multiple of the 3 seen domains"):
        decoupled.recover_batches(2, 4, 0, num_groups=3)


# -------------------------------------------------------------------------------------------------- DSM


def test_dsm_mixing_ratio_follows_beta_0_1():
    n = 20000
    w = np.asarray(relabel.dsm_weights(jax.random.PRNGKey(0), n, 1000))  # 1000 domains: e == e' in 0.1% of rows
    np.testing.assert_allclose(w.sum(1), 1.0, atol=1e-5)
    top = np.sort(w, axis=1)[:, -1]  # max(λ, 1 - λ) when e != e'
    def folded(lam):  # in float32 as ψ's weights: Beta(0.1, 0.1) puts much mass within 1e-8 of 0 and 1
        return np.maximum(lam, 1 - lam).astype(np.float32)

    assert stats.ks_2samp(top, folded(np.random.default_rng(0).beta(0.1, 0.1, n))).statistic < 0.03
    # the test can tell Beta(0.1, 0.1) from a flatter Beta(0.5, 0.5)
    assert stats.ks_2samp(top, folded(np.random.default_rng(1).beta(0.5, 0.5, n))).statistic > 0.1
    assert np.mean(top > 0.95) > 0.5  # Beta(0.1, 0.1) puts most mass near 0 and 1


# ------------------------------------------------------------------------------------- a tiny pipeline


def tiny_config(algorithm: str):
    c = base_config(algorithm)
    c.ipc = 2
    c.init = "noise"
    hp = c[algorithm]
    hp.squeeze.width = 2
    hp.squeeze.steps = 3
    hp.squeeze.lr = 1e-3
    hp.relabel.views = 2
    if algorithm == "dtl":
        hp.iterations, hp.steps_per_visit, hp.psi_width, hp.psi_res_blocks = 2, 1, 2, 1
        c.steps = 2
    elif algorithm == "sre2l":
        hp.iterations = 2
        c.steps = 2
    else:
        hp.mipc = 4
        c.steps = 1
    return c


class FakeDataset:
    name = "toy"
    num_classes = K
    image_shape = IMAGE_SHAPE
    mean = np.full(3, 0.5, np.float32)
    std = np.full(3, 0.25, np.float32)

    def __init__(self):
        rng = np.random.default_rng(0)
        self.train_labels = np.repeat(np.arange(K), 6).astype(np.int32)
        self.train_images = (rng.normal(size=(len(self.train_labels),) + IMAGE_SHAPE)
                             + self.train_labels[:, None, None, None]).astype(np.float32)


@pytest.fixture(scope="module")
def dataset():
    return FakeDataset()


@pytest.fixture(scope="module")
def teacher(dataset):
    c = tiny_config("dtl")
    model = squeeze.build_squeeze_model(c.dtl.squeeze, K)
    variables, losses = squeeze.train_squeeze(jax.random.PRNGKey(0), model, [(dataset.train_images,
                                              dataset.train_labels)], mean=dataset.mean, std=dataset.std, steps=3,
                                              batch_size=4, lr=1e-3)
    assert losses.shape == (3,) and np.all(np.isfinite(losses))
    return model, variables


@pytest.mark.parametrize("name", ["sre2l", "rded", "dtl"])
def test_registered_method_two_steps_and_relabelled_view(name, dataset, tmp_path_factory):
    config = tiny_config(name)
    config.pretrained_dir = str(tmp_path_factory.mktemp("pretrained"))
    real = algorithms.make_real_pool(dataset.train_images, dataset.train_labels, K)
    algo = algorithms.get_algorithm(config, None, K, IMAGE_SHAPE)
    data = algorithms.prepare_data(config, dataset, real)
    synthetic = algorithms.init_synthetic(jax.random.PRNGKey(1), real, config.ipc, config.init)
    state = algo.init(jax.random.PRNGKey(2), synthetic)
    step = jax.jit(algo.step)
    before = jax.tree.structure(state)
    for _ in range(min(2, config.steps)):
        state, metrics = step(state, data)
        assert all(np.isfinite(float(v)) for v in metrics.values())
    assert jax.tree.structure(state) == before
    assert not np.allclose(state.synthetic.images, synthetic.images)
    view = algorithms.eval_view(state, config)
    assert view["images"].shape == (2 * K * config.ipc,) + IMAGE_SHAPE
    assert view["labels"].shape == (2 * K * config.ipc, K)
    np.testing.assert_allclose(np.asarray(view["labels"]).sum(1), 1.0, atol=1e-5)
    # the squeeze model went to the pretrained store, keyed by its seen domain
    stored = list((tmp_path_factory.getbasetemp()).glob("pretrained*/squeeze/toy-*/spec.json"))
    assert stored and '"seen_domains":["toy"]' in stored[-1].read_text()


def test_dtl_stop_gradient_keeps_psi_losses_off_the_images(teacher, dataset):
    model, variables = teacher
    c = tiny_config("dtl")
    hp = c.dtl
    hp.alpha_ce = hp.alpha_style = 0.0  # only ψ's terms left
    styles = dtl.domain_styles(model, variables, [(dataset.train_images[:9], None), (dataset.train_images[9:], None)])
    data = decoupled.RecoverData(teacher=None, pixel_low=-9.0, pixel_high=9.0, styles=styles)
    psi = dtl.build_psi(hp, 2)
    x = jnp.asarray(dataset.train_images[:3])
    psi_params = psi.init(jax.random.PRNGKey(0), x, jnp.ones((3, 2)) / 2)
    y = jnp.arange(3) % K
    def loss(a, p):
        return dtl.dtl_loss(a, p, y, variables, 0, data, jax.random.PRNGKey(1), model=model, psi=psi, hp=hp)[0]

    grad_x, grad_psi = jax.jit(jax.grad(loss, argnums=(0, 1)))(x, psi_params)   # jitted: one compile, not ~900
    assert float(jnp.max(jnp.abs(grad_x))) == 0.0
    assert float(optax_norm(grad_psi)) > 0.0


def test_dtl_style_terms_match_numpy_eqs_5_6_8_9(teacher, dataset):
    """Domain styles (eq. 5, every image of the domain), the average target E_e[m], E_e[s] with its own channel std
    (eqs. 6, 8) and ψ's per-domain terms summed over e (eqs. 7, 9), all from the BN-input maps in numpy."""
    model, variables = teacher
    hp = tiny_config("dtl").dtl
    domains = [(dataset.train_images[:9], None), (dataset.train_images[9:], None)]
    styles = dtl.domain_styles(model, variables, domains)
    # the oracle's BN-input maps and the loss below run jitted: eagerly, each of their ~600 ops compiles on its own
    bn_maps = jax.jit(lambda images: [maps for maps, _, _ in models.bn_inputs(model, variables, images)[1]])
    per_domain = [[np_domain_style(np.asarray(maps)) for maps in bn_maps(jnp.asarray(x))] for x, _ in domains]
    for l, (m, s) in enumerate(styles):
        np.testing.assert_allclose(m, np.stack([d[l][0] for d in per_domain]), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(s, np.stack([d[l][1] for d in per_domain]), rtol=1e-4, atol=1e-5)
    data = decoupled.RecoverData(teacher=None, pixel_low=-9.0, pixel_high=9.0, styles=styles)
    psi = dtl.build_psi(hp, 2)
    x = jnp.asarray(dataset.train_images[:4]) * 0.5
    psi_params = psi.init(jax.random.PRNGKey(0), x, jnp.ones((4, 2)) / 2)
    psi_params = jax.tree.map(lambda p: p + 0.1 * jax.random.normal(jax.random.PRNGKey(5), p.shape), psi_params)
    key = jax.random.PRNGKey(1)
    _, (metrics, _) = jax.jit(lambda x, p: dtl.dtl_loss(x, p, jnp.zeros(4, jnp.int32), variables, 0, data, key,
                                                        model=model, psi=psi, hp=hp))(x, psi_params)
    x_aug = decoupled.recover_augment(key, x, hp.flip)
    layers = bn_maps(x_aug)
    average = [(np.mean([d[l][0] for d in per_domain], 0), np.mean([d[l][1] for d in per_domain], 0))
               for l in range(len(layers))]
    want = sum(np_normalized_loss(np_domain_style(np.asarray(maps)), average[l]) for l, maps in enumerate(layers))
    np.testing.assert_allclose(float(metrics["style"]), want, rtol=2e-4)
    want_psi = 0.0
    transfer = jax.jit(psi.apply)
    for e in range(2):
        transferred = transfer(psi_params, x_aug, models.domain_weights(jnp.full(4, e), 2))
        for l, maps in enumerate(bn_maps(transferred)):
            want_psi += np_normalized_loss(np_domain_style(np.asarray(maps)), per_domain[e][l])
    np.testing.assert_allclose(float(metrics["per_style"]), want_psi, rtol=2e-4)


def optax_norm(tree):
    return jnp.sqrt(sum(jnp.sum(jnp.square(leaf)) for leaf in jax.tree.leaves(tree)))


def test_relabel_soft_labels_are_the_teacher_softmax_on_each_view(teacher, dataset):
    model, variables = teacher
    x = jnp.asarray(dataset.train_images[:4])
    views, soft = relabel.relabel(jax.random.PRNGKey(0), model, variables, x, num_views=3, temperature=2.0)
    assert views.shape == (12,) + IMAGE_SHAPE
    want = jax.nn.softmax(jax.jit(functools.partial(model.apply, train=False))(variables, views) / 2.0)
    np.testing.assert_allclose(soft, want, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- RDED and SRe2L's jitter


class _RingScorer(nn.Module):
    """A parameter-free "teacher": logit 0 = Σ pixels × (+1 on the border ring, -1 in the centre half), logit 1 = 0.
    A patch zero-padded into the centre scores negative, the same patch upsampled to the full image positive."""

    @nn.compact
    def __call__(self, x, train=False):
        h, w = x.shape[1:3]
        inside = np.zeros((h, w), np.float32)
        inside[h // 4:h - h // 4, w // 4:w - w // 4] = 1.0
        score = jnp.sum(x * (1.0 - 2.0 * inside)[None, :, :, None], axis=(1, 2, 3))
        return jnp.stack([score, jnp.zeros_like(score)], axis=-1)


def test_rded_scores_zero_padded_patches_and_stitches_ranks_across_images():
    """LINs-lab/RDED ``synthesize/utils.py``: ``selector`` scores each patch zero-padded (centred) to the full size
    and keeps the ``ipc * factor²`` lowest-CE patches in ascending order; ``mix_images`` puts patch ``k * ipc + i``
    in grid slot ``k`` (row-major) of image ``i``. Constant candidate images make every crop constant, so the
    expected set follows in closed form: score = -4 v (centre 2x2 of 4x4), CE = softplus(4 v), lowest v first."""
    values = np.random.default_rng(0).permutation(np.linspace(0.1, 1.2, 12)).astype(np.float32)
    candidates = jnp.asarray(np.broadcast_to(values[None, :, None, None, None], (1, 12, 4, 4, 1)))
    images, _ = decoupled.rded_select(jax.random.PRNGKey(0), _RingScorer(), {}, candidates, ipc=2, factor=2,
                                      num_crop=2, crop_scale=(0.5, 1.0))
    ranked = np.sort(values)[:8]  # ascending CE = ascending v
    want = np.zeros((2, 4, 4, 1), np.float32)
    for i in range(2):
        for k in range(4):
            r, c = divmod(k, 2)
            want[i, 2 * r:2 * r + 2, 2 * c:2 * c + 2] = ranked[k * 2 + i]
    np.testing.assert_allclose(np.asarray(images), want, atol=1e-5)


def test_rded_crops_are_square():
    """RDED's ``MultiRandomCrop`` is ``RandomResizedCrop(size // factor, ratio=(1, 1))``: on an image whose channels
    are the column and row coordinates, a crop's interior step along x equals its step along y (box w / h = 1)."""
    n = 16
    cols, rows = np.meshgrid(np.arange(n, dtype=np.float32), np.arange(n, dtype=np.float32))
    image = np.stack([cols, rows], -1)
    candidates = jnp.asarray(np.broadcast_to(image, (1, 40, n, n, 2)))

    class Flat(nn.Module):
        @nn.compact
        def __call__(self, x, train=False):
            return jnp.zeros((x.shape[0], 2))

    patches, _ = decoupled.rded_select(jax.random.PRNGKey(3), Flat(), {}, candidates, ipc=40, factor=1,
                                       num_crop=1, crop_scale=(0.25, 1.0))
    p = np.asarray(patches)
    step_x = p[:, n // 2, n // 2 + 1, 0] - p[:, n // 2, n // 2, 0]
    step_y = p[:, n // 2 + 1, n // 2, 1] - p[:, n // 2, n // 2, 1]
    assert np.ptp(step_x) > 0.1  # the boxes do vary in size
    np.testing.assert_allclose(step_x, step_y, rtol=1e-4)


def test_recover_roll_shifts_forward_by_zero_to_max_like_sre2l():
    """SRe2L (``recover/data_synthesis.py``, ``recover_cifar.py``): ``off = random.randint(0, jitter)`` then
    ``torch.roll(x, shifts=(off1, off2))``: shifts in {0, .., jitter}, never backwards."""
    image = jnp.zeros((1, 16, 16, 1)).at[0, 0, 0, 0].set(1.0)
    seen = set()
    for i in range(200):
        rolled = np.asarray(decoupled.roll_jitter(jax.random.PRNGKey(i), image, 2))
        seen.add(tuple(int(v) for v in np.argwhere(rolled[0, :, :, 0] == 1.0)[0]))
    assert seen == {(dy, dx) for dy in range(3) for dx in range(3)}


# ------------------------------------------------------------------------------------------- leak check


def test_leave_one_out_phase_never_sees_the_held_out_domain(monkeypatch):
    from launch.domains import collection_from_config
    config = tiny_config("dtl")
    config.domains.source = "styled"
    config.domains.base = "digits"
    config.domains.plan = "leave_one_out"
    collection = collection_from_config(config)
    held = 1
    seen = [i for i in range(collection.num_domains) if i != held]
    phase = collection.load_many(seen)
    seen_calls = []

    def fake_squeeze(squeeze_config, dataset_name, names, domains, **kwargs):
        seen_calls.append((list(names), np.concatenate([x for x, _ in domains])))
        model = squeeze.build_squeeze_model(squeeze_config, kwargs["num_classes"])
        return models.init_model(model, jax.random.PRNGKey(0), collection.image_shape), "nowhere"

    monkeypatch.setattr(squeeze, "load_or_make_squeeze", fake_squeeze)
    _, names, domains = decoupled.load_teachers(config, config.dtl, phase, per_domain=False)
    assert collection.domains[held] not in names and len(names) == collection.num_domains - 1
    used = np.concatenate([x for x, _ in domains])
    np.testing.assert_array_equal(used, phase.train_images)  # exactly the phase's data, in order
    held_out = collection.load(held).train_images.reshape(-1, int(np.prod(collection.image_shape)))
    rows = {r.tobytes() for r in used.reshape(len(used), -1)}
    assert not any(r.tobytes() in rows for r in held_out)
    assert collection.domains[held] not in seen_calls[0][0]
    # per-domain SRe2L: one squeeze model per seen domain, none for the held-out one
    seen_calls.clear()
    decoupled.load_teachers(config, config.dtl, phase, per_domain=True)
    assert [c[0] for c in seen_calls] == [[collection.domains[i]] for i in seen]


# ---------------------------------------------------------------------------------------------- bad input


def test_bad_input_one_clear_line(dataset, tmp_path):
    model = squeeze.build_squeeze_model(tiny_config("dtl").dtl.squeeze, K)
    data = [(dataset.train_images, dataset.train_labels)]
    with pytest.raises(ConfigError, match="bn='trained'"):
        squeeze.train_squeeze(jax.random.PRNGKey(0), model, data, mean=0.5, std=0.25, bn="frozen")
    with pytest.raises(ConfigError, match="unknown squeeze bn mode"):
        squeeze.train_squeeze(jax.random.PRNGKey(0), model, data, mean=0.5, std=0.25, bn="running")
    with pytest.raises(DataNotFoundError, match="does not exist"):
        squeeze.merge_checkpoint({}, str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="at least one seen domain"):
        squeeze.stack_domains([])
    c = tiny_config("sre2l")
    c.steps = 5
    with pytest.raises(ConfigError, match="--config.steps=2"):
        algorithms.get_algorithm(c, None, K, IMAGE_SHAPE)
    c = tiny_config("dtl")
    c.dtl.transfer = False
    with pytest.raises(ConfigError, match="dtl.dsm"):
        algorithms.get_algorithm(c, None, K, IMAGE_SHAPE)
    c = tiny_config("rded")
    c.ipc = 30  # more than a class's 6 candidate images
    real = algorithms.make_real_pool(dataset.train_images, dataset.train_labels, K)
    with pytest.raises(ConfigError, match="lower --config.ipc"):
        algorithms.prepare_data(c, dataset, real)
    c.ipc = 5  # RDED keeps one crop per candidate image: 5 patches per class need 5 of them, rded.mipc is 4
    with pytest.raises(ConfigError, match="lower --config.ipc"):
        algorithms.prepare_data(c, dataset, real)
    with pytest.raises(ConfigError, match="DSM"):
        relabel.relabel(jax.random.PRNGKey(0), model, {}, dataset.train_images[:2], num_views=1, dsm=True)
    for err in (CheckpointError, ConfigError, DataNotFoundError):
        assert issubclass(err, Exception)
