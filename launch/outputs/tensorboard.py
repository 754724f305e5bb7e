"""TensorBoard event files (``W/tensorboard/``) written with tensorboardX: no TensorFlow, no PyTorch.

:class:`TensorBoardWriter` mirrors every ``metrics.jsonl`` record as scalars (``train/<name>`` for loss terms,
``eval/<name>`` for accuracies, ``time/seconds``) and adds the synthetic image grid (``images/synthetic``) at each
evaluation. ``tensorboard --logdir W/tensorboard`` shows them.

Resume without duplicates: ``TensorBoardWriter(logdir, resume_step=N)`` first rewrites (atomically) the existing event
files keeping only the events of steps ``<= N`` (what the step-``N`` checkpoint had produced), then appends in a new
event file; a ``(tag, step)`` pair already on disk is never written twice (the final evaluation of a finished run
that is run again, for instance). ``resume_step=0`` starts from an empty log.

Event files are TFRecord files: per record ``uint64 length``, ``uint32 masked CRC of the length``, ``length`` bytes
of an ``Event`` protobuf, ``uint32 masked CRC of the data``; :func:`read_events` parses them with the protobuf
classes that ship with tensorboardX.
"""
from __future__ import annotations

import glob
import math
import os
import struct
import sys
import time
from typing import Any, Iterator, Mapping, TextIO

import numpy as np

from ddjax.atomic import atomic_open

__all__ = ["TensorBoardWriter", "event_files", "read_events", "scalar_tag"]

EVENT_GLOB = "events.out.tfevents.*"


def scalar_tag(name: str) -> str:
    """TensorBoard tag of a ``metrics.jsonl`` field: ``eval/`` for accuracies (``*acc*``, ``eval_lr``), ``time/``
    for ``seconds``, ``train/`` for everything else (the loss and its terms)."""
    if "acc" in name or name.startswith("eval_"):
        return f"eval/{name}"
    if name == "seconds":
        return "time/seconds"
    return f"train/{name}"


def event_files(logdir: str) -> list[str]:
    """Event files in ``logdir``, oldest first (their names start with the creation time)."""
    return sorted(glob.glob(os.path.join(logdir, EVENT_GLOB)))


def _records(path: str) -> Iterator[tuple[bytes, bytes]]:
    """(raw record bytes, event payload) of each complete TFRecord in ``path``; a truncated tail is skipped."""
    with open(path, "rb") as f:
        buf = f.read()
    pos = 0
    while pos + 12 <= len(buf):
        (length,) = struct.unpack_from("<Q", buf, pos)
        end = pos + 12 + length + 4
        if end > len(buf):
            break   # a record cut short by a crash: dropped
        yield buf[pos:end], buf[pos + 12:pos + 12 + length]
        pos = end


def read_events(logdir_or_file: str) -> list[Any]:
    """Every ``Event`` protobuf (``tensorboardX.proto.event_pb2.Event``) in an event file or a log folder."""
    from tensorboardX.proto import event_pb2

    paths = event_files(logdir_or_file) if os.path.isdir(logdir_or_file) else [logdir_or_file]
    return [event_pb2.Event.FromString(data) for path in paths for _, data in _records(path)]


class TensorBoardWriter:
    """Scalars and image grids of a run as TensorBoard event files; see the module docstring.

    If tensorboardX is not installed, one warning line is printed to ``stream`` and every call is a no-op.
    """

    def __init__(self, logdir: str | None, resume_step: int | None = None, stream: TextIO | None = None):
        self.logdir = None if logdir is None else os.fspath(logdir)
        self._seen: set[tuple[str, int]] = set()
        self._writer = None
        if self.logdir is None:   # a process that does not write (launch.distributed): every call is a no-op
            return
        try:
            from tensorboardX import SummaryWriter
        except ImportError:
            print("warning: tensorboardX is not installed, no TensorBoard files are written "
                  "(pip install tensorboardX)", file=sys.stderr if stream is None else stream)
            return
        os.makedirs(self.logdir, exist_ok=True)
        self._prune(resume_step)
        # tensorboardX names files events.out.tfevents.<seconds>.<host>: a suffix keeps two writers of the same
        # second (a quick resume) from truncating each other's file
        self._writer = SummaryWriter(logdir=self.logdir, flush_secs=10, filename_suffix=f".{time.time_ns()}")

    def _prune(self, resume_step: int | None) -> None:
        """Keep the events of steps ``<= resume_step`` (all when None) and remember their (tag, step) pairs."""
        from tensorboardX.proto import event_pb2

        for path in event_files(self.logdir):
            kept, dropped = [], False
            for raw, data in _records(path):
                event = event_pb2.Event.FromString(data)
                tags = [v.tag for v in event.summary.value]
                if tags and resume_step is not None and event.step > resume_step:
                    dropped = True
                    continue
                kept.append(raw)
                self._seen.update((tag, int(event.step)) for tag in tags)
            if not any(event_pb2.Event.FromString(r[12:-4]).summary.value for r in kept):
                os.remove(path)   # nothing but a file-version header left
            elif dropped:
                with atomic_open(path, "wb") as f:
                    f.write(b"".join(kept))

    @property
    def enabled(self) -> bool:
        return self._writer is not None

    def _new(self, tag: str, step: int) -> bool:
        if self._writer is None or (tag, step) in self._seen:
            return False
        self._seen.add((tag, step))
        return True

    def add_record(self, record: Mapping[str, Any]) -> None:
        """Every finite-or-not numeric scalar field of a ``metrics.jsonl`` record (with a ``step``) as a scalar."""
        if self._writer is None or "step" not in record:
            return
        step = int(record["step"])
        for name, value in record.items():
            if name == "step" or isinstance(value, (bool, str)) or value is None:
                continue
            arr = np.asarray(value)
            if arr.size != 1 or arr.dtype.kind not in "fiu":
                continue   # lists (per-seed accuracies, staged phase records) are in metrics.jsonl only
            tag = scalar_tag(name)
            if self._new(tag, step):
                v = float(arr.reshape(()))
                self._writer.add_scalar(tag, v if math.isfinite(v) else float("nan"), step)

    def add_image_file(self, tag: str, png_path: str, step: int) -> None:
        """The PNG at ``png_path`` (e.g. the synthetic image grid) as image ``tag`` at ``step``."""
        if not self._new(tag, int(step)):
            return
        from PIL import Image

        with Image.open(png_path) as img:
            pixels = np.asarray(img.convert("RGB"), dtype=np.uint8)
        self._writer.add_image(tag, pixels, int(step), dataformats="HWC")

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        """Flush and close (idempotent)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> "TensorBoardWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
