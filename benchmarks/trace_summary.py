"""Where a compiled step's time goes on XLA:CPU: trace one call with ``jax.profiler`` and sum the thunk events by
kind and by the model layer their HLO came from (docs/performance.md, "2026-12-07").

XLA:CPU records one event per thunk (HLO fusion or op) on its worker threads; this matches each event to its
instruction in ``compiled.as_text()``, reads the fusion kind (``kCustom`` = YNNPACK convs/dots, ``kLoop``
elementwise, ...) and the ``op_name`` metadata of the ops inside it (``.../ConvNet/norm_1/...``, or in a gradient
``.../transpose(jvp(ConvNet))/norm_1/...`` → ``norm_1``), and measures how much of the call's span 0, 1 or 2+
worker threads were running a thunk. Caveats: a plain ``dot`` thunk can run asynchronously, so its event covers
only its launch (the gaps between the kernel gradients' chunked products show as "0 threads busy"); a YNNPACK
fusion spreads its work over the pool without events of its own, so "1 thread busy" does not mean a core was
idle (DM: one thread "busy" 99 % of the span at 58 % of the matmul peak).

    python benchmarks/bench_trajectory.py --what=time --syn_steps=5 --profile_dir=/tmp/trace
    python benchmarks/bench_dm.py --what=dm --profile_dir=/tmp/trace
"""
from __future__ import annotations

import collections
import glob
import gzip
import json
import os
import re
from typing import Any, Callable

import jax

_INSTRUCTION = re.compile(r"\s*(?:ROOT )?%([\w.\-]+) = .*")
_LAYER = re.compile(r"(?:/|(?:jvp|transpose|vmap)\()(?:ConvNet|[A-Z]\w*)\)*/(\w+?)/")


def trace_call(call: Callable[[], Any], out_dir: str) -> str:
    """Run ``call`` once under ``jax.profiler.trace`` and return the path of the perfetto JSON it wrote."""
    with jax.profiler.trace(out_dir, create_perfetto_trace=True):
        jax.block_until_ready(call())
    return max(glob.glob(os.path.join(out_dir, "plugins", "profile", "*", "perfetto_trace.json.gz")),
               key=os.path.getmtime)


def _instructions(hlo_text: str) -> tuple[dict[str, str], dict[str, str]]:
    """``(instruction name -> its line, computation name -> its body)`` of an HLO module's text."""
    lines = {}
    for line in hlo_text.splitlines():
        m = _INSTRUCTION.match(line)
        if m:
            lines[m.group(1)] = line
    bodies = {m.group(1): m.group(0) for m in re.finditer(r"^%([\w.\-]+) \(.*?\n}", hlo_text, re.S | re.M)}
    return lines, bodies


def _kind_and_layer(name: str, lines: dict[str, str], bodies: dict[str, str]) -> tuple[str, str]:
    line = lines.get(name, "")
    op = re.search(r"= \S+ ([\w-]+)\(", line)
    kind = re.search(r"kind=(\w+)", line)
    callee = re.search(r"calls=%([\w.\-]+)", line)
    text = bodies.get(callee.group(1), line) if callee else line
    label = (op.group(1) if op else "?") + (":" + kind.group(1) if kind else "")
    # a fusion holding convs or dots belongs to their layers (joined with "+": YNNPACK can fuse a whole network
    # pass into one thunk); otherwise to the layer most of its ops came from
    heavy = [ln for ln in text.splitlines() if re.search(r" (?:convolution|dot)\(", ln)]
    names = re.findall(r'op_name="([^"]+)"', "\n".join(heavy or text.splitlines()))
    layers = collections.Counter(m.group(1) for m in (_LAYER.search(n) for n in names) if m)
    if not layers:
        return label, "other"
    return label, "+".join(sorted(layers)) if heavy else layers.most_common(1)[0][0]


def summarise(trace_path: str, hlo_text: str, top: int = 12) -> dict:
    """Thunk seconds by kind and by layer, the ``top`` (kind, layer) pairs, and the seconds of the span during which
    0, 1 or 2+ worker threads ran a thunk."""
    with gzip.open(trace_path) as f:
        trace = json.load(f)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    threads = {e["tid"]: e["args"]["name"] for e in events if e.get("ph") == "M" and e.get("name") == "thread_name"}
    workers = {tid for tid, name in threads.items() if "Eigen" in name}
    lines, bodies = _instructions(hlo_text)
    by_kind, by_layer, by_pair = collections.Counter(), collections.Counter(), collections.Counter()
    edges = []
    for e in events:
        if e.get("ph") != "X" or e.get("tid") not in workers or e["name"] not in lines:
            continue
        seconds = e.get("dur", 0) / 1e6
        kind, layer = _kind_and_layer(e["name"], lines, bodies)
        by_kind[kind] += seconds
        by_layer[layer] += seconds
        by_pair[f"{kind} {layer}"] += seconds
        edges += [(e["ts"], 1), (e["ts"] + e["dur"], -1)]
    busy = collections.Counter()
    edges.sort()
    active, last = 0, edges[0][0] if edges else 0
    for ts, step in edges:
        busy[min(active, 2)] += (ts - last) / 1e6
        active, last = active + step, ts
    rounded = lambda c: {k: round(v, 3) for k, v in c.most_common(top)}  # noqa: E731
    return {"thunk_s": round(sum(by_kind.values()), 3), "by_kind": rounded(by_kind), "by_layer": rounded(by_layer),
            "top": rounded(by_pair), "span_s_by_busy_threads": {str(k): round(v, 3) for k, v in sorted(busy.items())}}
