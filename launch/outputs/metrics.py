"""``metrics.jsonl``: an append-only JSON-lines writer that resumes without duplicate steps, and its reader."""
from __future__ import annotations

import json
import os
from typing import Any, Mapping, TextIO

from ddjax.atomic import atomic_open
from ddjax.errors import CheckpointError
from launch.outputs.files import _json_default, to_jsonable

__all__ = ["read_metrics", "MetricsWriter"]


def _parse_metrics(text: str, path: str) -> tuple[list[dict], bool]:
    """Parse JSON lines; returns (records, last_line_was_dropped)."""
    lines = text.split("\n")
    complete = text.endswith("\n")
    if complete:
        lines = lines[:-1]
    records: list[dict] = []
    dropped = False
    for i, line in enumerate(lines):
        last = i == len(lines) - 1
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError("not an object")
        except ValueError:
            if last:  # a run killed mid-write leaves a partial final line: ignore it
                dropped = True
                continue
            raise CheckpointError(f"{path} line {i + 1} is not a JSON object; delete or repair that line")
        if last and not complete:
            # Parsed, but had no newline: keep it (it is complete JSON) and note it needs a newline.
            dropped = True
        records.append(record)
    return records, dropped


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """Read a ``metrics.jsonl`` file into a list of dicts; a missing file gives ``[]``.

    A truncated (unparseable) last line, as left by a run killed mid-write, is skipped; a corrupt line elsewhere
    raises :class:`~ddjax.errors.CheckpointError`.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return _parse_metrics(f.read(), path)[0]


class MetricsWriter:
    """Append-only ``metrics.jsonl`` writer: one JSON object per line, flushed after each line.

    ``MetricsWriter(path, resume_step=N)`` first rewrites the file (atomically) keeping only records with
    ``step <= N`` (records without a step are kept), so a run resumed from the step-``N`` checkpoint re-logs
    steps ``> N`` without duplicates. Without ``resume_step`` an existing file is appended to. Either way a
    truncated last line is removed before appending. Values are converted with :func:`to_jsonable` (numpy/jax
    scalars become ``float``/``int``); non-finite floats are written as ``NaN``/``Infinity``, which
    :func:`read_metrics` (Python's ``json``) reads back. ``tensorboard``: an optional
    :class:`~launch.outputs.tensorboard.TensorBoardWriter` that receives every record too. ``path=None``: write
    nothing (the processes other than 0 of a multi-process run).
    """

    def __init__(self, path: str | os.PathLike | None, resume_step: int | None = None, tensorboard: Any = None):
        self.path = None if path is None else os.fspath(path)
        self.tensorboard = tensorboard   # a TensorBoardWriter: every record is mirrored there (add_record)
        self._file: TextIO | None = None
        self._discard = self.path is None   # path None: a process that does not write (launch.distributed)
        if self._discard:
            return
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        if os.path.exists(self.path):
            with open(self.path, encoding="utf-8") as f:
                text = f.read()
            records, damaged = _parse_metrics(text, self.path)
            if resume_step is not None:
                kept = [r for r in records if not _after(r, resume_step)]
                rewrite = damaged or len(kept) != len(records)
            else:
                kept, rewrite = records, damaged
            if rewrite:
                with atomic_open(self.path, "w") as f:
                    for record in kept:
                        f.write(_dumps(record) + "\n")
        self._file: TextIO | None = open(self.path, "a", encoding="utf-8", newline="\n")

    def write(self, record: Mapping[str, Any] | None = None, **fields: Any) -> dict:
        """Append one record (a dict and/or keyword fields); returns the JSON-ready dict that was written."""
        merged = {**(dict(record) if record is not None else {}), **fields}
        clean = to_jsonable(merged)
        if self._discard:
            return clean
        if self._file is None:
            raise ValueError(f"MetricsWriter for {self.path} is closed")
        self._file.write(_dumps(clean) + "\n")
        self._file.flush()
        if self.tensorboard is not None:
            self.tensorboard.add_record(clean)
        return clean

    __call__ = write

    def close(self) -> None:
        """Close the file (idempotent)."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> "MetricsWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _after(record: Mapping[str, Any], step: int) -> bool:
    try:
        return "step" in record and float(record["step"]) > step
    except (TypeError, ValueError):
        return False


def _dumps(record: Any) -> str:
    return json.dumps(record, default=_json_default, separators=(", ", ": "))
