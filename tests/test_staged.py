"""Staged runs (launch.staged) with DM on a 3-domain rotated-digits collection at toy scale: outputs and the
results contract, the boundary hook, resume mid-phase and at a boundary, gather and leave-one-out."""
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ddjax import algorithms, continual, evaluate
from ddjax.errors import CheckpointError
from launch.domains import collection_from_config
from launch.run import build_eval_model, run
from launch.staged import train_eval_networks
from test_launch import tiny_config

STEPS = 2   # per phase; 3 phases -> global steps 1..6, phase ends at 2, 4, 6


def stream_config(plan="stream", **overrides):
    """test_launch's toy DM config over 3 rotated-digits domains (0°, 30°, 60°), checkpoints every step."""
    fields = {"steps": STEPS, "checkpoint_every": 1, "keep_checkpoints": 10,
              "dsa_strategy": "none",   # DM's step with DSA compiles 3x slower; augmentation is not tested here
              "domains.source": "rotated", "domains.num_domains": 3, "domains.angle_step": 30.0, "domains.plan": plan}
    return tiny_config(**{**fields, **overrides})


def _records(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """An uninterrupted stream run whose DM entry records every boundary call (phase, images it received)."""
    calls = []

    def boundary(state, config, phase_index):
        calls.append((phase_index, np.asarray(state.synthetic.images).copy()))
        return state

    def summarize(state, config):
        return {"image_norm": jnp.linalg.norm(state.synthetic.images), "labels": state.synthetic.labels}

    entry = algorithms.REGISTRY["dm"]
    mp = pytest.MonkeyPatch()
    mp.setitem(algorithms.REGISTRY, "dm", entry._replace(boundary=boundary, summarize=summarize))
    try:
        workdir = str(tmp_path_factory.mktemp("straight"))
        results = run(stream_config(), workdir)
    finally:
        mp.undo()
    return workdir, results, calls


def test_stream_writes_the_results_contract_and_pictures(straight):
    workdir, results, _ = straight
    saved = json.load(open(os.path.join(workdir, "results.json")))
    assert saved == json.loads(json.dumps(results))
    assert saved["domains"] == ["rot0", "rot30", "rot60"] and saved["steps"] == 3 * STEPS
    matrix = np.asarray(saved["accuracy_matrix"])
    per_seed = np.asarray(saved["accuracy_matrix_per_seed"])
    assert matrix.shape == (3, 3) and per_seed.shape == (3, 3, 2)
    np.testing.assert_allclose(matrix, per_seed.mean(-1))
    assert saved["A_T"] == pytest.approx(matrix[2].mean())                                   # eq. 18
    assert saved["F_T"] == pytest.approx(np.mean(matrix[:2, :2].max(0) - matrix[2, :2]))      # eq. 19
    np.testing.assert_allclose(saved["A_curve"], continual.accuracy_curve(matrix))
    rows = [r for r in _records(workdir) if "phase_accuracy" in r]
    assert [(r["step"], r["phase"], r["train_domains"]) for r in rows] == [
        (2, 0, ["rot0"]), (4, 1, ["rot30"]), (6, 2, ["rot60"])]
    assert [r["phase_accuracy"] for r in rows] == matrix.tolist()
    for name in ("accuracy_matrix.png", "accuracy_curve.png", "curves.png", "synthetic.npz", "images/phase_0.png",
                 "images/phase_2.png", "phases/0/synthetic.npz", "phases/2/synthetic.npz"):
        assert os.path.exists(os.path.join(workdir, name)), name
    final = np.load(os.path.join(workdir, "synthetic.npz"))
    np.testing.assert_array_equal(final["images"], np.load(os.path.join(workdir, "phases/2/synthetic.npz"))["images"])
    assert final["images"].shape == (20, 8, 8, 1)


def test_boundary_hook_runs_at_every_phase_start_on_the_kept_state(straight):
    workdir, _, calls = straight
    assert [k for k, _ in calls] == [0, 1, 2]
    for k in (1, 2):   # stream keeps the state: phase k starts from phase k-1's final set
        previous = np.load(os.path.join(workdir, f"phases/{k - 1}/synthetic.npz"))["images"]
        np.testing.assert_array_equal(calls[k][1], previous)
    assert not np.array_equal(calls[1][1], calls[0][1])   # and that set did move during phase 0


def test_summarize_hook_is_kept_per_phase(straight):
    workdir = straight[0]
    rows = [r for r in _records(workdir) if "phase_accuracy" in r]
    for k, row in enumerate(rows):
        images = np.load(os.path.join(workdir, f"phases/{k}/synthetic.npz"))["images"]
        summary = np.load(os.path.join(workdir, f"phases/{k}/summary.npz"))
        assert summary["image_norm"] == pytest.approx(np.linalg.norm(images), rel=1e-5)
        assert row["image_norm"] == pytest.approx(float(summary["image_norm"]))   # scalars also in the record
        assert summary["labels"].shape == (20,) and "labels" not in row


@pytest.mark.parametrize("interrupted_after", [3, 4])   # mid-phase 1, and the boundary after phase 1
def test_resumed_stream_ends_bit_identical(straight, tmp_path, interrupted_after):
    workdir, results, _ = straight
    resumed = str(tmp_path / "resumed")
    shutil.copytree(workdir, resumed)
    # what an interruption after `interrupted_after` steps leaves: later checkpoints, phase sets, results never made
    for step in range(interrupted_after + 1, 3 * STEPS + 1):
        shutil.rmtree(os.path.join(resumed, "checkpoints", str(step)))
    for k in range(interrupted_after // STEPS, 3):
        shutil.rmtree(os.path.join(resumed, "phases", str(k)))
    for name in ("results.json", "synthetic.npz", "accuracy_matrix.png"):
        os.remove(os.path.join(resumed, name))
    again = run(stream_config(), resumed)
    assert again["accuracy_matrix_per_seed"] == results["accuracy_matrix_per_seed"]
    for k in range(3):
        a = np.load(os.path.join(workdir, f"phases/{k}/synthetic.npz"))["images"]
        b = np.load(os.path.join(resumed, f"phases/{k}/synthetic.npz"))["images"]
        np.testing.assert_array_equal(a, b)
    steps = [r["step"] for r in _records(resumed) if "loss" in r]
    assert steps == list(range(1, 3 * STEPS + 1))   # no duplicated records after the resume
    from launch.outputs.tensorboard import read_events
    tb = [e.step for e in read_events(os.path.join(resumed, "tensorboard")) for v in e.summary.value
          if v.tag == "train/loss"]
    assert tb == list(range(1, 3 * STEPS + 1))      # the staged run's TensorBoard too, once per step


def test_gather_evaluates_the_union_and_leave_one_out_never_trains_on_the_held_out_domain(tmp_path, monkeypatch):
    seen = []
    original = algorithms.prepare_data

    def spy(config, dataset, real, mesh=None, stream=None):
        seen.append((config.data.name, sorted(set(np.asarray(dataset.train_labels).tolist())), dataset.name))
        return original(config, dataset, real, mesh=mesh, stream=stream)

    monkeypatch.setattr(algorithms, "prepare_data", spy)
    gather = run(stream_config("gather", steps=1, **{"domains.num_domains": 2}), str(tmp_path / "gather"))
    assert gather["synthetic_size"] == 2 * 20 and np.asarray(gather["accuracy_matrix"]).shape == (2, 2)
    union = np.load(str(tmp_path / "gather" / "synthetic.npz"))["images"]
    np.testing.assert_array_equal(union, np.concatenate(
        [np.load(str(tmp_path / "gather" / "phases" / str(k) / "synthetic.npz"))["images"] for k in (0, 1)]))
    sizes = [r["eval_set_size"] for r in _records(str(tmp_path / "gather")) if "phase_accuracy" in r]
    assert sizes == [20, 40]   # phase k is scored on the union of phases 0..k's sets

    seen.clear()
    loo = run(stream_config("leave_one_out", steps=1), str(tmp_path / "loo"))
    assert [name for name, _, _ in seen] == ["rotated_digits/rot30+rot60", "rotated_digits/rot0+rot60",
                                             "rotated_digits/rot0+rot30"]   # prepare keys by what it trains on
    assert set(loo["leave_one_out"]) == {"rot0", "rot30", "rot60"}
    for held_out, r in loo["leave_one_out"].items():
        assert len(r["per_seed"]) == 2 and r["mean"] == pytest.approx(np.mean(r["per_seed"]))
    assert loo["leave_one_out_mean"] == pytest.approx(np.mean([r["mean"] for r in loo["leave_one_out"].values()]))
    assert "accuracy_matrix" not in loo


def test_whole_plan_trains_on_the_real_union_of_seen_domains_distils_nothing_and_resumes(tmp_path):
    """DIDD's "Whole data" row: phase k's networks are exactly those trained on the real train splits of domains
    0..k (recomputed here with the same key), no distillation step runs, no set is saved; a resume after phase 0
    ends with the same matrix."""
    config = stream_config("whole", **{"domains.num_domains": 2, "eval.num_seeds": 1, "eval.epochs": 1})
    workdir = str(tmp_path / "whole")
    results = run(config, workdir)
    records = _records(workdir)
    assert not [r for r in records if "loss" in r]                        # no distillation step ran
    collection = collection_from_config(config)
    seen = [collection.load_many(tuple(range(k + 1))) for k in (0, 1)]
    rows = [r for r in records if "phase_accuracy" in r]
    assert [r["train_domains"] for r in rows] == [["rot0"], ["rot0", "rot30"]]
    assert [r["eval_set_size"] for r in rows] == [len(d.train_labels) for d in seen]
    assert len(seen[1].train_labels) == 2 * len(seen[0].train_labels)    # the union, not the last domain alone
    assert results["synthetic_size"] == len(seen[1].train_labels) and results["plan"] == "whole"
    model = build_eval_model(config, collection.num_classes)
    key = jax.random.split(jax.random.PRNGKey(config.seed), 3)[2]
    for k, dataset in enumerate(seen):
        variables = train_eval_networks(jax.random.fold_in(key, (k + 1) * STEPS), config, model,
                                        dataset.train_images, dataset.train_labels, collection.num_classes)
        expected = [evaluate.accuracy(model, variables, *collection.load_test(t)).tolist() for t in (0, 1)]
        assert results["accuracy_matrix_per_seed"][k] == expected
    assert not os.path.exists(os.path.join(workdir, "synthetic.npz"))
    assert not os.path.exists(os.path.join(workdir, "phases"))
    assert os.path.exists(os.path.join(workdir, "accuracy_matrix.png"))

    resumed = str(tmp_path / "resumed")
    shutil.copytree(workdir, resumed)
    shutil.rmtree(os.path.join(resumed, "checkpoints", str(2 * STEPS)))
    os.remove(os.path.join(resumed, "results.json"))
    again = run(config, resumed)
    assert again["accuracy_matrix_per_seed"] == results["accuracy_matrix_per_seed"]
    assert [r["phase"] for r in _records(resumed) if "phase_accuracy" in r] == [0, 1]   # phase 0 not redone


def test_a_boundary_that_changes_the_state_structure_is_one_line(tmp_path, monkeypatch):
    def grow(state, config, phase_index):
        return state.replace(step=jnp.stack([state.step, state.step]))   # a leaf changes shape

    monkeypatch.setitem(algorithms.REGISTRY, "dm", algorithms.REGISTRY["dm"]._replace(boundary=grow))
    with pytest.raises(CheckpointError, match="boundary hook changed the state's structure at phase 0") as info:
        run(stream_config(steps=1), str(tmp_path / "w"))
    assert "\n" not in str(info.value)


def test_resuming_with_another_phase_length_is_refused(straight, tmp_path):
    workdir = str(tmp_path / "copy")
    shutil.copytree(straight[0], workdir)
    with pytest.raises(CheckpointError, match=f"steps={STEPS} per phase; resume it with --config.steps={STEPS}"):
        run(stream_config(steps=STEPS + 1), workdir)


def test_one_domain_stream_is_refused_before_any_work(tmp_path):
    from ddjax.errors import ConfigError
    with pytest.raises(ConfigError, match="needs at least 2 domains"):
        run(stream_config(**{"domains.num_domains": 1}), str(tmp_path / "w"))
    assert not (tmp_path / "w" / "config.json").exists()


def test_config_guard_compares_tuples_with_the_lists_config_json_stores():
    from launch.config import differing_fields
    saved = json.loads(json.dumps({"didd": {"alpha_range": (0.0, 2.0), "sigmas": (0.5, 1.0)}, "ipc": 2}))
    assert differing_fields(saved, {"didd": {"alpha_range": (0.0, 2.0), "sigmas": (0.5, 1.0)}, "ipc": 2}) == []
    assert differing_fields(saved, {"didd": {"alpha_range": (0.0, 3.0), "sigmas": (0.5, 1.0)}, "ipc": 2}) == [
        "didd.alpha_range"]   # a real change is still seen


def didd_stream_config():
    """The DIDD bi-level update over 2 domains, 2 steps each: step 3 is inside domain 2, where x̂ᵗ⁻¹ is frozen and
    α, β move (the state a DIDD resume must restore: previous set, has_previous, rates and their optimiser)."""
    c = stream_config(**{"domains.num_domains": 2, "eval.num_seeds": 1, "eval.epochs": 1})
    c.algorithm = "didd"
    c.didd = algorithms.default_config("didd")
    c.didd.update(batch_real=8, factor=1, init_mix=False, lr_alpha=1.0, lr_beta=1.0)   # rates visibly move in 1 step
    return c


def test_resumed_didd_stream_inside_domain_2_ends_bit_identical(tmp_path):
    straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
    results = run(didd_stream_config(), straight)
    shutil.copytree(straight, resumed)
    # an interruption after step 3 (domain 2's first step): no step-4 checkpoint, no phase-1 outputs, no results
    shutil.rmtree(os.path.join(resumed, "checkpoints", "4"))
    shutil.rmtree(os.path.join(resumed, "phases", "1"))
    for name in ("results.json", "synthetic.npz", "accuracy_matrix.png"):
        os.remove(os.path.join(resumed, name))
    again = run(didd_stream_config(), resumed)   # refused before the config guard compared tuples as lists
    assert again["accuracy_matrix_per_seed"] == results["accuracy_matrix_per_seed"]
    for name in ("synthetic.npz", "summary.npz"):
        a, b = np.load(os.path.join(straight, "phases/1", name)), np.load(os.path.join(resumed, "phases/1", name))
        assert sorted(a.files) == sorted(b.files)
        for key in a.files:
            np.testing.assert_array_equal(a[key], b[key], err_msg=f"{name}:{key}")
    summary = np.load(os.path.join(straight, "phases/1/summary.npz"))
    assert np.ptp(summary["alpha_bar"]) > 0 and np.ptp(summary["beta_bar"]) > 0   # the resumed state had moved rates
    assert [r["step"] for r in _records(resumed) if "loss" in r] == [1, 2, 3, 4]
