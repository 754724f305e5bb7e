"""Distillation algorithms, each an ``(init, step)`` pair over one state pytree (see ``base``).

``get_algorithm(config, model, num_classes, image_shape, mesh=None)`` builds the one named by
``config.algorithm``; its hyper-parameters live in ``config.<algorithm name>``.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

from ddjax.algorithms import decoupled, didd, dm, dream, dtl, gradient_matching, idc, idm, iid, m3d, trajectory
from ddjax.algorithms.base import (Algorithm, DistillState, INIT_NAMES, RealPool, SyntheticSet, init_synthetic,
                                   make_real_pool, sample_per_class)
from ddjax.errors import check_choice


class Entry(NamedTuple):
    """One registered algorithm.

    make(config, model, num_classes, image_shape, mesh=None) -> Algorithm.
    default_config() -> ml_collections.ConfigDict: the ``config.<name>`` section.
    prepare(config, dataset, real, mesh, stream) -> data: what the launcher passes as ``step``'s second argument
      (expert trajectories, a teacher pool, ... loaded or made here, outside jit). None: the ``RealPool`` itself.
    eval_view(state, config) -> {"images", "labels", optional "lr"}: what the launcher evaluates (e.g. an EMA of
      the images, trained with a learned learning rate). None: ``state.synthetic``'s images and labels.
    boundary(state, config, phase_index) -> state: pure, run by a staged run (``config.domains``) at the start of
      every phase (0-based), after a fresh init when the phase is fresh, before its first step (DIDD freezes
      x̂ᵗ⁻¹ here). Must keep the state's structure, shapes and dtypes. None: identity.
    summarize(state, config) -> {name: array}: what a staged run keeps of the state at each phase end, in
      ``phases/<k>/summary.npz`` (scalars also in that phase's ``metrics.jsonl`` record), e.g. DIDD's per-sample
      ᾱ, β̄ for its Fig. 6. None: nothing.
    """
    make: Callable[..., Algorithm]
    default_config: Callable[[], Any]
    prepare: Callable[..., Any] | None = None
    eval_view: Callable[..., dict] | None = None
    boundary: Callable[..., Any] | None = None
    summarize: Callable[..., dict] | None = None


# A new algorithm registers here and adds configs/<name>_tiny.py.
REGISTRY: dict[str, Entry] = {
    "dm": Entry(make=dm.make, default_config=dm.default_config),
    "dc": Entry(make=gradient_matching.make, default_config=gradient_matching.default_config),
    "dsa": Entry(make=gradient_matching.make_dsa, default_config=gradient_matching.dsa_default_config),
    "idc": Entry(make=idc.make, default_config=idc.default_config),
    "dream": Entry(make=dream.make, default_config=dream.default_config, prepare=dream.prepare),
    "m3d": Entry(make=m3d.make, default_config=m3d.default_config),
    "idm": Entry(make=idm.make, default_config=idm.default_config),
    "iid": Entry(make=iid.make, default_config=iid.default_config, prepare=iid.prepare),
    "mtt": Entry(make=trajectory.make_mtt, default_config=trajectory.mtt_config, prepare=trajectory.prepare_mtt,
                 eval_view=lambda state, config: trajectory.eval_view(state, config.mtt)),
    "satm": Entry(make=trajectory.make_satm, default_config=trajectory.satm_config, prepare=trajectory.prepare_satm,
                  eval_view=lambda state, config: trajectory.eval_view(state, config.satm)),
    # Decoupled distillation (squeeze in prepare, recover as (init, step), relabel in eval_view).
    "sre2l": Entry(make=decoupled.make_sre2l, default_config=decoupled.sre2l_config, prepare=decoupled.prepare_sre2l,
                   eval_view=lambda state, config: decoupled.relabel_view(state, config, "sre2l")),
    "rded": Entry(make=decoupled.make_rded, default_config=decoupled.rded_config, prepare=decoupled.prepare_rded,
                  eval_view=lambda state, config: decoupled.relabel_view(state, config, "rded")),
    "dtl": Entry(make=dtl.make, default_config=dtl.default_config, prepare=dtl.prepare, eval_view=dtl.eval_view),
    "didd": Entry(make=didd.make, default_config=didd.default_config,
                  boundary=lambda state, config, phase_index: didd.boundary(
                      state, phase_index, reset_rates=bool(config.didd.get("reset_rates", False))),
                  summarize=didd.summarize),
}
ALGORITHM_NAMES = tuple(REGISTRY)


def _entry(name: str) -> Entry:
    """The registry entry of ``name``; ConfigError listing the choices if unknown."""
    return REGISTRY[check_choice("algorithm", name, ALGORITHM_NAMES)]


def get_algorithm(config, model, num_classes: int, image_shape: tuple[int, int, int], mesh=None) -> Algorithm:
    """The ``(init, step)`` pair named by ``config.algorithm``; ConfigError listing choices if unknown."""
    entry = _entry(config.algorithm)
    return entry.make(config, model, num_classes, image_shape, mesh=mesh)


def prepare_data(config, dataset, real: RealPool, mesh=None, stream=None) -> Any:
    """The pytree ``step`` takes as its second argument for ``config.algorithm`` (the ``RealPool`` by default)."""
    entry = _entry(config.algorithm)
    if entry.prepare is None:
        return real
    return entry.prepare(config, dataset, real, mesh, stream)


def eval_view(state: DistillState, config) -> dict:
    """``{"images", "labels"[, "lr"]}``: the set the launcher evaluates for ``config.algorithm``."""
    entry = _entry(config.algorithm)
    if entry.eval_view is None:
        return {"images": state.synthetic.images, "labels": state.synthetic.labels}
    return entry.eval_view(state, config)


def boundary(state: DistillState, config, phase_index: int) -> DistillState:
    """The state a staged run's phase ``phase_index`` starts from: ``Entry.boundary`` or the state unchanged."""
    entry = _entry(config.algorithm)
    return state if entry.boundary is None else entry.boundary(state, config, phase_index)


def summarize(state: DistillState, config) -> dict:
    """``Entry.summarize(state, config)`` or ``{}``: arrays a staged run keeps at each phase end."""
    entry = _entry(config.algorithm)
    return {} if entry.summarize is None else dict(entry.summarize(state, config))


def default_config(name: str):
    """Default hyper-parameters of algorithm ``name`` (the ``config.<name>`` section)."""
    return _entry(name).default_config()


__all__ = ["Entry", "REGISTRY", "prepare_data", "eval_view", "Algorithm", "DistillState", "RealPool", "SyntheticSet",
           "INIT_NAMES", "ALGORITHM_NAMES", "get_algorithm", "default_config", "init_synthetic", "make_real_pool", "sample_per_class"]
__all__ += ["boundary", "summarize"]   # the phase hooks of staged runs (launch.staged)
