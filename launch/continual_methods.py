"""The methods DIDD's Table 1 compares, as edits of one stream config (shared by ``configs/didd_*.py``).

``method`` is a DIDD mode (``config.didd.mode``: ``bilevel`` the proposed update, ``finetune``, ``stable``,
``linear``, and the pixel-space continual-learning baselines ``lwf``, ``ewc``, ``mas``, ``lf``), or
``<plan>_<algorithm>`` for the conventional-distillation baselines run by the staged launcher's plans:
``joint_m3d``, ``gather_m3d``, ``joint_dsa``, ``gather_dsa``, ``joint_dc``, ``gather_dc`` (same per-phase step
budget, same network, same IPC; Gather's budget is T·|x̂|, as in the paper), or ``whole_data`` (the "Whole data"
row: plan ``whole``, the evaluation networks train on the real train splits of the domains seen so far; nothing is
distilled, budget Σ_t |D_t|).
"""
from __future__ import annotations

import os

import ml_collections
import numpy as np

from ddjax import algorithms
from ddjax.algorithms import didd, gradient_matching
from ddjax.errors import ConfigError, check_choice
from launch import outputs

# λ (config.didd.penalty_weight) of the pixel-space baselines, picked by A^T on didd_tiny's stream (seed 0, λ over
# 1e-3 .. 1; docs/results.md, "DIDD", λ sweep): larger λ over-stabilise (the set stays on domains 1-2), smaller ones
# are Finetune. LwF keeps 1: its A^T is flat (0.703-0.706) over λ in 1e-2 .. 100 (docs/results.md, LwF λ sweep).
# LF keeps 1 (not swept). Not re-swept at other scales; --config.didd.penalty_weight overrides.
PENALTY_WEIGHTS = {"ewc": 1e-3, "mas": 1e-2, "lwf": 1.0, "lf": 1.0}
PLAN_METHODS = tuple(f"{plan}_{name}" for plan in ("joint", "gather") for name in ("m3d", "dsa", "dc"))
WHOLE_DATA = "whole_data"
METHODS = didd.MODES + PLAN_METHODS + (WHOLE_DATA,)
# Epochs of the "Whole data" networks, for R-MNIST-sized domains (60,000 images): the paper gives none (its 1,000
# epochs are for sets of 10·IPC images per domain). Sweep on R-FMNIST at the CPU scale (docs/results.md, "the
# Whole-data row"): 1 epoch A^T 0.858, 2 epochs 0.872. didd_tiny (1,438 images a domain) passes 100, didd_pacs 40.
WHOLE_DATA_EPOCHS = 2

__all__ = ["METHODS", "PLAN_METHODS", "WHOLE_DATA", "WHOLE_DATA_EPOCHS", "PENALTY_WEIGHTS", "parse_options",
           "paper_settings", "apply_method", "save_summary_images"]


def parse_options(arg: str, **defaults) -> dict:
    """``"key=value,key=value"`` (a config file's ``:ARG``) over ``defaults``; values keep the default's type."""
    options = dict(defaults)
    for item in filter(None, (arg or "").split(",")):
        key, sep, value = item.partition("=")
        if not sep or key not in defaults:
            raise ConfigError(f"config option {item!r} is not key=value with key in {sorted(defaults)}; "
                              "e.g. --config=configs/didd_tiny.py:method=finetune,seed=1")
        options[key] = type(defaults[key])(value)
    return options


def paper_settings(config: ml_collections.ConfigDict, ipc: int, batch_real: int = 128) -> ml_collections.ConfigDict:
    """The paper's Table 6 and §5.1.2 on a DIDD config: images resized to 32×32 ("for all datasets"), 3,000 steps
    per domain, ``batch_real`` real images per class (PACS: 64), η_x = IPC, ConvNet-3 w128, colour + crop + cutout;
    evaluation 1,000 epochs, SGD 1e-2, batch 64, 3 networks, after every domain. (η_α, η_β, λ_α, λ_β and the bounds
    are ``config.didd``'s defaults.)"""
    config.ipc = ipc
    config.domains.image_size = 32         # §5.1.2: "For all datasets, images are resized to 32×32" (MNIST is 28)
    config.steps = 3000                    # per domain
    config.log_every = 50
    config.checkpoint_every = 500
    config.model.width = 128
    config.model.depth = 3
    config.dsa_strategy = "color_crop_cutout"
    config.didd.lr_img = float(ipc)       # η_x = IPC
    config.didd.batch_real = batch_real
    config.eval.every = 0                  # the staged launcher evaluates at the end of every domain
    config.eval.num_seeds = 3
    config.eval.epochs = 1000
    config.eval.lr = 0.01
    config.eval.batch_size = 64
    config.eval.random_real = False
    return config


def apply_method(config: ml_collections.ConfigDict, method: str, lr_img_other: float | None = None,
                 whole_data_epochs: int = WHOLE_DATA_EPOCHS) -> ml_collections.ConfigDict:
    """Set ``config`` (a DIDD stream config) to run ``method``; returns it.

    A DIDD mode sets ``config.didd.mode`` (and, for a pixel-space baseline, its λ from :data:`PENALTY_WEIGHTS`).
    A plan method switches ``config.algorithm`` and ``config.domains.plan`` and adds the algorithm's default section;
    M3D takes DIDD's real batch, multi-formation factor and image learning rate (``lr_img_other`` when given, else
    ``config.didd.lr_img``); DC/DSA keep their reference values. ``whole_data`` sets plan ``whole`` and ``config.eval.epochs`` to
    ``whole_data_epochs`` (the other evaluation settings stay the config's); ``config.steps`` then only numbers
    the phases.
    """
    check_choice("method", method, METHODS)
    if method in didd.MODES:
        config.didd.mode = method
        if method in PENALTY_WEIGHTS:
            config.didd.penalty_weight = PENALTY_WEIGHTS[method]
        return config
    if not config.get("domains"):
        raise ConfigError("apply_method needs a config with a 'domains' section (launch.config.base_config)")
    if method == WHOLE_DATA:
        config.domains.plan = "whole"
        config.eval.epochs = int(whole_data_epochs)
        return config
    plan, name = method.split("_")
    config.algorithm = name
    config[name] = algorithms.default_config(name)
    config.domains.plan = plan
    if name == "m3d":  # M3D is DIDD's base: same real batch, image learning rate and multi-formation factor
        config.m3d.batch_real = config.didd.batch_real
        config.m3d.factor = int(config.didd.factor)
        config.m3d.lr_img = float(lr_img_other if lr_img_other is not None else config.didd.lr_img)
    if name in ("dc", "dsa") and config.ipc not in gradient_matching.DC_LOOPS:
        # DC's schedule is given for IPC 1, 10, 20, ...; other IPCs take IPC 10's (10 rounds, 50 network epochs).
        config[name].outer_loop, config[name].inner_loop = gradient_matching.DC_LOOPS[10]
    return config


def save_summary_images(workdir: str, num_phases: int, to_pixels, num_classes: int, class_names=None) -> list[str]:
    """Pictures of the per-class images an algorithm's ``summarize`` hook keeps at each phase end: for every key of
    ``phases/<k>/summary.npz`` holding ``(num_classes, H, W, C)`` images, ``<key>.png`` in ``workdir`` with one row
    per class and one column per phase. DIDD's ``focus_stability`` / ``focus_plasticity`` give the paper's Fig. 6
    (the stored image of each class with the largest / smallest ᾱ − β̄ after each domain). Returns the paths."""
    summaries = []
    for k in range(num_phases):
        path = os.path.join(workdir, "phases", str(k), "summary.npz")
        if not os.path.exists(path):
            return []
        with np.load(path) as z:
            summaries.append({name: z[name] for name in z.files})
    keys = [name for name, v in summaries[0].items()
            if v.ndim == 4 and v.shape[0] == num_classes and v.shape[-1] in (1, 3)]
    paths = []
    for name in keys:
        images = np.concatenate([s[name] for s in summaries])                  # (phases·K, H, W, C)
        labels = np.tile(np.arange(num_classes), num_phases)
        order = np.argsort(labels, kind="stable")                                 # class rows, phase columns
        path = os.path.join(workdir, f"{name}.png")
        outputs.save_image_grid(path, to_pixels(images[order]), labels[order], num_classes, class_names)
        paths.append(path)
    return paths
