"""Evaluate a distilled set on another architecture: the DD literature's cross-architecture table.

Shared by the run itself (``config.eval.architectures``: the table comes out of the run) and by
``python -m launch.evaluate`` (any saved set, later). Both derive the evaluation key from the run's seed and the
architecture's name (:func:`architecture_key`), so the two give the same accuracies for the same set.

Output: ``<workdir>/eval_<NAME>.json`` = ``{"mean", "std", "per_seed"}`` (as in ``results.json``) plus
``architecture``, ``num_seeds``, ``epochs``, ``protocol`` and ``synthetic`` (the set's path).
"""
from __future__ import annotations

import json
import os
import zlib
from typing import Any

import jax
import ml_collections
import numpy as np

from ddjax import data, models
from ddjax.errors import CheckpointError, ConfigError
from launch import outputs


def architecture_key(seed: int, name: str) -> jax.Array:
    """The evaluation key of architecture ``name`` for a run with ``seed``: ``fold_in(PRNGKey(seed), crc32(name))``
    (case-insensitive name), the same in the run and in ``launch.evaluate``."""
    return jax.random.fold_in(jax.random.PRNGKey(seed), zlib.crc32(name.strip().lower().encode()) & 0x7FFFFFFF)


def eval_path(folder: str, name: str) -> str:
    """``<folder>/eval_<NAME>.json`` (the name as given, e.g. ``eval_AlexNet.json``)."""
    return os.path.join(folder, f"eval_{name.strip()}.json")


def evaluate_architecture(name: str, config: ml_collections.ConfigDict, dataset: data.Dataset, images: Any,
                          labels: Any, lr: float | None = None, seed: int | None = None) -> dict:
    """Train ``config.eval.num_seeds`` fresh ``name`` networks on the set with the run's evaluation protocol and
    return ``{"mean", "std", "per_seed", "architecture", "num_seeds", "epochs", "protocol"}`` (test accuracies).

    ``lr``: the set's learned training lr (MTT/SATM), used when ``config.eval.learned_lr``; ``seed``: the
    run's ``config.seed`` by default. A set whose shape does not fit the dataset or the network: ConfigError."""
    from launch.run import evaluate_set   # noqa: PLC0415  (launch.run imports this module)

    images = np.asarray(images, np.float32)
    if images.ndim != 4 or images.shape[1:] != dataset.test_images.shape[1:]:
        raise ConfigError(f"the synthetic images have shape {images.shape[1:]} but {dataset.name}'s test images "
                          f"{dataset.test_images.shape[1:]}; evaluate a set with the run that made it")
    model = models.build_architecture(name, dataset.num_classes)
    jax.eval_shape(lambda: models.init_model(model, jax.random.PRNGKey(0), dataset.image_shape))  # shape errors now
    key = architecture_key(config.seed if seed is None else seed, name)
    result = evaluate_set(key, config, model, images, np.asarray(labels), dataset, lr=lr).to_dict()
    return {**result, "architecture": name, "num_seeds": config.eval.num_seeds, "epochs": config.eval.epochs,
            "protocol": config.eval.protocol}


def write_evaluation(folder: str, name: str, result: dict, synthetic_path: str) -> str:
    """Write ``eval_<NAME>.json`` atomically in ``folder``; returns its path."""
    path = eval_path(folder, name)
    outputs.write_json_atomic(path, {**result, "synthetic": os.path.abspath(synthetic_path)})
    return path


def load_run_config(workdir: str) -> ml_collections.ConfigDict:
    """The config that made the run in ``workdir`` (its ``config.json``); one-line CheckpointError if missing."""
    path = os.path.join(workdir, "config.json")
    if not os.path.isdir(workdir):
        raise CheckpointError(f"workdir {workdir} does not exist; pass the --workdir of a finished run")
    try:
        with open(path, encoding="utf-8") as f:
            return ml_collections.ConfigDict(json.load(f))
    except FileNotFoundError:
        raise CheckpointError(f"{workdir} holds no config.json (not a ddjax run); pass the --workdir of a "
                              "finished run") from None
    except ValueError as e:
        raise CheckpointError(f"{path} is unreadable ({e}); restore it from the run") from None


def load_set(path: str) -> tuple[np.ndarray, np.ndarray, float | None, dict | None]:
    """``(images, labels, learned lr or None, the run's config dict or None)`` from a ``synthetic.npz``
    (:func:`ddjax.load_synthetic`: one-line DataNotFoundError / ConfigError when unusable)."""
    from ddjax.data import load_synthetic   # noqa: PLC0415

    saved = load_synthetic(path)
    lr = None if saved.lr is None or np.size(saved.lr) != 1 else float(np.asarray(saved.lr).reshape(()))
    return saved.images, saved.labels, lr, saved.config
