"""Time ``ddjax.models.conv.kernel_gradient`` of one layer whole and summed over batch chunks in a ``lax.scan``
(the sweep behind ``conv._DK_CHUNK_BYTES``; docs/performance.md, "2026-12-07 afternoon"). One JSON line per chunk.

    python benchmarks/bench_kernel_gradient.py 100 16 128 128 2,4,5,10,20,25   # batch, side, C_in, C_out, chunks
"""
from __future__ import annotations

import json
import sys
import time

import jax
import numpy as np

from ddjax.models import conv

PAD = ((1, 1), (1, 1))


def main(argv: list[str]) -> None:
    n, side, c_in, c_out = (int(v) for v in argv[1:5])
    x = jax.random.normal(jax.random.PRNGKey(0), (n, side, side, c_in))
    g = jax.random.normal(jax.random.PRNGKey(1), (n, side, side, c_out))
    whole = jax.jit(lambda x, g: conv._kernel_gradient_whole(PAD, x, g, (3, 3)))
    ref = np.asarray(whole(x, g))
    flops = 2 * 9 * c_in * c_out * n * side * side
    for chunk in [n] + [int(v) for v in argv[5].split(",")]:
        f = whole if chunk == n else jax.jit(
            lambda x, g, chunk=chunk: conv.kernel_gradient_in_chunks(PAD, x, g, (3, 3), chunk))
        err = float(np.abs(np.asarray(f(x, g)) - ref).max() / np.abs(ref).max())
        times = []
        for _ in range(11):
            t = time.perf_counter()
            f(x, g).block_until_ready()
            times.append(time.perf_counter() - t)
        print(json.dumps({"bench": "kernel_gradient", "batch": n, "side": side, "c_in": c_in, "c_out": c_out,
                          "chunk": chunk, "median_ms": round(1e3 * float(np.median(times)), 2),
                          "min_ms": round(1e3 * min(times), 2),
                          "gflops_per_s": round(flops / float(np.median(times)) / 1e9, 1), "rel_err": err}),
              flush=True)


if __name__ == "__main__":
    main(sys.argv)
