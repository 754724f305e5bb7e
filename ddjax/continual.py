"""Staged runs over a domain collection: the phase plans and the continual-learning metrics (pure numpy).

A staged run is a sequence of :class:`Phase` s (:func:`make_plan`); the launcher (:mod:`launch.staged`) trains each
phase on its domains' train splits and, at its end, evaluates the set on its domains' test splits. The accuracy
matrix ``a[k, t]`` (0-based) is the accuracy on domain ``t``'s test split of networks trained on the set after
phase ``k`` (DIDD's :math:`a_{t+1}^{k+1}`), from which :func:`average_accuracy` (eq. 18),
:func:`average_forgetting` (eq. 19), :func:`accuracy_curve` (Fig. 5) and :func:`segment_accuracy` (Table 3).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ddjax.errors import ConfigError, check_choice

__all__ = ["PLAN_NAMES", "Phase", "make_plan", "average_accuracy", "average_forgetting", "accuracy_curve",
           "segment_accuracy"]

PLAN_NAMES = ("stream", "joint", "gather", "leave_one_out", "whole")


class Phase(NamedTuple):
    """One stage of a staged run (domain indices are stream positions, 0-based).

    train: domains whose train split the phase learns from (``Entry.prepare`` gets their union).
    evaluate: domains whose test split is scored at the phase's end.
    fresh: start from a new synthetic set and algorithm state made from this phase's data (else keep the state,
      then call the algorithm's ``boundary`` hook).
    eval_sets: phases whose final sets, concatenated in this order, are what is evaluated (gather: every phase
      so far; otherwise this phase alone; empty for a ``real`` phase).
    real: nothing is distilled: the evaluation networks train on the real train split of ``train`` (the "whole
      data" baseline). Its storage budget is those images, not a synthetic set.
    """
    train: tuple[int, ...]
    evaluate: tuple[int, ...]
    fresh: bool
    eval_sets: tuple[int, ...]
    real: bool = False


def make_plan(name: str, num_domains: int) -> tuple[Phase, ...]:
    """The phases of plan ``name`` over ``num_domains`` domains ``D_0 .. D_{T-1}``.

    * ``stream``: phase k learns from ``D_k`` only, keeping the state (DIDD, Finetune); scored on every domain.
    * ``joint``: phase k distils a new set from ``D_0 ∪ … ∪ D_k`` (DIDD's Joint baseline); scored on every domain.
    * ``gather``: phase k distils a new set from ``D_k``; the union of phases 0..k's sets (budget (k+1)·|x̂|) is
      scored on every domain (DIDD's Distill-Gather).
    * ``leave_one_out``: phase k distils a new set from every domain but ``D_k`` and is scored on ``D_k`` only
      (domain generalisation, DomainBed's protocol).
    * ``whole``: nothing is distilled; phase k trains the evaluation networks on the real train splits of
      ``D_0 ∪ … ∪ D_k`` and scores them on every domain (DIDD's "Whole data" row, budget Σ_t |D_t|; its last row
      is the paper's number, a model trained on every domain's data).

    Raises ConfigError for an unknown plan or fewer than 2 domains (a stream of one domain is a plain run).
    """
    check_choice("domains.plan", name, PLAN_NAMES)
    if isinstance(num_domains, bool) or int(num_domains) < 2:
        raise ConfigError(f"plan {name!r} needs at least 2 domains, got {num_domains}; a single domain is a plain "
                          "run (set --config.domains.source='') or choose more with --config.domains.num_domains")
    t = int(num_domains)
    every = tuple(range(t))
    if name == "stream":
        return tuple(Phase((k,), every, k == 0, (k,)) for k in range(t))
    if name == "joint":
        return tuple(Phase(tuple(range(k + 1)), every, True, (k,)) for k in range(t))
    if name == "gather":
        return tuple(Phase((k,), every, True, tuple(range(k + 1))) for k in range(t))
    if name == "whole":
        return tuple(Phase(tuple(range(k + 1)), every, True, (), real=True) for k in range(t))
    return tuple(Phase(tuple(i for i in every if i != k), (k,), True, (k,)) for k in range(t))


def _matrix(accuracy_matrix) -> np.ndarray:
    a = np.asarray(accuracy_matrix, np.float64)
    if a.ndim != 2 or a.shape[0] < 1 or a.shape[0] > a.shape[1]:
        raise ConfigError(f"accuracy matrix must be (phases, domains) with phases <= domains, got shape {a.shape}")
    return a


def average_accuracy(accuracy_matrix, phase: int | None = None) -> float:
    r"""DIDD eq. 18: :math:`\mathcal{A}^T = \frac1T\sum_{t=1}^T a_t^T` with ``T = phase`` (default: every row).

    ``accuracy_matrix[k - 1, t - 1]`` = :math:`a_t^k`.
    """
    a = _matrix(accuracy_matrix)
    big_t = a.shape[0] if phase is None else int(phase)
    return float(np.mean(a[big_t - 1, :big_t]))


def average_forgetting(accuracy_matrix, phase: int | None = None) -> float:
    r"""DIDD eq. 19: :math:`\mathcal{F}^T = \frac{1}{T-1}\sum_{t=1}^{T-1}\big(\max_{1\le k<T} a_t^k - a_t^T\big)`.

    As written in the paper the max runs over every earlier phase ``k < T``, including phases before domain
    ``t`` arrived. NaN for ``T = 1`` (nothing to forget).
    """
    a = _matrix(accuracy_matrix)
    big_t = a.shape[0] if phase is None else int(phase)
    if big_t < 2:
        return float("nan")
    best = a[:big_t - 1, :big_t - 1].max(axis=0)
    return float(np.mean(best - a[big_t - 1, :big_t - 1]))


def accuracy_curve(accuracy_matrix) -> np.ndarray:
    r""":math:`\mathcal{A}^t` for ``t = 1 .. rows`` (DIDD Fig. 5), float64."""
    a = _matrix(accuracy_matrix)
    return np.asarray([average_accuracy(a, t) for t in range(1, a.shape[0] + 1)])


def segment_accuracy(accuracy_matrix, first: int, last: int, phase: int | None = None) -> float:
    r"""DIDD Table 3: :math:`\mathcal{A}^T_{i:j} = \frac{1}{j-i+1}\sum_{t=i}^{j} a_t^T` (``first``/``last`` 1-based,
    inclusive)."""
    a = _matrix(accuracy_matrix)
    big_t = a.shape[0] if phase is None else int(phase)
    if not 1 <= first <= last <= a.shape[1]:
        raise ConfigError(f"segment {first}:{last} is not within domains 1..{a.shape[1]}")
    return float(np.mean(a[big_t - 1, first - 1:last]))
