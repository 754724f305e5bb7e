"""The methods DIDD's Table 1 compares, as edits of one stream config (shared by ``configs/didd_*.py``).

``method`` is a DIDD mode (``config.didd.mode``: ``bilevel`` the proposed update, ``finetune``, ``stable``,
``linear``, and the pixel-space continual-learning baselines ``lwf``, ``ewc``, ``mas``, ``lf``), or
``<plan>_<algorithm>`` for the conventional-distillation baselines run by the staged launcher's plans:
``joint_m3d``, ``gather_m3d``, ``joint_dsa``, ``gather_dsa``, ``joint_dc``, ``gather_dc`` (same per-phase step
budget, same network, same IPC; Gather's budget is T·|x̂|, as in the paper).
"""
from __future__ import annotations

import ml_collections

from ddjax import algorithms
from ddjax.algorithms import didd
from ddjax.errors import ConfigError, check_choice

PLAN_METHODS = tuple(f"{plan}_{name}" for plan in ("joint", "gather") for name in ("m3d", "dsa", "dc"))
METHODS = didd.MODES + PLAN_METHODS

__all__ = ["METHODS", "PLAN_METHODS", "parse_options", "apply_method"]


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


def apply_method(config: ml_collections.ConfigDict, method: str, lr_img_other: float | None = None
                 ) -> ml_collections.ConfigDict:
    """Set ``config`` (a DIDD stream config) to run ``method``; returns it.

    A DIDD mode only sets ``config.didd.mode``. A plan method switches ``config.algorithm`` and
    ``config.domains.plan``, adds the algorithm's default section, and copies the DIDD real batch (M3D) and, when
    given, ``lr_img_other`` as that algorithm's image learning rate.
    """
    check_choice("method", method, METHODS)
    if method in didd.MODES:
        config.didd.mode = method
        return config
    plan, name = method.split("_")
    if not config.get("domains"):
        raise ConfigError("apply_method needs a config with a 'domains' section (launch.config.base_config)")
    config.algorithm = name
    config[name] = algorithms.default_config(name)
    config.domains.plan = plan
    if name == "m3d":
        config.m3d.batch_real = config.didd.batch_real
    if lr_img_other is not None:
        config[name].lr_img = float(lr_img_other)
    return config
