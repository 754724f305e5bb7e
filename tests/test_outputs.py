"""Tests for launch.outputs: image grids, curves, metrics.jsonl, progress, atomic writers (no jax needed)."""
import io
import json
import os

import numpy as np
import pytest
from PIL import Image

from ddjax.errors import CheckpointError, ConfigError
from launch import outputs


def _no_temp_files(directory):
    return [name for name in os.listdir(directory) if name.endswith(".tmp")]


def _cell(arr, layout, row, col, label_w=0):
    g, ch, cw = layout["gap"], layout["cell_h"], layout["cell_w"]
    top = g + row * (ch + g)
    left = label_w + g + col * (cw + g)
    return arr[top:top + ch, left:left + cw]


def _upscaled(img, scale):
    return np.repeat(np.repeat(img, scale, axis=0), scale, axis=1)


def _to_uint8(x):
    return np.rint(np.clip(x, 0, 1) * 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------- image grid
def test_grid_rgb_size_and_content(tmp_path):
    rng = np.random.default_rng(0)
    k, ipc, h, w = 3, 4, 8, 8
    images = rng.uniform(size=(k * ipc, h, w, 3)).astype(np.float32)
    labels = np.tile(np.arange(k), ipc)  # interleaved: 0,1,2,0,1,2,...
    path = tmp_path / "grid.png"
    layout = outputs.save_image_grid(path, images, labels, num_classes=k, gap=2)
    assert layout["scale"] == 4 and layout["cell_h"] == 32  # 8x8 upscaled to at least 32 px
    img = Image.open(path)
    assert img.format == "PNG" and img.mode == "RGB"
    assert img.size == (ipc * 32 + (ipc + 1) * 2, k * 32 + (k + 1) * 2)
    arr = np.asarray(img)
    for cls in range(k):
        idx = np.flatnonzero(labels == cls)  # input order within the class
        for col, i in enumerate(idx):
            np.testing.assert_array_equal(_cell(arr, layout, cls, col), _upscaled(_to_uint8(images[i]), 4))
    # gaps are background (white)
    assert np.all(arr[:2] == 255) and np.all(arr[:, :2] == 255)
    assert _no_temp_files(tmp_path) == []


def test_grid_grayscale_explicit_scale(tmp_path):
    rng = np.random.default_rng(1)
    images = rng.uniform(size=(4, 5, 7, 1))
    labels = np.array([1, 0, 1, 0])
    path = tmp_path / "g.png"
    layout = outputs.save_image_grid(path, images, labels, 2, gap=3, scale=2)
    img = Image.open(path)
    assert img.mode == "L"
    assert img.size == (2 * 14 + 3 * 3, 2 * 10 + 3 * 3)
    arr = np.asarray(img)
    np.testing.assert_array_equal(_cell(arr, layout, 0, 0), _upscaled(_to_uint8(images[1, ..., 0]), 2))
    np.testing.assert_array_equal(_cell(arr, layout, 0, 1), _upscaled(_to_uint8(images[3, ..., 0]), 2))
    np.testing.assert_array_equal(_cell(arr, layout, 1, 0), _upscaled(_to_uint8(images[0, ..., 0]), 2))
    np.testing.assert_array_equal(_cell(arr, layout, 1, 1), _upscaled(_to_uint8(images[2, ..., 0]), 2))


def test_grid_unequal_counts_and_empty_class(tmp_path):
    rng = np.random.default_rng(2)
    labels = np.array([0, 0, 0, 2])  # class 0: 3 images, class 1: none, class 2: 1
    images = rng.uniform(0.0, 0.5, size=(4, 8, 8, 3))  # never white, so padding is recognisable
    path = tmp_path / "u.png"
    layout = outputs.save_image_grid(path, images, labels, 3)
    arr = np.asarray(Image.open(path))
    assert arr.shape == (3 * 32 + 4 * 2, 3 * 32 + 4 * 2, 3)
    for col in range(3):
        np.testing.assert_array_equal(_cell(arr, layout, 0, col), _upscaled(_to_uint8(images[col]), 4))
    for col in range(3):
        assert np.all(_cell(arr, layout, 1, col) == 255)  # empty class row
    np.testing.assert_array_equal(_cell(arr, layout, 2, 0), _upscaled(_to_uint8(images[3]), 4))
    assert np.all(_cell(arr, layout, 2, 1) == 255) and np.all(_cell(arr, layout, 2, 2) == 255)


def test_grid_with_class_names(tmp_path):
    rng = np.random.default_rng(3)
    images = rng.uniform(size=(4, 8, 8, 1))
    labels = np.array([0, 1, 0, 1])
    plain = outputs.save_image_grid(tmp_path / "a.png", images, labels, 2)
    named = outputs.save_image_grid(tmp_path / "b.png", images, labels, 2, class_names=["zero", "a longer name"])
    assert named["label_w"] > 0
    a, b = Image.open(tmp_path / "a.png"), Image.open(tmp_path / "b.png")
    assert b.size == (a.size[0] + named["label_w"], a.size[1])
    arr = np.asarray(b)
    np.testing.assert_array_equal(_cell(arr, named, 1, 1, named["label_w"]),
                                  _upscaled(_to_uint8(images[3, ..., 0]), 4))
    assert np.any(arr[:, :named["label_w"]] < 128)  # some text was drawn
    assert plain["label_w"] == 0


def test_grid_clips_and_validates(tmp_path):
    images = np.array([[[[-1.0]], [[2.0]]]])  # (1, 2, 1, 1), out of range
    outputs.save_image_grid(tmp_path / "c.png", images, np.array([0]), 1, scale=1, gap=0)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "c.png")), [[0], [255]])
    with pytest.raises(ConfigError, match="labels"):
        outputs.save_image_grid(tmp_path / "x.png", np.zeros((2, 4, 4, 1)), np.array([0, 5]), 3)
    with pytest.raises(ConfigError, match="C 1 or 3"):
        outputs.save_image_grid(tmp_path / "x.png", np.zeros((2, 4, 4, 2)), np.array([0, 1]), 3)
    with pytest.raises(ConfigError, match="class_names"):
        outputs.save_image_grid(tmp_path / "x.png", np.zeros((2, 4, 4, 1)), np.array([0, 1]), 3, class_names=["a"])
    assert not (tmp_path / "x.png").exists()
    assert _no_temp_files(tmp_path) == []


# ---------------------------------------------------------------------------------------------- curves
def _is_png(path):
    with open(path, "rb") as f:
        head = f.read(8)
    img = Image.open(path)
    img.verify()
    return head == b"\x89PNG\r\n\x1a\n" and os.path.getsize(path) > 0


def test_curves_with_accuracy(tmp_path):
    history = [{"step": s, "loss": 1.0 / (s + 1)} for s in range(0, 100, 5)]
    history += [{"step": 0, "synthetic_acc": 0.1, "synthetic_acc_std": 0.01, "random_real_acc": 0.3},
                {"step": 50, "synthetic_acc": 0.5, "synthetic_acc_std": 0.02},
                {"step": 99, "synthetic_acc": np.float32(0.7)}]
    path = tmp_path / "curves.png"
    outputs.save_curves(path, history)
    assert _is_png(path)
    assert Image.open(path).size == (1000, 400)
    assert _no_temp_files(tmp_path) == []


def test_curves_loss_only_and_nonpositive_and_empty(tmp_path):
    outputs.save_curves(tmp_path / "a.png", [{"step": s, "loss": float(s - 5)} for s in range(10)])
    assert _is_png(tmp_path / "a.png")
    outputs.save_curves(tmp_path / "b.png", [{"step": 1, "loss": float("nan")}, {"step": 2}])
    assert _is_png(tmp_path / "b.png")
    outputs.save_curves(tmp_path / "c.png", [])
    assert _is_png(tmp_path / "c.png")


def test_curves_do_not_change_pyplot_backend(tmp_path):
    import matplotlib

    before = matplotlib.get_backend()
    outputs.save_curves(tmp_path / "d.png", [{"step": 0, "loss": 1.0}])
    assert matplotlib.get_backend() == before


# ---------------------------------------------------------------------------------------------- metrics
def test_metrics_round_trip_and_numpy_scalars(tmp_path):
    path = tmp_path / "sub" / "metrics.jsonl"
    with outputs.MetricsWriter(path) as w:
        w.write({"step": np.int64(1), "loss": np.float32(0.5)})
        w.write(step=2, loss=np.array(0.25), acc=np.float64(0.75), flag=np.bool_(True))
        w({"step": 3, "loss": float("nan"), "per_seed": np.array([0.1, 0.2])})
    records = outputs.read_metrics(path)
    assert [r["step"] for r in records] == [1, 2, 3]
    assert isinstance(records[0]["step"], int) and records[0]["loss"] == 0.5
    assert records[1] == {"step": 2, "loss": 0.25, "acc": 0.75, "flag": True}
    assert np.isnan(records[2]["loss"]) and records[2]["per_seed"] == pytest.approx([0.1, 0.2])
    assert outputs.read_metrics(tmp_path / "missing.jsonl") == []


def test_metrics_flushes_each_line(tmp_path):
    path = tmp_path / "m.jsonl"
    w = outputs.MetricsWriter(path)
    w.write(step=1, loss=1.0)
    assert outputs.read_metrics(path) == [{"step": 1, "loss": 1.0}]  # visible before close
    w.close()
    w.close()


def test_metrics_truncated_last_line(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"step": 1, "loss": 1.0}\n{"step": 2, "loss": 0.5}\n{"step": 3, "lo')
    assert outputs.read_metrics(path) == [{"step": 1, "loss": 1.0}, {"step": 2, "loss": 0.5}]
    # Appending after a crash must not glue the new record onto the partial line.
    with outputs.MetricsWriter(path) as w:
        w.write(step=3, loss=0.25)
    assert [r["step"] for r in outputs.read_metrics(path)] == [1, 2, 3]
    assert path.read_text().endswith("\n")


def test_metrics_complete_last_line_without_newline_is_kept(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"step": 1}\n{"step": 2}')
    assert outputs.read_metrics(path) == [{"step": 1}, {"step": 2}]
    with outputs.MetricsWriter(path) as w:
        w.write(step=3)
    assert outputs.read_metrics(path) == [{"step": 1}, {"step": 2}, {"step": 3}]


def test_metrics_corrupt_middle_line_raises(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"step": 1}\ngarbage\n{"step": 2}\n')
    with pytest.raises(CheckpointError, match="line 2"):
        outputs.read_metrics(path)


def test_metrics_resume_truncates(tmp_path):
    path = tmp_path / "metrics.jsonl"
    with outputs.MetricsWriter(path) as w:
        for step in range(1, 11):
            w.write(step=step, loss=1.0 / step)
        w.write(step=10, synthetic_acc=0.5)
        w.write(note="no step")
    with outputs.MetricsWriter(path, resume_step=6) as w:
        assert _no_temp_files(tmp_path) == []
        assert [r.get("step") for r in outputs.read_metrics(path)] == [1, 2, 3, 4, 5, 6, None]
        for step in range(7, 11):
            w.write(step=step, loss=0.0)
    steps = [r["step"] for r in outputs.read_metrics(path) if "loss" in r]
    assert steps == list(range(1, 11))  # no duplicates
    # Resuming beyond the last record keeps everything.
    before = path.read_text()
    outputs.MetricsWriter(path, resume_step=100).close()
    assert path.read_text() == before
    # Resuming into a missing file just creates it.
    outputs.MetricsWriter(tmp_path / "new.jsonl", resume_step=3).close()
    assert outputs.read_metrics(tmp_path / "new.jsonl") == []


# ---------------------------------------------------------------------------------------------- progress
class FakeClock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


class TTY(io.StringIO):
    def isatty(self):
        return True


def test_progress_plain_lines_with_eta():
    stream, clock = io.StringIO(), FakeClock()
    p = outputs.Progress(1000, stream=stream, log_every=100, clock=clock)
    clock.t += 30.0  # compilation: excluded from the rate
    p.update(1, loss=2.0)
    for step in range(2, 1001):
        clock.t += 0.01  # 100 it/s
        p.update(step, loss=np.float32(1.234))
    p.close()
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()
    assert lines[0] == "step 1/1000  loss 2.000e+00  ? it/s  eta ?"
    assert lines[1] == "step 101/1000  loss 1.234e+00  100.0 it/s  eta 0:00:09"
    assert lines[-1].startswith("step 1000/1000") and lines[-1].endswith("eta 0:00:00")
    assert len(lines) == 11  # first update + every 100 steps + final


def test_progress_force_and_close_logs_pending():
    stream, clock = io.StringIO(), FakeClock()
    p = outputs.Progress(1000, initial=500, stream=stream, log_every=1000, clock=clock)
    p.update(501)
    clock.t += 1.0
    p.update(511, loss=1.0)
    clock.t += 1.0
    p.update(521, force=True, synthetic_acc=0.5)
    clock.t += 1.0
    p.update(531)
    p.close()
    p.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3 and lines[0].startswith("step 501/1000")
    assert lines[1] == "step 521/1000  loss 1.000e+00  synthetic_acc 5.000e-01  10.0 it/s  eta 0:00:48"
    assert lines[2].startswith("step 531/1000")


def test_progress_tty_uses_carriage_returns():
    stream, clock = TTY(), FakeClock()
    p = outputs.Progress(100, stream=stream, clock=clock, min_interval=0.0)
    for step in range(1, 101):
        clock.t += 0.5
        p.update(step, loss=0.5)
    p.close()
    out = stream.getvalue()
    assert out.count("\r") >= 99
    assert out.endswith("\n") and out.count("\n") == 1
    last = out.rstrip("\n").split("\r")[-1]
    assert "100%" in last and "step 100/100" in last and "eta 0:00:00" in last and "2.0 it/s" in last
    assert "[" + "#" * 24 + "]" in last


def test_progress_tty_throttles_and_write():
    stream, clock = TTY(), FakeClock()
    p = outputs.Progress(1000, stream=stream, clock=clock, min_interval=1.0)
    for step in range(1, 50):
        clock.t += 0.01
        p.update(step)
    assert stream.getvalue().count("\r") == 1  # only the first draw (0.49 s elapsed)
    p.write("evaluation: 0.5")
    assert "evaluation: 0.5\n" in stream.getvalue()
    p.close()
    assert stream.getvalue().endswith("\n")


def test_format_duration():
    assert outputs.format_duration(71) == "0:01:11"
    assert outputs.format_duration(3 * 3600 + 5) == "3:00:05"
    assert outputs.format_duration(float("inf")) == "?"


# ---------------------------------------------------------------------------------------------- atomic writers
def test_write_json_atomic(tmp_path):
    path = tmp_path / "out" / "results.json"
    outputs.write_json_atomic(path, {"b": np.float32(0.5), "a": [np.int32(1), np.arange(2)], "c": None})
    text = path.read_text()
    assert text == json.dumps({"a": [1, [0, 1]], "b": 0.5, "c": None}, indent=2, sort_keys=True) + "\n"
    outputs.write_json_atomic(path, {"x": 1})  # overwrite
    assert json.loads(path.read_text()) == {"x": 1}
    assert _no_temp_files(path.parent) == []


def test_write_json_atomic_failure_leaves_old_file(tmp_path):
    path = tmp_path / "r.json"
    outputs.write_json_atomic(path, {"ok": True})
    with pytest.raises(TypeError):
        outputs.write_json_atomic(path, {"bad": object()})
    assert json.loads(path.read_text()) == {"ok": True}
    assert _no_temp_files(tmp_path) == []


def test_save_npz_atomic(tmp_path):
    path = tmp_path / "synthetic.npz"
    images = np.arange(24, dtype=np.float32).reshape(2, 2, 2, 3)
    outputs.save_npz_atomic(path, images=images, labels=np.array([0, 1], np.int32))
    with np.load(path) as data:
        np.testing.assert_array_equal(data["images"], images)
        assert data["labels"].dtype == np.int32
    assert sorted(os.listdir(tmp_path)) == ["synthetic.npz"]


def test_atomic_directory_appears_complete_or_not_at_all(tmp_path):
    from ddjax.atomic import atomic_directory
    target = tmp_path / "set"
    with atomic_directory(target, replace=False) as tmp:
        assert not target.exists()                     # filled under a temporary name
        (tmp_path / tmp / "a.txt").write_text("one")
    assert (target / "a.txt").read_text() == "one"
    with pytest.raises(FileExistsError):               # replace=False never removes a non-empty folder
        with atomic_directory(target, replace=False) as tmp:
            (tmp_path / tmp / "b.txt").write_text("two")
    with pytest.raises(RuntimeError):                  # a failure while filling leaves the old folder
        with atomic_directory(target) as tmp:
            (tmp_path / tmp / "c.txt").write_text("three")
            raise RuntimeError("boom")
    assert sorted(os.listdir(target)) == ["a.txt"]
    with atomic_directory(target) as tmp:              # replace=True: the new folder replaces the old one
        (tmp_path / tmp / "d.txt").write_text("four")
    assert sorted(os.listdir(target)) == ["d.txt"]
    assert sorted(os.listdir(tmp_path)) == ["set"]     # no temporary folder left behind
