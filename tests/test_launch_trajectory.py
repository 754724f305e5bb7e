"""SATM/MTT through the launcher at toy scale: experts made on first use and reused, learned lr used in the
evaluation and saved, resume, and the experts CLI."""
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from ddjax.errors import DataNotFoundError
from launch.config import base_config
from launch.run import run
from repo_files import REPO


def tiny_trajectory_config(tmp_path, algorithm="satm"):
    c = base_config(algorithm)
    c.ipc = 2
    c.steps = 3
    c.log_every = 1
    c.checkpoint_every = 2
    c.model.width = 8
    c.model.depth = 2
    c.dsa_strategy = "color_crop_cutout_scale_rotate"
    c.pretrained_dir = str(tmp_path / "pretrained")
    h = c[algorithm]
    h.syn_steps, h.expert_epochs, h.max_start_epoch, h.batch_syn, h.scan_unroll = 3, 1, 2, 8, 1
    h.experts.num_experts, h.experts.epochs, h.experts.batch_size = 2, 3, 128
    c.eval.every = 0
    c.eval.num_seeds = 1
    c.eval.epochs = 2
    c.eval.dsa_strategy = "none"
    return c


def test_satm_run_makes_experts_once_and_evaluates_with_the_learned_lr(tmp_path):
    config = tiny_trajectory_config(tmp_path)
    log = io.StringIO()
    results = run(config, str(tmp_path / "run"), stream=log)
    assert "making experts" in log.getvalue()
    entries = os.listdir(tmp_path / "pretrained" / "experts")
    assert len(entries) == 1
    records = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    evals = [r for r in records if "synthetic_acc" in r]
    npz = np.load(tmp_path / "run" / "synthetic.npz")
    assert evals[-1]["eval_lr"] == pytest.approx(float(npz["lr"]))
    assert results["synthetic"]["mean"] >= 0.0 and {"loss", "eps_norm", "syn_lr"} <= set(records[0])

    # the experts command (and any later run with the same expert settings, MTT included) reuses them
    from launch.experts import make_experts
    mtt = tiny_trajectory_config(tmp_path, "mtt")
    log = io.StringIO()
    path = make_experts(mtt, stream=log)
    assert "making experts" not in log.getvalue() and os.path.basename(path) == entries[0]


def test_missing_experts_without_make_is_one_line_and_writes_nothing(tmp_path):
    config = tiny_trajectory_config(tmp_path)
    config.make_pretrained = False
    with pytest.raises(DataNotFoundError, match="python -m launch.experts"):
        run(config, str(tmp_path / "run"), stream=io.StringIO())
    assert not os.path.exists(tmp_path / "run" / "config.json")


def test_experts_cli_and_main_report_errors_in_one_line(tmp_path):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": os.environ.get("DDJAX_TEST_COMPILE_FLAGS", "")}
    bad = subprocess.run([sys.executable, "-m", "launch.experts", "--config=configs/dm_tiny.py"], cwd=REPO,
                         capture_output=True, text=True, env=env)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1].startswith("error: unknown algorithm (for expert trajectories) 'dm'")
    bad = subprocess.run([sys.executable, "-m", "launch.main", "--config=configs/satm_tiny.py",
                          "--config.satm.truncate=20", f"--workdir={tmp_path / 'w'}"], cwd=REPO,
                         capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and "iota" in bad.stderr.strip().splitlines()[-1]
    assert not os.path.exists(tmp_path / "w" / "config.json")


def test_resumed_satm_run_equals_an_uninterrupted_one(tmp_path):
    """EMA images and VaSSO's state are part of the checkpointed state; resuming is exact (and an init that stores
    the images twice must not trip the launcher's buffer donation)."""
    def config(steps):
        c = tiny_trajectory_config(tmp_path)
        c.steps, c.satm.ema_decay, c.satm.sam.variant, c.eval.random_real = steps, 0.9, "vasso", False
        return c

    run(config(2), str(tmp_path / "interrupted"), stream=io.StringIO())
    log = io.StringIO()
    run(config(4), str(tmp_path / "interrupted"), stream=log)
    assert "resuming from step 2" in log.getvalue()
    run(config(4), str(tmp_path / "straight"), stream=io.StringIO())
    a, b = (np.load(tmp_path / name / "synthetic.npz") for name in ("interrupted", "straight"))
    np.testing.assert_array_equal(a["images"], b["images"])
    assert float(a["lr"]) == float(b["lr"])
