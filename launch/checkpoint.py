"""Orbax checkpoints of the distillation state, and the workdir's config guard.

Layout in a workdir: ``config.json`` (the config that made the run) and ``checkpoints/<step>/`` (orbax
``CheckpointManager``: the state pytree + a JSON record). A rerun of the same command restores the latest step and
continues; a rerun with a different config is refused before anything is written.
"""
from __future__ import annotations

import json
import os
from typing import Any

import jax
import orbax.checkpoint as ocp

from ddjax.errors import CheckpointError
from launch.config import differing_fields
from launch.outputs import write_json_atomic

CONFIG_FILE = "config.json"


def check_workdir(workdir: str, config_dict: dict) -> None:
    """Check that ``workdir``, if it holds a run, was made by the same config (up to resumable fields).

    Raises CheckpointError naming the differing fields. Writes nothing: :func:`record_config` does, once the run
    has set up successfully, so a run that fails early (say, missing data) does not pin a config to the workdir.
    """
    path = os.path.join(workdir, CONFIG_FILE)
    if os.path.exists(path):
        try:
            with open(path, encoding="utf-8") as f:
                saved = json.load(f)
        except (OSError, ValueError) as e:
            raise CheckpointError(f"{path} is unreadable ({e}); restore it or use a new --workdir") from None
        diff = differing_fields(saved, config_dict)
        if diff:
            shown = ", ".join(diff[:6]) + (" ..." if len(diff) > 6 else "")
            raise CheckpointError(f"workdir {workdir} holds a run made with a different config (differs in: {shown});"
                                  " rerun with the same config or choose a new --workdir")


def record_config(workdir: str, config_dict: dict) -> None:
    """Write ``config.json`` (the config that made, or extends, the run in ``workdir``)."""
    os.makedirs(workdir, exist_ok=True)
    write_json_atomic(os.path.join(workdir, CONFIG_FILE), config_dict)


class Checkpointer:
    """Thin wrapper over ``ocp.CheckpointManager`` for one state pytree plus a small JSON record."""

    def __init__(self, workdir: str, max_to_keep: int):
        self.directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
        self.manager = ocp.CheckpointManager(
            self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: Any, record: dict) -> None:
        self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                        record=ocp.args.JsonSave(record)))

    def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict]:
        """Restore ``step`` into the structure of ``abstract_state`` (from ``jax.eval_shape``, or the state itself).

        Arrays of ``abstract_state`` that carry a sharding (a concrete state's arrays, or ``ShapeDtypeStruct``s
        with one) are restored with that sharding: the checkpoint is read onto this run's mesh whatever device or
        process count saved it (orbax reads each device's slice of the saved global arrays), and in a
        multi-process run every process reads only its own part. Raises CheckpointError (one line, with the fix)
        if the files are damaged or from another structure.
        """
        abstract_state = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)), abstract_state)
        try:
            out = self.manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state), record=ocp.args.JsonRestore()))
            state = out.state
            jax.block_until_ready(state)
        except Exception as e:  # orbax raises many types (ValueError, KeyError, OSError, tensorstore errors)
            reason = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
            raise CheckpointError(f"checkpoint {os.path.join(self.directory, str(step))} cannot be restored ({reason});"
                                  f" delete that folder to resume from an earlier step, or use a new --workdir"
                                  ) from None
        return state, dict(out.record)

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
