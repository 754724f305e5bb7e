"""Atomic output files: JSON (numpy/jax values converted), ``.npz`` and the self-describing ``synthetic.npz``.

Every file goes through :func:`ddjax.atomic.atomic_open` (temp file, fsync, ``os.replace``): a crash never leaves a
half-written file behind.
"""
from __future__ import annotations

import json
import os
from typing import Any, Mapping

import numpy as np

from ddjax.atomic import atomic_open

__all__ = ["to_jsonable", "write_json_atomic", "save_npz_atomic", "save_synthetic"]


def to_jsonable(value: Any) -> Any:
    """Convert numpy/jax scalars and arrays (recursively inside dicts/lists/tuples) to plain JSON types.

    Integer scalars become ``int``, floating scalars ``float`` (via ``float()``), booleans ``bool``, arrays
    nested lists. Other objects are returned unchanged (``json`` then decides).
    """
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if hasattr(value, "__array__") and hasattr(value, "shape"):  # np.ndarray, jax.Array
        arr = np.asarray(value)
        if arr.shape == ():
            item = arr.item()
            if arr.dtype.kind == "f":
                return float(item)
            return item
        return to_jsonable(arr.tolist())
    return value


def _json_default(value: Any) -> Any:
    converted = to_jsonable(value)
    if converted is value:
        raise TypeError(f"object of type {type(value).__name__} is not JSON serializable")
    return converted


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as JSON (indent 2, sorted keys, trailing newline) atomically; numpy/jax values converted."""
    text = json.dumps(to_jsonable(obj), indent=2, sort_keys=True, default=_json_default) + "\n"
    with atomic_open(path, "w") as f:
        f.write(text)


def save_npz_atomic(path: str | os.PathLike, **arrays: Any) -> None:
    """Save ``arrays`` (name -> array-like, jax arrays included) to an uncompressed ``.npz`` atomically.

    The file is written exactly at ``path`` (no ``.npz`` suffix is appended). Read back with ``np.load(path)``.
    """
    np_arrays = {name: np.asarray(value) for name, value in arrays.items()}
    with atomic_open(path, "wb") as f:
        np.savez(f, **np_arrays)


def save_synthetic(path: str | os.PathLike, images: Any, labels: Any, **metadata: Any) -> None:
    """Write a self-describing ``synthetic.npz`` atomically: :func:`ddjax.data.synthetic_arrays` ``(images, labels,
    pixels=, mean=, std=, zca=, class_names=, dataset=, config=, lr=None)``; read back with
    ``ddjax.load_synthetic(path)``."""
    from ddjax.data.synthetic import synthetic_arrays

    save_npz_atomic(path, **synthetic_arrays(images, labels, **metadata))
