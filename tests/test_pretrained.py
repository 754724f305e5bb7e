"""ddjax.pretrained: the keyed on-disk store for teacher pools and expert trajectories."""
import os

import numpy as np
import pytest

from ddjax import pretrained
from ddjax.errors import CheckpointError, DataNotFoundError

SPEC = {"dataset": "digits", "epochs": 2, "model": {"name": "convnet", "width": 8}}


def _tree():
    return {"params": {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones((3,), np.int32)}}


def test_round_trip_and_spec_keyed_path(tmp_path):
    path = pretrained.entry_path("experts", SPEC, str(tmp_path))
    assert path.startswith(os.path.join(str(tmp_path), "experts", "digits-"))
    assert path == pretrained.entry_path("experts", dict(reversed(list(SPEC.items()))), str(tmp_path))
    assert path != pretrained.entry_path("experts", {**SPEC, "epochs": 3}, str(tmp_path))
    pretrained.save(path, _tree(), SPEC)
    loaded = pretrained.load(path, SPEC)
    np.testing.assert_array_equal(loaded["params"]["w"], _tree()["params"]["w"])
    assert loaded["params"]["b"].dtype == np.int32
    assert pretrained.read_spec(path) == SPEC
    assert not [n for n in os.listdir(os.path.dirname(path)) if n.startswith(".tmp-")]


def test_load_or_make_makes_once_then_loads(tmp_path):
    calls = []

    def make():
        calls.append(1)
        return _tree()

    tree, path = pretrained.load_or_make("teachers", SPEC, make, root=str(tmp_path), stream=open(os.devnull, "w"))
    again, path2 = pretrained.load_or_make("teachers", SPEC, make, root=str(tmp_path))
    assert len(calls) == 1 and path == path2
    np.testing.assert_array_equal(again["params"]["w"], tree["params"]["w"])


def test_missing_without_make_names_the_command(tmp_path):
    with pytest.raises(DataNotFoundError, match="python -m launch.teachers --config=c.py"):
        pretrained.load_or_make("teachers", SPEC, _tree, root=str(tmp_path), allow_make=False,
                                how_to_make="python -m launch.teachers --config=c.py")


def test_wrong_spec_and_damaged_entry_are_refused(tmp_path):
    path = pretrained.entry_path("experts", SPEC, str(tmp_path))
    pretrained.save(path, _tree(), SPEC)
    with pytest.raises(CheckpointError, match="differs in: epochs"):
        pretrained.load(path, {**SPEC, "epochs": 5})
    with open(os.path.join(path, pretrained.SPEC_FILE), "w") as f:
        f.write("{not json")
    with pytest.raises(CheckpointError, match="unreadable"):
        pretrained.load(path, SPEC)
