"""The machine's measured matmul peak, the denominator of every "share of peak" in docs/performance.md: the best
of ``--repeats`` calls of a jitted ``n×n @ n×n`` float32 product, ``2·n³`` FLOPs each, and their median; one JSON
line. 30 calls, not 5: on the AMD EPYC 2-core machine single calls ranged 118–160 GFLOP/s (2026-12-08), and the
best of 5 read 108.6 where the best of 30 read 134–161 minutes later.

    python benchmarks/matmul_peak.py            # 2048³, best and median of 30
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp
from absl import app, flags
from common import cpu_model, time_calls

flags.DEFINE_integer("n", 2048, "Matrix side.")
flags.DEFINE_integer("repeats", 30, "Timed calls after one warm-up; the best counts, the median is reported too.")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    a = jax.random.normal(jax.random.PRNGKey(0), (FLAGS.n, FLAGS.n), jnp.float32)
    b = jax.random.normal(jax.random.PRNGKey(1), (FLAGS.n, FLAGS.n), jnp.float32)
    product = jax.jit(jnp.dot)
    jax.block_until_ready(product(a, b))
    times = time_calls(lambda: product(a, b), FLAGS.repeats)
    best, median = min(times), statistics.median(times)
    print(json.dumps({"benchmark": "matmul_peak", "n": FLAGS.n, "repeats": FLAGS.repeats, "best_s": round(best, 5),
                      "gflop_per_s": round(2 * FLAGS.n ** 3 / best / 1e9, 1),
                      "median_gflop_per_s": round(2 * FLAGS.n ** 3 / median / 1e9, 1), "cpus": os.cpu_count(),
                      "load_average_1min": round(os.getloadavg()[0], 2), "jax": jax.__version__,
                      "backend": jax.default_backend(), "machine": platform.machine(), "cpu_model": cpu_model(),
                      "date": time.strftime("%Y-%m-%d %H:%M")}), flush=True)


if __name__ == "__main__":
    app.run(main)
