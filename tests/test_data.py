"""Tests for ddjax.data: embedded digits, tfds sources without TensorFlow, normalisation, ZCA, to_pixels."""
import gzip
import hashlib
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ddjax.data import digits as digits_mod
from ddjax.data import tfds_sources
from ddjax.data import (DATASET_NAMES, Dataset, ZCAWhitening, channel_stats, fit_zca, load_dataset,
                        load_fashion_mnist_arrays, normalize, prepared_datasets, read_idx)
from ddjax.errors import ConfigError, DataNotFoundError

DIGITS_TRAIN_PER_CLASS = [142, 146, 142, 146, 145, 146, 145, 143, 139, 144]
DIGITS_TEST_PER_CLASS = [36, 36, 35, 37, 36, 36, 36, 36, 35, 36]
REAL_FASHION = "/usr/share/datasets/fashion-mnist"


# --------------------------------------------------------------------------------------------------------- digits
def test_digits_shapes_counts_and_balance():
    ds = load_dataset("digits")
    assert isinstance(ds, Dataset) and ds.name == "digits"
    assert ds.train_images.shape == (1438, 8, 8, 1) and ds.test_images.shape == (359, 8, 8, 1)
    assert ds.train_images.dtype == np.float32 and ds.test_images.dtype == np.float32
    assert ds.train_labels.dtype == np.int32 and ds.test_labels.dtype == np.int32
    assert ds.num_classes == 10 and ds.class_names == tuple("0123456789")
    assert np.bincount(ds.train_labels, minlength=10).tolist() == DIGITS_TRAIN_PER_CLASS
    assert np.bincount(ds.test_labels, minlength=10).tolist() == DIGITS_TEST_PER_CLASS
    assert ds.image_shape == (8, 8, 1) and ds.zca is None


def test_digits_split_disjoint_complete_and_fixed():
    train, test = digits_mod.digits_split_indices()
    assert len(np.intersect1d(train, test)) == 0
    assert np.array_equal(np.sort(np.concatenate([train, test])), np.arange(1797))
    assert np.all(np.diff(train) > 0) and np.all(np.diff(test) > 0)
    digits_mod.digits_split_indices.cache_clear()
    train2, test2 = digits_mod.digits_split_indices()
    assert np.array_equal(train, train2) and np.array_equal(test, test2)
    # Pins the documented rule (RandomState(0), per-class permutation, first round(n_c / 5) to test).
    assert hashlib.sha256(test.astype("<i8").tobytes()).hexdigest()[:16] == "3530be80b9605f4c"
    assert test[:5].tolist() == [3, 7, 13, 19, 36]
    a, b = load_dataset("digits"), load_dataset("digits")
    assert np.array_equal(a.train_images, b.train_images) and np.array_equal(a.test_labels, b.test_labels)


def test_digits_equal_sklearn():
    import sklearn.datasets as sklearn_datasets  # the test extra: a missing oracle fails, it does not skip
    ref = sklearn_datasets.load_digits()
    pixels, labels = digits_mod.digits_raw()
    assert np.array_equal(pixels, ref.images.astype(np.uint8)) and np.array_equal(labels, ref.target)
    train, test = digits_mod.digits_split_indices()
    ds = load_dataset("digits")
    np.testing.assert_allclose(ds.to_pixels(ds.train_images)[..., 0], ref.images[train] / 16.0, atol=1e-6)
    np.testing.assert_allclose(ds.to_pixels(ds.test_images)[..., 0], ref.images[test] / 16.0, atol=1e-6)
    assert np.array_equal(ds.train_labels, ref.target[train]) and np.array_equal(ds.test_labels, ref.target[test])


# ---------------------------------------------------------------------------------------------------- normalisation
def test_normalisation_uses_train_statistics():
    ds = load_dataset("digits")
    pixels, _ = digits_mod.digits_raw()
    train, test = digits_mod.digits_split_indices()
    raw_train = pixels[train].astype(np.float64) / 16.0
    np.testing.assert_allclose(ds.mean, [raw_train.mean()], rtol=1e-6)
    np.testing.assert_allclose(ds.std, [raw_train.std()], rtol=1e-6)
    x = ds.train_images.astype(np.float64)
    np.testing.assert_allclose(x.mean(axis=(0, 1, 2)), [0.0], atol=1e-5)
    np.testing.assert_allclose(x.std(axis=(0, 1, 2)), [1.0], atol=1e-5)
    expected_test = (pixels[test] / 16.0 - raw_train.mean()) / raw_train.std()
    np.testing.assert_allclose(ds.test_images[..., 0], expected_test, atol=1e-5)


def test_normalize_per_channel_numpy_and_jax():
    rng = np.random.default_rng(0)
    x = (rng.random((50, 4, 4, 3)) * np.array([0.5, 1.0, 2.0]) + np.array([0.0, 1.0, -3.0])).astype(np.float32)
    mean, std = channel_stats(x)
    y = normalize(x, mean, std)
    assert isinstance(y, np.ndarray)
    np.testing.assert_allclose(y.mean(axis=(0, 1, 2)), 0.0, atol=1e-5)
    np.testing.assert_allclose(y.std(axis=(0, 1, 2)), 1.0, atol=1e-5)
    yj = jax.jit(normalize)(jnp.asarray(x), mean, std)
    np.testing.assert_allclose(np.asarray(yj), y, atol=1e-6)


# ------------------------------------------------------------------------------------------------------------- ZCA
def _reference_zca(flat: np.ndarray, eps: float):
    """Independent formula: SVD of the unbiased covariance, W = U diag((S + eps)^-1/2) U^T."""
    cov = np.cov(flat, rowvar=False)  # divides by N - 1
    u, s, _ = np.linalg.svd(cov)
    return (u / np.sqrt(s + eps)) @ u.T, u, s


def test_zca_matches_reference_formula():
    ds = load_dataset("digits", zca=True, zca_regularization=0.1)
    pixels, _ = digits_mod.digits_raw()
    train, _ = digits_mod.digits_split_indices()
    flat = pixels[train].reshape(len(train), -1).astype(np.float64) / 16.0
    w_ref, u, s = _reference_zca(flat, 0.1)
    np.testing.assert_allclose(ds.zca.matrix, w_ref, atol=2e-4)
    np.testing.assert_allclose(ds.zca.mean, flat.mean(0), atol=1e-6)
    # Whitened train covariance = W Sigma W = U diag(S / (S + eps)) U^T (identity-ish, shrunk by eps).
    z = ds.train_images.reshape(len(train), -1).astype(np.float64)
    np.testing.assert_allclose(np.cov(z, rowvar=False), (u * (s / (s + 0.1))) @ u.T, atol=2e-4)
    np.testing.assert_allclose(z.mean(0), 0.0, atol=1e-5)
    # MTT order: no mean/std normalisation when ZCA is on.
    assert np.array_equal(ds.mean, [0.0]) and np.array_equal(ds.std, [1.0])


def test_zca_whitens_to_identity_with_small_regularisation():
    rng = np.random.default_rng(1)
    mix = rng.normal(size=(12, 12))
    x = (rng.normal(size=(4000, 12)) @ mix + 3.0).reshape(4000, 2, 2, 3).astype(np.float32)
    zca = fit_zca(x, regularization=1e-6)
    z = zca.apply(x).reshape(4000, -1).astype(np.float64)
    np.testing.assert_allclose(np.cov(z, rowvar=False), np.eye(12), atol=2e-3)
    np.testing.assert_allclose(zca.matrix, zca.matrix.T, atol=1e-5)  # ZCA (not PCA): symmetric


def test_zca_invert_apply_identity_and_jit():
    ds = load_dataset("digits")
    zca = fit_zca(ds.train_images, 0.1)
    assert isinstance(zca, ZCAWhitening)
    back = zca.invert(zca.apply(ds.test_images))
    np.testing.assert_allclose(back, ds.test_images, atol=1e-4)
    jitted = jax.jit(lambda t, x: t.invert(t.apply(x)))(zca, jnp.asarray(ds.test_images))  # a pytree argument
    np.testing.assert_allclose(np.asarray(jitted), ds.test_images, atol=1e-4)
    np.testing.assert_allclose(np.asarray(jax.jit(zca.apply)(jnp.asarray(ds.test_images))),
                               zca.apply(ds.test_images), atol=1e-5)
    with pytest.raises(ConfigError, match="features"):
        zca.apply(np.zeros((2, 4, 4, 1), np.float32))
    with pytest.raises(ConfigError, match="regularization"):
        fit_zca(ds.train_images, 0.0)


def test_to_pixels_round_trip_and_clip():
    pixels, _ = digits_mod.digits_raw()
    train, _ = digits_mod.digits_split_indices()
    expected = pixels[train][..., None] / np.float32(16.0)
    for zca in (False, True):
        ds = load_dataset("digits", zca=zca)
        out = ds.to_pixels(ds.train_images)
        assert out.dtype == np.float32 and out.shape == ds.train_images.shape
        np.testing.assert_allclose(out, expected, atol=1e-4)
        np.testing.assert_allclose(ds.to_pixels(jnp.asarray(ds.train_images[0])), expected[0], atol=1e-4)
        assert ds.to_pixels(np.full((2, 8, 8, 1), 1e3, np.float32)).max() <= 1.0
        assert ds.to_pixels(np.full((2, 8, 8, 1), -1e3, np.float32)).min() >= 0.0
    with pytest.raises(ConfigError, match="shape"):
        ds.to_pixels(np.zeros((2, 28, 28, 1), np.float32))


# -------------------------------------------------------------------------------------------- tfds: Fashion-MNIST
def _write_idx(path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    with gzip.open(path, "wb") as f:
        f.write(header + np.ascontiguousarray(array, np.uint8).tobytes())


def _fixture_arrays(n: int, seed: int):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    images[:, 0, 0], images[:, 0, 1] = np.arange(n) % 256, seed  # every image unique
    labels = (np.arange(n) % 10).astype(np.uint8)
    return images, labels


@pytest.fixture(scope="module")
def fashion_fixture(tmp_path_factory):
    """A tiny Fashion-MNIST (30 train, 12 test) written as IDX .gz files, prepared once into a tmp data_dir."""
    src = tmp_path_factory.mktemp("fm_src")
    arrays = {"train": _fixture_arrays(30, 1), "t10k": _fixture_arrays(12, 2)}
    for prefix, (images, labels) in arrays.items():
        _write_idx(src / f"{prefix}-images-idx3-ubyte.gz", images)
        _write_idx(src / f"{prefix}-labels-idx1-ubyte.gz", labels)
    data_dir = tmp_path_factory.mktemp("fm_data")
    raw = load_fashion_mnist_arrays(str(data_dir), str(src))
    return src, data_dir, arrays, raw


def _match_rows(decoded: np.ndarray, source: np.ndarray) -> np.ndarray:
    """Index into ``source`` of each decoded image (tfds shuffles record order deterministically)."""
    lookup = {img.tobytes(): i for i, img in enumerate(source)}
    return np.array([lookup[img[..., 0].tobytes()] for img in decoded])


def test_read_idx_round_trip(tmp_path):
    images, _ = _fixture_arrays(3, 0)
    _write_idx(tmp_path / "x.gz", images)
    assert np.array_equal(read_idx(str(tmp_path / "x.gz")), images)
    (tmp_path / "bad.gz").write_bytes(gzip.compress(b"\x01\x02\x03\x04garbage"))
    with pytest.raises(DataNotFoundError, match="magic"):
        read_idx(str(tmp_path / "bad.gz"))


def test_fashion_mnist_fixture_round_trips_exactly(fashion_fixture):
    src, data_dir, arrays, raw = fashion_fixture
    assert os.path.isfile(data_dir / "fashion_mnist" / "3.0.1" / "dataset_info.json")  # official layout
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images, labels = getattr(raw, f"{split}_images"), getattr(raw, f"{split}_labels")
        src_images, src_labels = arrays[prefix]
        assert images.dtype == np.uint8 and images.shape == (len(src_images), 28, 28, 1)
        assert labels.dtype == np.int32
        rows = _match_rows(images, src_images)
        assert sorted(rows.tolist()) == list(range(len(src_images)))  # a permutation: nothing lost or doubled
        assert np.array_equal(images[..., 0], src_images[rows]) and np.array_equal(labels, src_labels[rows])
    assert raw.class_names[0] == "T-shirt/top" and len(raw.class_names) == 10
    assert "fashion_mnist" in prepared_datasets(str(data_dir))

    ds = load_dataset("fashion_mnist", data_dir=str(data_dir))
    assert ds.train_images.shape == (30, 28, 28, 1) and ds.test_images.shape == (12, 28, 28, 1)
    np.testing.assert_allclose(ds.to_pixels(ds.train_images), raw.train_images / 255.0, atol=1e-5)
    np.testing.assert_allclose(ds.mean, [raw.train_images.mean() / 255.0], rtol=1e-5)


def test_fashion_mnist_second_load_uses_npz_cache(fashion_fixture, monkeypatch):
    import tensorflow_datasets as tfds

    src, data_dir, _, raw = fashion_fixture
    cache = data_dir / "fashion_mnist" / "3.0.1" / tfds_sources.CACHE_FILENAME
    assert cache.is_file()

    def no_decoding(*args, **kwargs):
        raise AssertionError("tfds.data_source called although the .npz cache exists")

    monkeypatch.setattr(tfds, "data_source", no_decoding)
    again = load_fashion_mnist_arrays(str(data_dir), "/nonexistent/source/is/not/needed/once/prepared")
    for field in ("train_images", "train_labels", "test_images", "test_labels"):
        assert np.array_equal(getattr(again, field), getattr(raw, field))
    monkeypatch.undo()

    cache.write_bytes(b"not an npz")  # a broken cache is ignored, decoded again, and rewritten
    fixed = load_fashion_mnist_arrays(str(data_dir), str(src))
    assert np.array_equal(fixed.train_images, raw.train_images)
    assert np.load(cache)["train_images"].shape == (30, 28, 28, 1)


def test_two_runs_preparing_fashion_mnist_at_once_prepare_it_once(tmp_path, monkeypatch):
    """Two runs started together on a fresh machine: one prepares, the other waits for it and finds it prepared
    (before the lock both prepared and tfds's final rename failed with FileExistsError in the second)."""
    import threading
    import time

    import tensorflow_datasets as tfds
    running, prepared, errors = [], [], []

    class SlowBuilder:   # stands in for the PNG-encoding tfds builder; records overlapping preparations
        def __init__(self, *, source_arrays, data_dir, file_format):
            self.data_dir = tfds.builder("fashion_mnist", data_dir=data_dir).data_dir

        def download_and_prepare(self, download_config):
            if running:
                raise FileExistsError(self.data_dir)
            running.append(1)
            time.sleep(0.3)
            os.makedirs(self.data_dir, exist_ok=True)
            with open(os.path.join(self.data_dir, "dataset_info.json"), "w") as f:
                f.write("{}")
            prepared.append(1)
            running.pop()

    monkeypatch.setattr(tfds_sources, "fashion_mnist_builder_cls", lambda: SlowBuilder)
    monkeypatch.setattr(tfds_sources, "_fashion_source_paths", lambda source_dir: {"train_images": "idx/train"})
    monkeypatch.setattr(tfds_sources, "_read_fashion_split",
                        lambda paths, split: (np.zeros((1, 28, 28), np.uint8), np.zeros(1, np.int64)))

    def prepare():
        try:
            tfds_sources.prepare_fashion_mnist(str(tmp_path))
        except Exception as e:  # noqa: BLE001  (recorded for the assertion below)
            errors.append(e)

    threads = [threading.Thread(target=prepare) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and prepared == [1]


def test_fashion_mnist_missing_sources(tmp_path):
    with pytest.raises(DataNotFoundError, match="apt-get install dataset-fashion-mnist") as err:
        load_dataset("fashion_mnist", data_dir=str(tmp_path / "data"), source_dir=str(tmp_path))
    msg = str(err.value)
    assert "\n" not in msg and "source_dir" in msg and "train-images-idx3-ubyte.gz" in msg
    images, labels = _fixture_arrays(3, 0)
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", images)
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", labels)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images)
    with pytest.raises(DataNotFoundError, match="t10k-labels-idx1-ubyte.gz") as err:
        load_dataset("fashion_mnist", data_dir=str(tmp_path / "data"), source_dir=str(tmp_path))
    assert str(err.value).split(": ")[1].split(";")[0] == "t10k-labels-idx1-ubyte.gz"  # only the missing file is named as missing


# ------------------------------------------------------------------------------------------- tfds: other datasets
def _png(image: np.ndarray) -> bytes:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(image).save(out, format="PNG")
    return out.getvalue()


def _prepare_tiny_rgb(data_dir, name="ddjax_tiny_rgb"):
    """Prepare a 3-class 4x4x3 image dataset as array_record with a TF-free builder (as a user could)."""
    import tensorflow_datasets as tfds

    rng = np.random.default_rng(3)
    data = {s: (rng.integers(0, 256, (n, 4, 4, 3), dtype=np.uint8), np.arange(n) % 3)
            for s, n in (("train", 9), ("test", 6))}

    class TinyRGB(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(4, 4, 3)),
                "label": tfds.features.ClassLabel(names=["cat", "dog", "bird"])}))

        def _split_generators(self, dl_manager):
            return {s: self._generate_examples(s) for s in data}

        def _generate_examples(self, split):
            for i, (img, lab) in enumerate(zip(*data[split])):
                yield i, {"image": _png(img), "label": int(lab)}  # numpy would need tf.image.encode_png

    TinyRGB.name = name
    TinyRGB(data_dir=str(data_dir), file_format="array_record").download_and_prepare(
        download_config=tfds.download.DownloadConfig(try_download_gcs=False))
    return data


def test_other_prepared_tfds_dataset(tmp_path):
    data = _prepare_tiny_rgb(tmp_path)
    ds = load_dataset("ddjax_tiny_rgb", data_dir=str(tmp_path))
    assert ds.train_images.shape == (9, 4, 4, 3) and ds.test_images.shape == (6, 4, 4, 3)
    assert ds.num_classes == 3 and ds.class_names == ("cat", "dog", "bird")
    assert ds.mean.shape == (3,) and ds.std.shape == (3,)
    np.testing.assert_allclose(ds.train_images.mean(axis=(0, 1, 2)), 0.0, atol=1e-5)
    np.testing.assert_allclose(ds.train_images.std(axis=(0, 1, 2)), 1.0, atol=1e-5)
    pixels = np.round(ds.to_pixels(ds.test_images) * 255).astype(np.uint8)
    src_images, src_labels = data["test"]
    lookup = {img.tobytes(): i for i, img in enumerate(src_images)}
    rows = np.array([lookup[p.tobytes()] for p in pixels])
    assert np.array_equal(ds.test_labels, src_labels[rows])
    assert "ddjax_tiny_rgb" in prepared_datasets(str(tmp_path))


def test_known_tfds_dataset_not_prepared(tmp_path):
    with pytest.raises(DataNotFoundError, match="not prepared") as err:
        load_dataset("mnist", data_dir=str(tmp_path))
    msg = str(err.value)
    assert str(tmp_path) in msg and "digits" in msg and "fashion_mnist" in msg and "\n" not in msg


def test_unknown_name_lists_choices(tmp_path):
    with pytest.raises(ConfigError, match="unknown dataset 'no_such_dataset_xyz'") as err:
        load_dataset("no_such_dataset_xyz", data_dir=str(tmp_path))
    msg = str(err.value)
    assert "digits" in msg and "fashion_mnist" in msg and f"prepared as array_record in {tmp_path}" in msg
    assert "\n" not in msg and DATASET_NAMES == ("digits", "fashion_mnist")
    with pytest.raises(ConfigError):
        load_dataset("")
    with pytest.raises(ConfigError, match="zca_regularization"):
        load_dataset("digits", zca=True, zca_regularization=-1.0)


def test_default_data_dir_env(monkeypatch, tmp_path):
    monkeypatch.setenv("DDJAX_DATA_DIR", str(tmp_path))
    assert tfds_sources.default_data_dir() == str(tmp_path)
    monkeypatch.delenv("DDJAX_DATA_DIR")
    assert tfds_sources.default_data_dir() == os.path.expanduser("~/.cache/ddjax/tfds")


def test_import_does_not_import_tfds():
    code = "import sys, ddjax.data; ddjax.data.load_dataset('digits'); print('tensorflow_datasets' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ------------------------------------------------------------------------------------------ real Fashion-MNIST
@pytest.mark.skipif(not os.path.isfile(os.path.join(REAL_FASHION, "train-images-idx3-ubyte.gz")),
                    reason="Debian package dataset-fashion-mnist not installed")
def test_real_fashion_mnist(tmp_path):
    """Prepares the real data (~15-20 s on 2 cores), then the cached second load."""
    import time

    ds = load_dataset("fashion_mnist", data_dir=str(tmp_path))
    assert ds.train_images.shape == (60000, 28, 28, 1) and ds.test_images.shape == (10000, 28, 28, 1)
    assert np.bincount(ds.train_labels).tolist() == [6000] * 10
    assert np.bincount(ds.test_labels).tolist() == [1000] * 10
    assert ds.class_names[-1] == "Ankle boot"
    np.testing.assert_allclose(ds.mean, [0.2860], atol=1e-3)  # well-known Fashion-MNIST statistics
    np.testing.assert_allclose(ds.std, [0.3530], atol=1e-3)
    start = time.perf_counter()
    again = load_fashion_mnist_arrays(str(tmp_path))
    assert time.perf_counter() - start < 10.0
    assert np.array_equal(again.test_labels, ds.test_labels)
