"""The one atomic-write helper: files and folders appear complete or not at all.

A file is written to a temporary file in its destination folder, flushed and fsynced, then moved onto its name with
:func:`os.replace` (atomic on POSIX within one filesystem); a folder is filled under a temporary name beside its
destination and renamed the same way. On an exception the temporary is removed and the destination is untouched.
Used by the launcher's outputs (:mod:`launch.outputs`), the tfds array cache (:mod:`ddjax.data.tfds_sources`), the
pretrained store (:mod:`ddjax.pretrained`) and the exporter (:mod:`launch.export`).
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from typing import Any, Iterator

__all__ = ["atomic_open", "atomic_directory"]


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[Any]:
    """Open a temp file beside ``path``; on clean exit fsync it and ``os.replace`` it onto ``path``.

    ``mode`` is ``"wb"`` or ``"w"`` (UTF-8, ``\\n`` newlines). Parent directories are created. On an exception the
    temp file is deleted, ``path`` is left as it was, and the exception propagates.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        kwargs = {} if "b" in mode else {"encoding": "utf-8", "newline": "\n"}
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike, *, replace: bool = True) -> Iterator[str]:
    """Yield an empty temp folder beside ``path``; on clean exit it becomes ``path``.

    ``replace=True``: an existing ``path`` is removed first (e.g. a pretrained entry made again).
    ``replace=False``: ``path`` may only be missing or an empty folder (``FileExistsError`` otherwise, raised
    before anything is moved). On an exception the temp folder is removed and ``path`` is untouched.
    """
    path = os.path.abspath(os.fspath(path))
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.tmp-", dir=parent)
    try:
        yield tmp
        if os.path.lexists(path):
            if not replace and not (os.path.isdir(path) and not os.listdir(path)):
                raise FileExistsError(f"{path} exists and is not an empty folder")
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.unlink(path)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
