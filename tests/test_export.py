"""Self-describing synthetic.npz (ddjax.load_synthetic) and launch.export (tfds, torch): round trips and bad input.

The inputs are written with launch.outputs.save_synthetic from small random arrays: no distillation runs here.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import ddjax
from ddjax import data
from ddjax.errors import ConfigError, DataNotFoundError
from launch import export, outputs
from repo_files import REPO

CONFIG = {"algorithm": "dm", "ipc": 2, "data": {"name": "toy"}}


def _write(workdir, *, channels=1, zca=False, soft=False, lr=None):
    """A 3-class, 2-per-class set of 4x4 images; returns (pixels x, model-space images z, labels)."""
    rng = np.random.default_rng(channels + 2 * zca + 4 * soft)
    x = rng.uniform(0.05, 0.95, (6, 4, 4, channels)).astype(np.float32)
    hard = np.array([0, 0, 1, 1, 2, 2])
    labels = np.eye(3, dtype=np.float32)[hard] * 0.7 + 0.1 if soft else hard.astype(np.int32)
    if zca:
        transform = data.fit_zca(rng.uniform(0, 1, (40, 4, 4, channels)).astype(np.float32), 0.1)
        mean, std = np.zeros(channels, np.float32), np.ones(channels, np.float32)
        z = transform.apply(x)
    else:
        transform = None
        mean = np.linspace(0.2, 0.4, channels).astype(np.float32)
        std = np.linspace(0.25, 0.3, channels).astype(np.float32)
        z = (x - mean) / std
    outputs.save_synthetic(os.path.join(workdir, "synthetic.npz"), z, labels, pixels=x, mean=mean, std=std,
                           zca=transform, class_names=["zero", "one", "two"], dataset="toy", config=CONFIG, lr=lr)
    return x, z, labels


def test_load_synthetic_reads_every_field_and_maps_model_space_to_pixels(tmp_path):
    x, z, labels = _write(tmp_path, channels=3, lr=0.01)
    syn = ddjax.load_synthetic(str(tmp_path))          # a workdir or the file itself
    assert syn.format_version == data.synthetic.FORMAT_VERSION
    assert syn.class_names == ("zero", "one", "two") and syn.num_classes == 3
    assert syn.image_shape == (4, 4, 3) and syn.dataset == "toy" and syn.config == CONFIG
    assert syn.lr == pytest.approx(0.01) and syn.zca is None
    np.testing.assert_array_equal(syn.images, z)
    np.testing.assert_array_equal(syn.labels, labels)
    np.testing.assert_array_equal(syn.pixels, x)
    mean = np.linspace(0.2, 0.4, 3)
    std = np.linspace(0.25, 0.3, 3)
    np.testing.assert_allclose(syn.to_pixels(z), np.clip(z * std + mean, 0, 1), atol=1e-6)   # x = z σ + μ
    np.testing.assert_allclose(syn.to_model(x), (x - mean) / std, atol=1e-5)                 # z = (x - μ) / σ
    with pytest.raises(ConfigError, match="shape"):
        syn.to_pixels(np.zeros((2, 8, 8, 3)))


def test_load_synthetic_with_zca_inverts_the_whitening(tmp_path):
    x, z, _ = _write(tmp_path, zca=True)
    syn = data.load_synthetic(os.path.join(tmp_path, "synthetic.npz"))
    assert syn.zca is not None and syn.zca.matrix.shape == (16, 16)
    w_inv = np.linalg.inv(syn.zca.matrix.astype(np.float64))            # independent inverse of W
    expected = z.reshape(6, -1) @ w_inv + syn.zca.mean                  # x = z W^-1 + μ_zca
    np.testing.assert_allclose(syn.to_pixels(z), np.clip(expected.reshape(x.shape), 0, 1), atol=1e-4)
    np.testing.assert_allclose(syn.to_pixels(z), x, atol=1e-4)
    np.testing.assert_allclose(syn.to_model(x), z, atol=1e-4)


def test_old_npz_without_metadata_loads_with_none_fields(tmp_path):
    path = os.path.join(tmp_path, "synthetic.npz")
    np.savez(path, images=np.zeros((2, 4, 4, 1), np.float32), pixels=np.full((2, 4, 4, 1), 0.5, np.float32),
             labels=np.array([0, 1]))
    syn = data.load_synthetic(path)
    assert syn.format_version == 0 and syn.mean is None and syn.class_names is None and syn.config is None
    assert syn.num_classes == 2
    np.testing.assert_array_equal(syn.to_pixels(), np.full((2, 4, 4, 1), 0.5))
    with pytest.raises(ConfigError, match="no normalisation"):
        syn.to_model(np.zeros((1, 4, 4, 1)))


def test_load_synthetic_bad_paths_are_one_line_errors(tmp_path):
    with pytest.raises(DataNotFoundError, match="no synthetic set"):
        data.load_synthetic(str(tmp_path))
    bad = tmp_path / "synthetic.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(DataNotFoundError, match="cannot read"):
        data.load_synthetic(str(bad))


def test_torch_export_is_nchw_with_equal_labels(tmp_path):
    x, z, labels = _write(tmp_path / "w", channels=3, soft=True)
    path = export.export(str(tmp_path / "w"), "torch", str(tmp_path / "out"))
    got = np.load(path)            # what a PyTorch user does: numpy.load, no ddjax
    np.testing.assert_array_equal(got["images"], z.transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(got["pixels"], x.transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(got["labels"], [0, 0, 1, 1, 2, 2])
    assert got["labels"].dtype == np.int64 and got["images"].dtype == np.float32
    np.testing.assert_array_equal(got["soft_labels"], labels)
    assert got["class_names"].tolist() == ["zero", "one", "two"] and json.loads(str(got["config"])) == CONFIG


def test_tfds_export_round_trip_without_tensorflow(tmp_path):
    import tensorflow_datasets as tfds

    x, z, labels = _write(tmp_path / "w", channels=1, soft=True)
    version_dir = export.export(str(tmp_path / "w"), "tfds", str(tmp_path / "out"))
    source = tfds.data_source(export.TFDS_NAME, data_dir=str(tmp_path / "out"))["train"]
    examples = [source[i] for i in range(len(source))]
    assert len(examples) == 6
    np.testing.assert_array_equal(np.stack([e["pixels"] for e in examples]), x)
    np.testing.assert_array_equal(np.stack([e["model_image"] for e in examples]), z)
    np.testing.assert_array_equal([e["label"] for e in examples], [0, 0, 1, 1, 2, 2])
    np.testing.assert_array_equal(np.stack([e["soft_label"] for e in examples]), labels)
    np.testing.assert_array_equal(np.stack([e["image"] for e in examples]), np.rint(x * 255).astype(np.uint8))
    builder = tfds.builder_from_directory(version_dir)
    assert builder.info.features["label"].names == ["zero", "one", "two"]
    assert json.loads(builder.info.metadata["config"]) == CONFIG
    assert "tensorflow" not in sys.modules


def test_export_bad_input_writes_nothing(tmp_path):
    _write(tmp_path / "w")
    with pytest.raises(DataNotFoundError, match="does not exist"):
        export.export(str(tmp_path / "missing"), "torch", str(tmp_path / "o1"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataNotFoundError, match="no synthetic.npz"):
        export.export(str(tmp_path / "empty"), "torch", str(tmp_path / "o2"))
    with pytest.raises(ConfigError, match="unknown --format='onnx'; valid choices: tfds, torch"):
        export.export(str(tmp_path / "w"), "onnx", str(tmp_path / "o3"))
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not an empty folder"):
        export.export(str(tmp_path / "w"), "torch", str(full))
    assert sorted(os.listdir(full)) == ["keep.txt"] and (full / "keep.txt").read_text() == "mine"
    assert not any((tmp_path / f"o{i}").exists() for i in (1, 2, 3))
    assert sorted(os.listdir(tmp_path)) == ["empty", "full", "w"]          # no temp folder left behind
    with pytest.raises(DataNotFoundError, match="is not a file"):
        export.export(None, "torch", str(tmp_path / "o4"), synthetic=str(tmp_path / "w" / "nope.npz"))
    path = export.export(None, "torch", str(tmp_path / "o4"), synthetic=str(tmp_path / "w" / "synthetic.npz"))
    assert np.load(path)["images"].shape == (6, 1, 4, 4)                   # --synthetic=PATH instead of a workdir


def test_export_cli_bad_input_is_one_line_and_exit_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "launch.export", f"--workdir={tmp_path}/nope", "--format=tfds",
                           f"--out={tmp_path}/out"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: workdir") and "does not exist" in lines[0]
    assert not os.path.exists(f"{tmp_path}/out")
