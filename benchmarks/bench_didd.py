"""Benchmark one DIDD step on a later domain (L_stable on) against its Finetune step, in one run; one JSON line each.

    python benchmarks/bench_didd.py [--ipc=10 --hw=28 --width=128 --depth=3 --batch_real=128 --modes=finetune,bilevel]

The paper's scale (Table 6, R-MNIST) but at MNIST's own 28×28 (§5.1.2 resizes to 32×32, 1.31× the pixels; pass
``--hw=32``; the recorded rows are at 28): ConvNet-3 w128 instance norm, 10 classes, 1 channel (random stand-in data),
128 real images per class, IPC 10 with multi-formation factor 2 (40 decoded images per class), colour + crop +
cutout. Each mode's step is compiled for domains t ≥ 2 only (``didd_step(..., branch="later")``: no ``lax.cond``,
so XLA's FLOP count is the work that runs). Reports compile seconds, median / min seconds per call over
``--repeats`` calls after a warm-up (the state threaded through), XLA FLOPs and temporary memory, and each mode's
ratio to Finetune. The paper's bi-level update costs 3.3× Finetune (Table 2, domains A/C/S); ddjax's meta-gradient
is one extra forward/backward (docs/didd.md), target ≤ 2×. Results: docs/results.md ("DIDD").
"""
from __future__ import annotations

import functools
import json
import platform
import statistics

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from ddjax import algorithms, models
from ddjax.algorithms import didd
from launch.config import base_config

from common import time_step

flags.DEFINE_list("modes", ["finetune", "bilevel", "stable"], "config.didd.mode values; the first is the baseline.")
flags.DEFINE_integer("ipc", 10, "Stored images per class.")
flags.DEFINE_integer("factor", 2, "Multi-formation factor.")
flags.DEFINE_integer("hw", 28, "Image height = width.")
flags.DEFINE_integer("classes", 10, "Number of classes.")
flags.DEFINE_integer("batch_real", 128, "Real images per class per step.")
flags.DEFINE_integer("width", 128, "ConvNet width.")
flags.DEFINE_integer("depth", 3, "ConvNet depth.")
flags.DEFINE_integer("repeats", 3, "Timed calls after one warm-up.")
FLAGS = flags.FLAGS


def bench(mode: str) -> dict:
    shape = (FLAGS.hw, FLAGS.hw, 1)
    config = base_config("didd")
    config.ipc, config.dsa_strategy = FLAGS.ipc, "color_crop_cutout"
    config.didd.update(dict(mode=mode, lr_img=float(FLAGS.ipc), batch_real=FLAGS.batch_real, factor=FLAGS.factor,
                            init_mix=False))
    model = models.build_model("convnet", FLAGS.classes, width=FLAGS.width, depth=FLAGS.depth, norm="instance")
    rng = np.random.default_rng(0)
    pool_size = 2 * FLAGS.batch_real
    real = algorithms.RealPool(jnp.asarray(rng.normal(size=(FLAGS.classes, pool_size) + shape), jnp.float32),
                               jnp.full((FLAGS.classes,), pool_size, jnp.int32))
    algo = didd.make(config, model, FLAGS.classes, shape)
    synthetic = algorithms.init_synthetic(jax.random.PRNGKey(0), real, FLAGS.ipc)
    state = didd.boundary(algo.init(jax.random.PRNGKey(1), synthetic), 1)
    spec = didd.make_spec(config, model, FLAGS.classes, shape)
    step = functools.partial(didd.didd_step, spec, branch="later")
    result = time_step(lambda s, d: step(s, d), state, real, FLAGS.repeats)
    times = result.pop("times")
    return {"mode": mode, "ipc": FLAGS.ipc, "factor": FLAGS.factor, "hw": FLAGS.hw, "width": FLAGS.width,
            "depth": FLAGS.depth, "batch_real": FLAGS.batch_real, "median_s": statistics.median(times),
            "min_s": min(times), **result}


def main(_):
    rows = [bench(mode) for mode in FLAGS.modes]
    base = rows[0]
    for row in rows:
        row["time_ratio_min"] = row["min_s"] / base["min_s"]
        row["flops_ratio"] = row["flops"] / base["flops"] if row["flops"] and base["flops"] else None
        row["machine"] = f"{platform.machine()} {jax.devices()[0].platform}"
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    app.run(main)
