"""TensorBoard event files from launch.outputs: values read back by parsing the TFRecord framing independently
(struct + the Event protobuf shipped with tensorboardX), and a resume that appends without duplicate steps."""
import glob
import io
import os
import struct

import numpy as np
import pytest

from launch import outputs

event_pb2 = pytest.importorskip("tensorboardX.proto.event_pb2")


def parse_events(logdir):
    """{tag: [(step, value or image)]} over every event file, read with struct (TFRecord: u64 length, u32 crc,
    payload, u32 crc) and the Event protobuf."""
    found = {}
    for path in sorted(glob.glob(os.path.join(logdir, "events.out.tfevents.*"))):
        data = open(path, "rb").read()
        pos = 0
        while pos < len(data):
            (n,) = struct.unpack("<Q", data[pos:pos + 8])
            event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + n])
            pos += 12 + n + 4
            for v in event.summary.value:
                value = v.simple_value if v.WhichOneof("value") == "simple_value" else v.image
                found.setdefault(v.tag, []).append((event.step, value))
    return found


def _log(workdir, steps, resume_step, evaluate_at=()):
    tb = outputs.TensorBoardWriter(os.path.join(workdir, "tensorboard"), resume_step=resume_step)
    with outputs.MetricsWriter(os.path.join(workdir, "metrics.jsonl"), resume_step=resume_step or None,
                               tensorboard=tb) as writer:
        for step in steps:
            writer.write(step=step, loss=1.0 / step, match=2.0 * step, seconds=0.5 * step)
            if step in evaluate_at:
                writer.write(step=step, synthetic_acc=0.1 * step, synthetic_acc_std=0.01,
                             per_seed=[0.1, 0.2])          # a list: metrics.jsonl only
                grid = os.path.join(workdir, "synthetic.png")
                outputs.save_image_grid(grid, np.full((2, 4, 4, 1), 0.25 * (step % 4)), np.array([0, 1]), 2)
                tb.add_image_file("images/synthetic", grid, step)
    tb.close()


def test_scalars_and_image_grid_are_readable(tmp_path):
    _log(tmp_path, [1, 2, 3], resume_step=0, evaluate_at=(3,))
    ev = parse_events(str(tmp_path / "tensorboard"))
    assert sorted(ev) == ["eval/synthetic_acc", "eval/synthetic_acc_std", "images/synthetic", "time/seconds",
                          "train/loss", "train/match"]
    assert ev["train/loss"] == [(1, pytest.approx(1.0)), (2, pytest.approx(0.5)), (3, pytest.approx(1 / 3))]
    assert ev["train/match"] == [(s, pytest.approx(2.0 * s)) for s in (1, 2, 3)]
    assert ev["time/seconds"] == [(s, pytest.approx(0.5 * s)) for s in (1, 2, 3)]
    assert ev["eval/synthetic_acc"] == [(3, pytest.approx(0.3))]
    (step, image), = ev["images/synthetic"]
    from PIL import Image
    decoded = np.asarray(Image.open(io.BytesIO(image.encoded_image_string)).convert("L"))
    png = np.asarray(Image.open(tmp_path / "synthetic.png").convert("L"))
    assert step == 3 and (image.height, image.width) == png.shape
    np.testing.assert_array_equal(decoded, png)                 # the grid itself: 0.75 grey cells on white
    assert decoded.min() == round(0.75 * 255) and decoded.max() == 255


def test_resume_appends_without_duplicate_steps(tmp_path):
    _log(tmp_path, [1, 2, 3, 4], resume_step=0, evaluate_at=(4,))   # died after step 4, checkpoint at step 2
    _log(tmp_path, [3, 4, 5, 6], resume_step=2, evaluate_at=(4, 6))  # resumed from step 2
    _log(tmp_path, [], resume_step=6, evaluate_at=())                  # a finished run started again
    tb = outputs.TensorBoardWriter(str(tmp_path / "tensorboard"), resume_step=6)
    tb.add_record({"step": 6, "synthetic_acc": 0.6})                # the re-evaluation of the last step: skipped
    tb.close()
    ev = parse_events(str(tmp_path / "tensorboard"))
    assert [s for s, _ in ev["train/loss"]] == [1, 2, 3, 4, 5, 6]
    assert [v for _, v in ev["train/loss"]] == pytest.approx([1 / s for s in range(1, 7)])
    assert [s for s, _ in ev["eval/synthetic_acc"]] == [4, 6]
    assert [s for s, _ in ev["images/synthetic"]] == [4, 6]
    assert outputs.tensorboard.read_events(str(tmp_path / "tensorboard"))    # the module's own reader agrees
    assert len([e for e in outputs.tensorboard.read_events(str(tmp_path / "tensorboard"))
                if any(v.tag == "train/loss" for v in e.summary.value)]) == 6


def test_fresh_start_clears_an_old_log(tmp_path):
    _log(tmp_path, [1, 2], resume_step=0)
    _log(tmp_path, [1], resume_step=0)                                # a new attempt from step 0
    ev = parse_events(str(tmp_path / "tensorboard"))
    assert [s for s, _ in ev["train/loss"]] == [1]
