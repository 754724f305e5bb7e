"""Teacher pools: K networks trained in one program, sampling inside jit, the pretrained store (make once, reuse,
spec-keyed, missing pool = one line with the command), the collapsed-embedding check, and launch.teachers."""
import io

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from ddjax import evaluate, models, teachers
from ddjax.data import Dataset
from ddjax.errors import ConfigError, DataNotFoundError

K, SHAPE = 3, (8, 8, 1)


def _tc(**overrides):
    tc = teachers.default_teacher_config()
    tc.model, tc.width, tc.depth, tc.norm, tc.num_teachers, tc.epochs, tc.batch_size = \
        "convnet", 8, 2, "instance", 2, 10, 32
    for key, value in overrides.items():
        tc[key] = value
    return tc


def _dataset(seed=0, n=60):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % K
    images = (rng.normal(size=(n,) + SHAPE) * 0.5 + labels[:, None, None, None]).astype(np.float32)
    return Dataset(name="toy", train_images=images, train_labels=labels.astype(np.int32), test_images=images[:30],
                   test_labels=labels[:30].astype(np.int32), num_classes=K, class_names=("a", "b", "c"),
                   mean=np.zeros(1, np.float32), std=np.ones(1, np.float32), zca=None)


def _config(tmp_path, **overrides):
    c = ml_collections.ConfigDict(dict(
        algorithm="iid", pretrained_dir=str(tmp_path), make_pretrained=True,
        data=ml_collections.ConfigDict(dict(name="toy", zca=False, zca_regularization=0.1))))
    c.iid = ml_collections.ConfigDict(dict(teacher=_tc(**overrides)))
    return c


def test_pool_trains_in_one_program_and_sampling_picks_one_teacher(tmp_path):
    ds = _dataset()
    config = _config(tmp_path)
    stream = io.StringIO()
    pool, path, model = teachers.load_or_make_teachers(config, config.iid.teacher, ds, stream=stream)
    assert "making teachers" in stream.getvalue()
    assert teachers.pool_size(pool) == 2
    assert all(np.shape(leaf)[0] == 2 for leaf in jax.tree.leaves(pool))
    # the same networks as the trainer gives with the reference pre_model.py settings
    direct = teachers.train_teachers(jax.random.PRNGKey(0), model, ds.train_images, ds.train_labels,
                                     num_teachers=2, epochs=10, batch_size=32)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), pool, direct)
    # trained: well above chance on these separable classes, and the two teachers differ
    acc = evaluate.accuracy(model, pool, ds.test_images, ds.test_labels)
    assert np.all(acc > 0.7), acc  # chance: 1/3
    first = jax.tree.leaves(pool)[0]
    assert not np.allclose(first[0], first[1])

    @jax.jit
    def embed_with_sampled(key, pool):
        variables, index = teachers.sample_teacher(key, pool)
        return teachers.teacher_embed(model, variables, jnp.asarray(ds.test_images[:4])), index

    seen = set()
    for seed in range(6):
        emb, index = embed_with_sampled(jax.random.PRNGKey(seed), pool)
        one = jax.tree.map(lambda leaf: leaf[int(index)], pool)
        np.testing.assert_allclose(emb, teachers.teacher_embed(model, one, jnp.asarray(ds.test_images[:4])),
                                   rtol=1e-5, atol=1e-6)
        seen.add(int(index))
    assert seen == {0, 1}


def test_pool_is_reused_keyed_by_spec_and_missing_pool_is_one_line(tmp_path):
    ds = _dataset()
    config = _config(tmp_path, epochs=1)
    pool, path, _ = teachers.load_or_make_teachers(config, config.iid.teacher, ds, stream=io.StringIO())
    stream = io.StringIO()
    again, path2, _ = teachers.load_or_make_teachers(config, config.iid.teacher, ds, allow_make=False, stream=stream)
    assert path2 == path and stream.getvalue() == ""  # loaded, not retrained
    jax.tree.map(np.testing.assert_array_equal, pool, again)
    other = _config(tmp_path, epochs=2)  # another spec: another entry, and not there yet
    with pytest.raises(DataNotFoundError, match="python -m launch.teachers") as info:
        teachers.load_or_make_teachers(other, other.iid.teacher, ds, allow_make=False)
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="num_teachers"):
        teachers.load_or_make_teachers(config, _tc(num_teachers=0), ds)
    with pytest.raises(ConfigError, match="convnet, resnet18"):
        teachers.load_or_make_teachers(config, _tc(model="vgg"), ds)


def test_collapsed_teacher_embedding_is_refused():
    """Instance norm on a 1x1 map (e.g. ResNet-18's last stage on 8x8 digits) makes the embedding input-independent;
    a one-block ConvNet without pooling on 1x1 images is the same situation, cheaply."""
    images = np.random.default_rng(0).normal(size=(8, 1, 1, 1)).astype(np.float32)
    collapsed = models.build_model("convnet", K, width=8, depth=1, pooling="none", norm="instance")
    pool = jax.vmap(lambda k: models.init_model(collapsed, k, (1, 1, 1)))(jax.random.split(jax.random.PRNGKey(0), 1))
    with pytest.raises(ConfigError, match="same for every image"):
        teachers.check_teacher_embedding(collapsed, pool, images)
    ok = models.build_model("convnet", K, width=8, depth=1, pooling="none", norm="none")
    ok_pool = jax.vmap(lambda k: models.init_model(ok, k, (1, 1, 1)))(jax.random.split(jax.random.PRNGKey(0), 1))
    teachers.check_teacher_embedding(ok, ok_pool, images)


def test_launch_teachers_makes_reports_and_refuses_other_algorithms(tmp_path):
    from launch.config import base_config
    from launch.teachers import make_teachers
    config = base_config("iid")
    config.data.name = "digits"
    config.pretrained_dir = str(tmp_path)
    t = config.iid.teacher
    t.model, t.width, t.depth, t.norm, t.num_teachers, t.epochs = "convnet", 8, 2, "instance", 1, 1
    stream = io.StringIO()
    out = make_teachers(config, stream=stream)
    assert out["num_teachers"] == 1 and len(out["test_accuracy"]) == 1 and 0 <= out["test_accuracy"][0] <= 1
    assert "test accuracy" in stream.getvalue()
    with pytest.raises(ConfigError, match="iid"):
        make_teachers(base_config("dm"), stream=io.StringIO())
