"""Minor page faults, kernel seconds and resident memory per outer step of the MTT/SATM benchmark step, one line per
step (docs/performance.md, "Page faults"); run it with and without ``GLIBC_TUNABLES=...`` or
``LD_PRELOAD=libtcmalloc_minimal.so.4`` in front.

    python benchmarks/page_faults.py --algorithm=mtt --syn_steps=5 --steps=6
"""
from __future__ import annotations

import json
import os
import resource
import time

import jax
from absl import app, flags

import bench_trajectory
import common

flags.DEFINE_integer("steps", 6, "Outer steps to run after compiling.")


def main(argv):
    del argv
    f = flags.FLAGS
    algo, state, buffer = bench_trajectory._setup(f.algorithm, f.syn_steps, None, False, f.scan_unroll)
    compiled = jax.jit(algo.step).lower(state, buffer).compile()
    for i in range(f.steps):
        before, t = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        state, metrics = compiled(state, buffer)
        jax.block_until_ready(metrics["loss"])
        after = resource.getrusage(resource.RUSAGE_SELF)
        resident = int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        print(json.dumps({"bench": "page_faults", "algorithm": f.algorithm, "syn_steps": f.syn_steps, "step": i,
                          "seconds": round(time.perf_counter() - t, 3), "minor_faults": after.ru_minflt - before.ru_minflt,
                          "kernel_s": round(after.ru_stime - before.ru_stime, 3),
                          "user_s": round(after.ru_utime - before.ru_utime, 3), "resident_gb": round(resident / 1e9, 2),
                          **common.run_settings()}), flush=True)


if __name__ == "__main__":
    app.run(main)
