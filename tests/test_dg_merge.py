"""benchmarks/dg_leave_one_out.py --merge: one method's per-held-out-domain invocations joined into one results
file with the same ``leave_one_out`` / ``leave_one_out_mean`` keys; a domain measured twice is refused."""
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
