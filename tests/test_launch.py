"""The launcher end to end on digits at toy scale: outputs, resume exactness, and bad input."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from ddjax.errors import CheckpointError, ConfigError, DDJaxError, DivergenceError
from launch.config import base_config, validate_config
from launch import outputs
from launch.run import run
from repo_files import REPO


def tiny_config(**overrides):
    c = base_config("dm")
    c.ipc = 2
    c.steps = 4
    c.log_every = 1
    c.checkpoint_every = 2
    c.model.width = 8
    c.model.depth = 2
    c.dm.batch_real = 8
    c.dsa_strategy = "color_crop_cutout_scale_rotate"
    c.eval.every = 0
    c.eval.num_seeds = 2
    c.eval.epochs = 2
    c.eval.dsa_strategy = "none"
    for key, value in overrides.items():
        target = c
        *parents, leaf = key.split(".")
        for p in parents:
            target = target[p]
        target[leaf] = value
    return c


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished tiny DM run that also evaluated its set on ConvNetW32 (config.eval.architectures)."""
    workdir = str(tmp_path_factory.mktemp("finished") / "run")
    return workdir, run(tiny_config(**{"eval.architectures": "ConvNetW32"}), workdir)


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
    """An uninterrupted 6-step run (the reference of the resume test, and a second run for launch.compare)."""
    workdir = str(tmp_path_factory.mktemp("straight") / "run")
    run(tiny_config(steps=6, checkpoint_every=3), workdir)
    return workdir


def test_run_writes_every_output(finished_run):
    workdir, results = finished_run
    for name in ("config.json", "metrics.jsonl", "synthetic.npz", "results.json", "curves.png", "synthetic.png",
                 "images/step_000004.png", "eval_ConvNetW32.json"):
        assert os.path.exists(os.path.join(workdir, name)), name
    with open(os.path.join(workdir, "results.json")) as f:
        saved = json.load(f)
    assert saved == json.loads(json.dumps(results))
    for key in ("algorithm", "dataset", "ipc", "steps", "seconds", "synthetic", "random_real", "cross_architecture"):
        assert key in saved
    assert (saved["algorithm"], saved["dataset"], saved["ipc"], saved["steps"]) == ("dm", "digits", 2, 4)
    for r in (saved["synthetic"], saved["random_real"], saved["cross_architecture"]["ConvNetW32"]):
        assert len(r["per_seed"]) == 2 and all(0.0 <= a <= 1.0 for a in r["per_seed"])
        assert r["mean"] == pytest.approx(np.mean(r["per_seed"]))
    with open(os.path.join(workdir, "eval_ConvNetW32.json")) as f:
        assert json.load(f)["per_seed"] == saved["cross_architecture"]["ConvNetW32"]["per_seed"]
    npz = np.load(os.path.join(workdir, "synthetic.npz"))
    assert npz["images"].shape == (20, 8, 8, 1) and npz["labels"].tolist() == sorted(npz["labels"].tolist())
    assert 0.0 <= npz["pixels"].min() and npz["pixels"].max() <= 1.0
    steps = [r["step"] for r in map(json.loads, open(os.path.join(workdir, "metrics.jsonl"))) if "loss" in r]
    assert steps == [1, 2, 3, 4]


def test_resumed_run_ends_with_the_same_synthetic_set(straight_run, tmp_path):
    resumed = str(tmp_path / "resumed")
    run(tiny_config(steps=3, checkpoint_every=3), resumed)        # "interrupted" after step 3
    run(tiny_config(steps=6, checkpoint_every=3), resumed)        # the same command again, longer: resumes
    a = np.load(os.path.join(straight_run, "synthetic.npz"))["images"]
    b = np.load(os.path.join(resumed, "synthetic.npz"))["images"]
    np.testing.assert_array_equal(a, b)
    steps = [r["step"] for r in map(json.loads, open(os.path.join(resumed, "metrics.jsonl"))) if "loss" in r]
    assert steps == [1, 2, 3, 4, 5, 6]  # no duplicated records after the resume
    tb = _tensorboard_steps(resumed)
    assert tb["train/loss"] == [1, 2, 3, 4, 5, 6] and tb["images/synthetic"] == [3, 6]   # TensorBoard: no duplicates


def _tensorboard_steps(workdir):
    """{tag: [steps]} of the run's TensorBoard event files (issue 16)."""
    from launch.outputs.tensorboard import read_events
    found = {}
    for event in read_events(os.path.join(workdir, "tensorboard")):
        for value in event.summary.value:
            found.setdefault(value.tag, []).append(event.step)
    return found


def test_run_writes_a_self_describing_set_and_tensorboard_files(finished_run):
    from ddjax import load_synthetic
    workdir, _ = finished_run
    syn = load_synthetic(workdir)                    # no dataset needed: the normalisation is in the file
    assert syn.class_names == tuple("0123456789") and syn.dataset == "digits" and syn.image_shape == (8, 8, 1)
    assert syn.config["ipc"] == 2 and syn.config["algorithm"] == "dm" and syn.zca is None
    np.testing.assert_allclose(syn.to_pixels(syn.images), syn.pixels, atol=1e-6)
    tb = _tensorboard_steps(workdir)
    assert tb["train/loss"] == [1, 2, 3, 4] and tb["time/seconds"] == [1, 2, 3, 4]
    assert tb["eval/synthetic_acc"] == [4] and tb["images/synthetic"] == [4]


def test_launch_evaluate_gives_the_runs_own_cross_architecture_accuracies(finished_run, tmp_path):
    from launch.evaluate import evaluate_saved
    workdir, results = finished_run
    workdir = shutil.copytree(workdir, tmp_path / "copy")   # the module's run stays as the run wrote it
    result, path = evaluate_saved(str(workdir), "convnetw32")   # names are case-insensitive: same key, networks
    assert result["per_seed"] == results["cross_architecture"]["ConvNetW32"]["per_seed"]
    assert result["mean"] == pytest.approx(np.mean(result["per_seed"]))
    assert result["std"] == pytest.approx(np.std(result["per_seed"]))
    with open(path) as f:
        assert json.load(f)["architecture"] == "convnetw32" and path.endswith("eval_convnetw32.json")
    alone, _ = evaluate_saved(None, "ConvNetW32", synthetic=str(workdir / "synthetic.npz"))   # config from the npz
    assert alone["per_seed"] == result["per_seed"]


def test_launch_evaluate_bad_input_is_one_line(finished_run, tmp_path):
    from launch.evaluate import evaluate_saved
    workdir, _ = finished_run
    before = sorted(os.listdir(workdir))
    with pytest.raises(CheckpointError, match="does not exist; pass the --workdir of a finished run"):
        evaluate_saved(str(tmp_path / "nope"), "AlexNet")
    with pytest.raises(ConfigError, match="unknown architecture 'LeNet5'"):
        evaluate_saved(workdir, "LeNet5")
    with pytest.raises(ConfigError, match="VGG-11 needs larger images: a 8x8 input"):   # digits are 8x8
        evaluate_saved(workdir, "VGG11")
    with pytest.raises(DDJaxError, match="no synthetic set at"):
        evaluate_saved(workdir, "AlexNet", synthetic=str(tmp_path / "missing.npz"))
    assert sorted(os.listdir(workdir)) == before


def test_num_seeds_zero_distils_without_evaluating(tmp_path):
    """eval.num_seeds = 0: the set and its picture are written, nothing is trained on it (no "synthetic" or
    "random_real" entry, no accuracy record), and launch.evaluate asks for --num_seeds."""
    from launch.evaluate import evaluate_saved
    workdir = str(tmp_path / "run")
    result = run(tiny_config(steps=2, **{"eval.num_seeds": 0}), workdir)
    assert result["num_seeds"] == 0 and "synthetic" not in result and "random_real" not in result
    assert np.load(os.path.join(workdir, "synthetic.npz"))["images"].shape == (2 * 10, 8, 8, 1)
    assert os.path.exists(os.path.join(workdir, "synthetic.png"))
    assert not any("synthetic_acc" in r for r in outputs.read_metrics(os.path.join(workdir, "metrics.jsonl")))
    with pytest.raises(ConfigError, match="distilled without evaluating"):
        evaluate_saved(workdir, "ConvNetW32")
    with pytest.raises(ConfigError, match="eval.architectures needs trained networks"):
        validate_config(tiny_config(**{"eval.num_seeds": 0, "eval.architectures": "AlexNet"}))


def test_compare_tables_two_runs_and_draws_the_chart(finished_run, straight_run, tmp_path):
    from launch import compare
    workdir, results = finished_run
    rows = [compare.read_run(workdir), compare.read_run(straight_run)]
    table = compare.markdown_table(rows).splitlines()
    assert table[0] == "| run | method | dataset | IPC | steps | synthetic | random real | ConvNetW32 | seconds |"
    first = [c.strip() for c in table[2].strip("|").split("|")]
    s, r, x = results["synthetic"], results["random_real"], results["cross_architecture"]["ConvNetW32"]
    assert first[:8] == ["run", "dm", "digits", "2", "4", f"{s['mean']:.4f} ± {s['std']:.4f}",
                         f"{r['mean']:.4f} ± {r['std']:.4f}", f"{x['mean']:.4f} ± {x['std']:.4f}"]
    second = [c.strip() for c in table[3].strip("|").split("|")]
    assert second[4] == "6" and second[7] == ""    # the straight run has no ConvNetW32 evaluation
    compare.bar_chart(rows, str(tmp_path / "c.png"))
    from PIL import Image
    assert Image.open(tmp_path / "c.png").format == "PNG"
    with pytest.raises(CheckpointError, match="has no results.json"):
        compare.read_run(str(tmp_path))


def test_default_workdir_includes_the_config_argument():
    from launch.cli import default_workdir
    assert default_workdir("configs/dm_fmnist.py:10") == os.path.join("workdirs", "dm_fmnist_10")
    assert default_workdir("configs/dm_fmnist.py:50") != default_workdir("configs/dm_fmnist.py:10")
    assert default_workdir("configs/dm_tiny.py") == os.path.join("workdirs", "dm_tiny")
    assert default_workdir("configs/didd_tiny.py:method=mas,seed=1") == os.path.join(
        "workdirs", "didd_tiny_method=mas_seed=1")


def test_help_lists_every_config_and_algorithm():
    from ddjax.algorithms import ALGORITHM_NAMES
    from launch.cli import help_text
    lines = [line.split()[0] for line in help_text("python -m launch.main").splitlines() if line.startswith("  ")]
    configs = sorted(f for f in os.listdir(os.path.join(REPO, "configs")) if f.endswith(".py"))
    assert [n for n in lines if n.endswith(".py")] == configs
    assert [n for n in lines if not n.endswith(".py")] == list(ALGORITHM_NAMES)


def test_workdir_with_a_different_config_is_refused_and_untouched(tmp_path):
    workdir = str(tmp_path / "run")
    run(tiny_config(steps=2), workdir)
    before = {p: open(os.path.join(workdir, p), "rb").read() for p in ("config.json", "results.json")}
    with pytest.raises(CheckpointError, match=r"different config \(differs in: ipc\)"):
        run(tiny_config(steps=2, ipc=3), workdir)
    for p, content in before.items():
        assert open(os.path.join(workdir, p), "rb").read() == content


def test_corrupt_checkpoint_gives_one_line_and_keeps_files(tmp_path):
    workdir = str(tmp_path / "run")
    run(tiny_config(steps=2, checkpoint_every=2), workdir)
    ckpt = os.path.join(workdir, "checkpoints", "2")
    for root, _, files in os.walk(ckpt):
        for name in files:
            if name not in ("_CHECKPOINT_METADATA",):
                with open(os.path.join(root, name), "wb") as f:
                    f.write(b"garbage")
    listing = sorted(os.listdir(ckpt))
    with pytest.raises(CheckpointError, match="cannot be restored") as info:
        run(tiny_config(steps=4, checkpoint_every=2), workdir)
    assert "\n" not in str(info.value) and "delete that folder" in str(info.value)
    assert sorted(os.listdir(ckpt)) == listing


def test_diverging_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    workdir = str(tmp_path / "run")
    config = tiny_config(steps=6, checkpoint_every=1, **{"dm.lr_img": 1e30, "model.norm": "none"})
    with pytest.raises(DivergenceError, match="lower the image learning rate") as info:
        run(config, workdir)
    good = int(str(info.value).split("(step ")[1].split(")")[0])
    assert str(good) in os.listdir(os.path.join(workdir, "checkpoints"))
    assert not os.path.exists(os.path.join(workdir, "results.json"))


class _Checkpoints:
    """What train_steps needs of a Checkpointer: records the steps saved and the states' values."""
    directory = "ckpt"

    def __init__(self):
        self.saved = {}

    def save(self, step, state, record):
        self.saved[step] = float(state)

    def latest_step(self):
        return max(self.saved, default=None)


def test_step_loop_syncs_only_at_log_steps_and_names_the_first_non_finite_step(tmp_path):
    """Issue 15: the loss is read only at log/checkpoint/last steps, yet the error names the step that first went
    non-finite (5, between log steps 4 and 8) and no checkpoint is written of a state past it (6 is not)."""
    import io

    import jax
    import jax.numpy as jnp

    from launch import outputs
    from launch.run import train_steps

    def step_fn(x, _):   # x doubles each step; the loss is inf from step 5 (x = 2**5 > 20) on, NaN from step 7
        x = x * 2.0
        loss = jnp.where(x > 20.0, jnp.where(x > 100.0, jnp.nan, jnp.inf), x)
        return x, {"loss": loss}
    step_fn = jax.jit(step_fn)
    config = tiny_config(steps=9, log_every=4, checkpoint_every=3)
    writer = outputs.MetricsWriter(str(tmp_path / "metrics.jsonl"))
    progress = outputs.Progress(9, stream=io.StringIO(), log_every=4)
    checkpoints = _Checkpoints()
    calls = []
    with pytest.raises(DivergenceError, match=r"loss became inf at step 5; the last good checkpoint \(step 3\)"):
        train_steps(jnp.float32(1.0), step_fn, None, 1, 9, config=config, writer=writer, progress=progress,
                    checkpointer=checkpoints, elapsed=lambda: 0.0, on_step=lambda step, state: calls.append(step))
    assert checkpoints.saved == {3: 8.0}
    assert [r["step"] for r in outputs.read_metrics(str(tmp_path / "metrics.jsonl"))] == [4]
    assert calls == [1, 2, 3, 4, 5]   # stopped at the checkpoint step 6, before saving it
    # A finite run logs at 4, 8 and the last step and returns the last state.
    out = train_steps(jnp.float32(1e-3), step_fn, None, 1, 9, config=config, writer=writer, progress=progress,
                      checkpointer=_Checkpoints(), elapsed=lambda: 0.0)
    assert float(out) == pytest.approx(1e-3 * 2 ** 9)


@pytest.mark.parametrize("key, value, message", [
    ("algorithm", "dmm", "unknown algorithm 'dmm'; valid choices: dm"),
    ("model.name", "vgg", "unknown model 'vgg'; valid choices: convnet, resnet18"),
    ("model.norm", "weird", "unknown norm 'weird'"),
    ("ipc", 0, "ipc must be >= 1"),
    ("dsa_strategy", "color_blur", "blur"),
    ("init", "zeros", "valid choices: real, noise"),
])
def test_validate_config_messages(key, value, message):
    config = tiny_config()
    if key == "algorithm":
        config.algorithm = value
    else:
        config = tiny_config(**{key: value})
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        validate_config(config)


def test_unknown_dataset_is_one_line_and_pins_no_config(tmp_path):
    workdir = tmp_path / "w"
    with pytest.raises(ConfigError, match="digits, fashion_mnist"):
        run(tiny_config(**{"data.name": "cifar11", "data.data_dir": str(tmp_path / "tfds")}), str(workdir))
    assert not (workdir / "config.json").exists()  # a corrected rerun in the same workdir is not refused


def test_cli_bad_input_exits_2_with_one_line(tmp_path):
    workdir = tmp_path / "w"
    proc = subprocess.run(
        [sys.executable, "-m", "launch.main", "--config=configs/dm_tiny.py", "--config.ipc=0", f"--workdir={workdir}"],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: ipc must be >= 1, got 0; set --config.ipc=<integer >= 1>"]
    assert not workdir.exists()
