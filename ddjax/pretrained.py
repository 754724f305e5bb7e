"""A small on-disk store for networks trained once and reused by many runs (teacher pools, expert trajectories).

Each entry is one pytree of arrays saved with orbax, plus ``spec.json``: the JSON dict of everything that determines
the networks (dataset, model fields, epochs, learning rate, seed, ...). The entry's folder name is derived from the
spec, so a run asking for the same spec finds it, and a run asking for another spec never picks up the wrong
networks::

    <root>/<kind>/<spec['dataset']>-<sha1(spec)[:12]>/{tree/, spec.json}

``root`` defaults to ``$DDJAX_CACHE_DIR/pretrained`` or ``~/.cache/ddjax/pretrained``. Writes are atomic (a
temporary folder renamed into place), so an interrupted training never leaves a half-written entry behind.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from typing import Any, Callable, TextIO

import jax
import numpy as np
import orbax.checkpoint as ocp

from ddjax.atomic import atomic_directory
from ddjax.errors import CheckpointError, DataNotFoundError

SPEC_FILE = "spec.json"
TREE_DIR = "tree"


def default_root() -> str:
    """``$DDJAX_CACHE_DIR/pretrained`` when set, else ``~/.cache/ddjax/pretrained``."""
    base = os.environ.get("DDJAX_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "ddjax")
    return os.path.join(base, "pretrained")


def _canonical(spec: dict) -> str:
    try:
        return json.dumps(spec, sort_keys=True, separators=(",", ":"))
    except TypeError as e:
        raise TypeError(f"a pretrained-store spec must be JSON-serialisable: {e}") from None


def entry_path(kind: str, spec: dict, root: str | None = None) -> str:
    """The folder holding the entry of ``kind`` (e.g. ``"experts"``, ``"teachers"``) for ``spec``."""
    digest = hashlib.sha1(_canonical(spec).encode()).hexdigest()[:12]
    name = f"{spec.get('dataset', 'data')}-{digest}"
    return os.path.join(os.path.abspath(root or default_root()), kind, name)


def exists(path: str) -> bool:
    """Whether ``path`` holds a complete entry."""
    return os.path.isfile(os.path.join(path, SPEC_FILE)) and os.path.isdir(os.path.join(path, TREE_DIR))


def save(path: str, tree: Any, spec: dict) -> None:
    """Store ``tree`` (a pytree of arrays) and ``spec`` at ``path`` atomically; an existing entry is replaced."""
    spec_text = _canonical(spec)
    with atomic_directory(path) as tmp:
        checkpointer = ocp.StandardCheckpointer()
        checkpointer.save(os.path.join(tmp, TREE_DIR), jax.tree.map(np.asarray, tree))
        checkpointer.wait_until_finished()
        checkpointer.close()
        with open(os.path.join(tmp, SPEC_FILE), "w", encoding="utf-8") as f:
            f.write(spec_text)


def read_spec(path: str) -> dict:
    """The spec stored with the entry at ``path``."""
    with open(os.path.join(path, SPEC_FILE), encoding="utf-8") as f:
        return json.load(f)


def load(path: str, spec: dict | None = None, target: Any = None) -> Any:
    """The pytree stored at ``path`` (numpy leaves), optionally checked against ``spec`` and ``target``'s structure.

    Raises DataNotFoundError when there is no entry, CheckpointError when it is unreadable or made for another spec.
    """
    if not exists(path):
        raise DataNotFoundError(f"no stored networks at {path}")
    try:
        stored_spec = read_spec(path)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{os.path.join(path, SPEC_FILE)} is unreadable ({e}); delete {path} and remake it"
                              ) from None
    if spec is not None and json.loads(_canonical(spec)) != stored_spec:
        diff = sorted(k for k in set(spec) | set(stored_spec) if spec.get(k) != stored_spec.get(k))
        raise CheckpointError(f"networks at {path} were made with a different spec (differs in: {', '.join(diff)}); "
                              "delete that folder or point to the right one")
    try:
        checkpointer = ocp.StandardCheckpointer()
        abstract = None if target is None else jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype if not hasattr(x, "dtype") else x.dtype),
            target)
        tree = checkpointer.restore(os.path.join(path, TREE_DIR), abstract)
        checkpointer.close()
    except Exception as e:  # orbax raises many types (ValueError, KeyError, OSError, tensorstore errors)
        reason = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
        raise CheckpointError(f"stored networks at {path} cannot be read ({reason}); delete that folder and remake "
                              "them") from None
    return jax.tree.map(np.asarray, tree)


def load_or_make(kind: str, spec: dict, make: Callable[[], Any], *, root: str | None = None, allow_make: bool = True,
                 how_to_make: str = "", stream: TextIO | None = None) -> tuple[Any, str]:
    """Load the ``kind`` entry for ``spec``; if it is missing, ``make()`` and store it (when ``allow_make``).

    Returns ``(tree, path)``. When the entry is missing and ``allow_make`` is False, raises DataNotFoundError naming
    the folder and ``how_to_make`` (the command that makes it).
    """
    path = entry_path(kind, spec, root)
    if exists(path):
        return load(path, spec), path
    if not allow_make:
        hint = f"; make them with `{how_to_make}`" if how_to_make else ""
        raise DataNotFoundError(f"no {kind} for this config at {path}{hint}, or set --config.make_pretrained=True "
                                "to make them on the fly")
    stream = sys.stderr if stream is None else stream
    print(f"making {kind} (stored in {path}) ...", file=stream, flush=True)
    started = time.perf_counter()
    tree = jax.tree.map(np.asarray, make())
    save(path, tree, spec)
    print(f"made {kind} in {time.perf_counter() - started:.1f} s", file=stream, flush=True)
    return tree, path
