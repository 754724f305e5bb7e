"""Shared pieces of the step benchmarks: compile a jitted step, time it with its state threaded through, and
read XLA's static FLOP and memory counts. Imported by the ``bench_*.py`` scripts (run from the repository root as
``python benchmarks/bench_x.py``, which puts this folder on ``sys.path``)."""
from __future__ import annotations

import contextlib
import os
import platform
import time
from typing import Any, Callable, Iterator

import jax


def xla_analysis(compiled: Any) -> dict:
    """``flops`` (``cost_analysis``; a rolled loop's body counts once), ``temp_bytes`` and ``argument_bytes``
    (``memory_analysis``) of a compiled program; None where the backend does not say."""
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    mem = compiled.memory_analysis()
    return {"flops": float(cost.get("flops", float("nan"))) if cost else None,
            "temp_bytes": int(getattr(mem, "temp_size_in_bytes", -1)) if mem is not None else None,
            "argument_bytes": int(getattr(mem, "argument_size_in_bytes", -1)) if mem is not None else None}


def run_settings() -> dict:
    """The process's allocator and XLA settings, recorded in every timing row: ``glibc_tunables``
    (``GLIBC_TUNABLES``) and ``ld_preload`` (``LD_PRELOAD``, e.g. tcmalloc), either of which can change a step's time
    by up to a third on XLA:CPU, where each call's temporary buffer is allocated afresh (docs/performance.md, "Page
    faults", "tcmalloc"); and ``xla_flags`` (``XLA_FLAGS``: the emitter switches change compile time up to 3.5x,
    docs/performance.md, "Compile switches"); and ``cpu_model``: the 2-core machines lent so far are of kinds whose
    matmul peaks differ 2.5x (docs/performance.md, "a third machine kind")."""
    return {"glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""), "ld_preload": os.environ.get("LD_PRELOAD", ""),
            "xla_flags": os.environ.get("XLA_FLAGS", ""), "cpu_model": cpu_model()}


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), or ``platform.processor()`` where there is none."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


@contextlib.contextmanager
def whole_batches() -> Iterator[None]:
    """A context in which steps built and traced take every batch whole: on one CPU ddjax sums or maps some
    batches over cache-sized chunks in a ``lax.scan`` (the convs' kernel gradients, gradient matching's batch
    gradients, DM's real features), whose body XLA's cost analysis counts once. Build and compile a step's
    FLOP-counting copy inside it. JAX's trace caches are cleared on entry and exit (a cached trace of the conv's
    rules would otherwise keep, or leak, the chunked form)."""
    from unittest import mock   # noqa: PLC0415

    from ddjax.algorithms import distribution_family, gradient_matching   # noqa: PLC0415
    from ddjax.models import conv   # noqa: PLC0415
    jax.clear_caches()
    try:
        with mock.patch.object(conv, "_one_cpu", lambda: False), \
                mock.patch.object(gradient_matching, "GRAD_CHUNK", 0), \
                mock.patch.object(distribution_family, "REAL_CHUNK", 10 ** 9):
            yield
    finally:
        jax.clear_caches()


def time_calls(fn: Callable[[], Any], repeats: int) -> list[float]:
    """Wall seconds of ``repeats`` calls of ``fn``, each waited for (``block_until_ready``)."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t)
    return times


def time_step(step: Callable, state: Any, data: Any, repeats: int, jit: Callable = jax.jit,
              analyse: Callable[[Any], dict] = xla_analysis, profile_dir: str | None = None) -> dict:
    """Compile ``jit(step)`` (``step(state, data) -> (state, metrics)``), run one warm-up call, then time ``repeats``
    calls with the state threaded through (as the launcher runs it). Returns ``compile_s``, ``times`` and
    ``analyse(compiled)`` (default :func:`xla_analysis`); with ``profile_dir``, also ``profile``: one more call
    traced there and summarised by :func:`trace_summary.summarise`."""
    t = time.perf_counter()
    compiled = jit(step).lower(state, data).compile()
    compile_s = time.perf_counter() - t
    holder = {"state": state}

    def call():
        holder["state"], metrics = compiled(holder["state"], data)
        return metrics["loss"]

    jax.block_until_ready(call())
    out = {"compile_s": compile_s, "times": time_calls(call, repeats), **analyse(compiled), **run_settings()}
    if profile_dir:
        import trace_summary   # noqa: PLC0415  (benchmarks/ is on sys.path, as for this module)
        out["profile"] = trace_summary.summarise(trace_summary.trace_call(call, profile_dir), compiled.as_text())
    return out


def load_config(path: str, arg: str | None = None):
    """``get_config(arg)`` (or ``get_config()`` when ``arg`` is empty) of the config file at ``path``."""
    import importlib.util   # noqa: PLC0415

    spec = importlib.util.spec_from_file_location("benchmark_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg) if arg else module.get_config()


def override_config(config, items):
    """Apply ``key.sub=value`` overrides (a Python literal, else the string), as ``--config.key.sub=value`` would;
    a float field keeps float type (``=1`` gives 1.0). Returns ``config``, changed in place."""
    import ast   # noqa: PLC0415

    for item in items:
        key, sep, text = item.strip().partition("=")
        if not sep:
            raise SystemExit(f"override {item!r} is not key=value, e.g. didd.penalty_weight=0.1")
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text
        *parents, leaf = key.strip().split(".")
        target = config
        for p in parents:
            target = target[p]
        target[leaf] = float(value) if isinstance(target[leaf], float) and isinstance(value, int) else value
    return config
