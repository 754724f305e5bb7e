"""benchmarks/dg_leave_one_out.py --merge: one method's per-held-out-domain invocations joined into one results
file with the same ``leave_one_out`` / ``leave_one_out_mean`` keys; a domain measured twice is refused. The
``erm`` and ``random_real`` rows never reach the squeeze or recover stage."""
import json

import pytest

from repo_files import load_module


def _module():
    return load_module("benchmarks/dg_leave_one_out.py", "dg_loo")


def _part(tmp_path, name, domain, accs, seconds):
    cell = {"mean": sum(accs) / len(accs), "std": 0.0, "per_seed": accs}
    out = {"name": name, "config": "c.py", "set": [], "ipc": 10, "domains": ["photo", "art", "cartoon", "sketch"],
           "leave_one_out": {"convnet": {domain: cell}}, "evidence": {domain: {"squeeze_acc_S": 1.0}},
           "leave_one_out_mean": {"convnet": cell["mean"]}, "seconds": seconds}
    path = tmp_path / f"{name}_{domain}_{seconds}.json"
    path.write_text(json.dumps(out))
    return str(path)


def test_merge_joins_domains_in_collection_order_and_refuses_a_repeat(tmp_path):
    loo = _module()
    paths = [_part(tmp_path, "rded", "sketch", [0.4, 0.4, 0.4], 10.0),
             _part(tmp_path, "rded", "photo", [0.2, 0.2, 0.2], 5.0)]
    out = loo.merge_runs(paths, str(tmp_path / "joined"))
    assert list(out["leave_one_out"]["convnet"]) == ["photo", "sketch"]
    assert out["leave_one_out_mean"]["convnet"] == pytest.approx(0.3)
    assert out["seconds"] == 15.0 and set(out["evidence"]) == {"photo", "sketch"}
    assert json.loads((tmp_path / "joined" / "rded.json").read_text()) == out
    with pytest.raises(ValueError, match="more than one"):
        loo.merge_runs(paths + [_part(tmp_path, "rded", "photo", [0.1], 1.0)], str(tmp_path / "j2"))
    with pytest.raises(ValueError, match="one method"):
        loo.merge_runs([paths[0], _part(tmp_path, "sre2l", "art", [0.1], 1.0)], str(tmp_path / "j3"))


def test_erm_and_random_real_rows_make_no_squeeze_model(tmp_path, monkeypatch):
    """The baseline rows validate on real seen-domain images: neither distils nor trains or loads a squeeze
    model (docs/results.md, "2026-12-07: ERM (whole data) and random real")."""
    import numpy as np

    from ddjax import evaluate
    from repo_files import REPO

    loo = _module()

    def forbidden(*args, **kwargs):
        raise AssertionError("a baseline row reached the squeeze/recover stage")

    monkeypatch.setattr(loo, "distil", forbidden)
    monkeypatch.setattr(loo.squeeze, "load_or_make_squeeze", forbidden)
    monkeypatch.setattr(loo.squeeze, "train_squeeze", forbidden)
    trained = {}

    def fake_eval(key, model, images, labels, test_x, test_y, **kwargs):  # no network training in this test
        trained[name] = (np.shape(images)[0], np.asarray(labels).ndim, np.asarray(labels))
        return evaluate.EvalResult.from_accuracies([0.5, 0.5, 0.5])

    monkeypatch.setattr(loo.evaluate, "evaluate_synthetic", fake_eval)
    config = f"{REPO}/configs/dtl_tiny.py"
    for name in ("erm", "random_real"):
        out = loo.run_one(name, config, [], "", str(tmp_path), held_only="photo")
        assert list(out["leave_one_out"]["convnet"]) == ["photo"] and "evidence" not in out
    n_erm, ndim_erm, _ = trained["erm"]
    n_rr, ndim_rr, labels_rr = trained["random_real"]
    assert ndim_erm == ndim_rr == 1                                    # hard labels
    assert n_rr == 10 * 10 and np.array_equal(np.bincount(labels_rr), np.full(10, 10))  # IPC 10 per class
    assert n_erm > 3 * n_rr                                            # every seen-domain training image
