"""Benchmark one DM outer step, the evaluation trainer and one plain training step; one JSON line per measurement.

    python benchmarks/bench_dm.py --what=dm --channels=1 --hw=32 --ipc=10 --batch_real=256
    python benchmarks/bench_dm.py --what=eval --channels=1 --hw=32 --ipc=10 --epochs=20 --num_seeds=5
    python benchmarks/bench_dm.py --what=train_step --channels=1 --hw=32 --batch=100 --repeats=15

The DM step is the same work as ``../shared/bench/dm_torch.py CHANNELS HW IPC BATCH_REAL CLASSES`` (fresh
ConvNet-3 per step, siamese DSA, per-class mean-embedding loss, SGD momentum 0.5 on the images) on random stand-in
data, so the two medians can be divided. Reports: compile seconds, median/min seconds per call over ``--repeats``
calls after one warm-up, XLA FLOPs (``cost_analysis`` of the step with the real batch in one pass: XLA counts
the chunked real forward's loop body once), achieved GFLOP/s, and XLA temporary memory
(``memory_analysis``).

``--what=train_step`` times the first-order step that the evaluation trainer, SATM's truncated steps and DC/IDC's
network updates repeat, alone: cross-entropy of ConvNet on ``--batch`` random images, its gradient and a plain SGD
update (lr 0.01), no augmentation; the same work as ``benchmarks/train_step_torch.py CHANNELS HW BATCH CLASSES``.
Its FLOPs are counted on the copy with whole-batch kernel gradients (``common.whole_batches``).
"""
from __future__ import annotations

import json
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags

from ddjax import algorithms, evaluate, models
from launch.config import base_config

from common import time_calls, time_step, whole_batches, xla_analysis

flags.DEFINE_enum("what", "dm", ["dm", "eval", "train_step"], "Which program to time.")
flags.DEFINE_integer("channels", 1, "Image channels.")
flags.DEFINE_integer("hw", 32, "Image height = width.")
flags.DEFINE_integer("ipc", 10, "Synthetic images per class.")
flags.DEFINE_integer("classes", 10, "Number of classes.")
flags.DEFINE_integer("batch_real", 256, "DM: real images per class per step.")
flags.DEFINE_integer("width", 128, "ConvNet width.")
flags.DEFINE_integer("depth", 3, "ConvNet depth.")
flags.DEFINE_string("norm", "instance", "ConvNet norm.")
flags.DEFINE_string("dsa", "color_crop_cutout_flip_scale_rotate", "DSA strategy ('none' to disable).")
flags.DEFINE_integer("batch", 100, "train_step: images per step.")
flags.DEFINE_integer("epochs", 20, "eval: training epochs on the synthetic set.")
flags.DEFINE_integer("num_seeds", 5, "eval: networks trained in one vmapped program.")
flags.DEFINE_integer("repeats", 5, "Timed calls after one warm-up.")
flags.DEFINE_string("profile_dir", None, "time: also trace one call there and add its summary "
                    "(benchmarks/trace_summary.py).")
FLAGS = flags.FLAGS


def bench_dm() -> dict:
    shape = (FLAGS.hw, FLAGS.hw, FLAGS.channels)
    config = base_config("dm")
    config.ipc, config.dsa_strategy, config.dm.batch_real = FLAGS.ipc, FLAGS.dsa, FLAGS.batch_real
    model = models.build_model("convnet", FLAGS.classes, width=FLAGS.width, depth=FLAGS.depth, norm=FLAGS.norm)
    rng = np.random.default_rng(0)
    real = algorithms.RealPool(jnp.asarray(rng.normal(size=(FLAGS.classes, 2000) + shape), jnp.float32),
                               jnp.full((FLAGS.classes,), 2000, jnp.int32))
    algo = algorithms.get_algorithm(config, model, FLAGS.classes, shape)
    state = algo.init(jax.random.PRNGKey(0), algorithms.init_synthetic(jax.random.PRNGKey(1), real, FLAGS.ipc))
    out = time_step(algo.step, state, real, FLAGS.repeats, profile_dir=FLAGS.profile_dir)
    # XLA counts a loop body once, and on one CPU the real features run in a lax.map over chunks: count the FLOPs
    # of the same step built with the real batch in one pass
    with whole_batches():
        whole = algorithms.get_algorithm(config, model, FLAGS.classes, shape)
        out["flops"] = xla_analysis(jax.jit(whole.step).lower(state, real).compile())["flops"]
    return out


def bench_eval() -> dict:
    shape = (FLAGS.hw, FLAGS.hw, FLAGS.channels)
    model = models.build_model("convnet", FLAGS.classes, width=FLAGS.width, depth=FLAGS.depth, norm=FLAGS.norm)
    rng = np.random.default_rng(0)
    n = FLAGS.classes * FLAGS.ipc
    images = rng.normal(size=(n,) + shape).astype(np.float32)
    labels = np.repeat(np.arange(FLAGS.classes), FLAGS.ipc).astype(np.int32)
    kwargs = dict(num_seeds=FLAGS.num_seeds, epochs=FLAGS.epochs, dsa_strategy=FLAGS.dsa)
    t = time.perf_counter()
    jax.block_until_ready(evaluate.train_networks(jax.random.PRNGKey(0), model, images, labels, **kwargs))
    first_s = time.perf_counter() - t
    times = time_calls(lambda: evaluate.train_networks(jax.random.PRNGKey(1), model, images, labels, **kwargs),
                  FLAGS.repeats)
    return {"compile_plus_first_s": first_s, "times": times}


def bench_train_step() -> dict:
    shape = (FLAGS.hw, FLAGS.hw, FLAGS.channels)
    model = models.build_model("convnet", FLAGS.classes, width=FLAGS.width, depth=FLAGS.depth, norm=FLAGS.norm)
    rng = np.random.default_rng(0)
    batch = (jnp.asarray(rng.normal(size=(FLAGS.batch,) + shape), jnp.float32),
             jnp.asarray(rng.integers(0, FLAGS.classes, FLAGS.batch), jnp.int32))

    def step(params, batch):
        """One SGD step on ``mean_i CE(f(x_i; params), y_i)``."""
        def loss_fn(p):
            logits = model.apply({"params": p}, batch[0])
            return optax.softmax_cross_entropy_with_integer_labels(logits, batch[1]).mean()
        loss, grads = jax.value_and_grad(loss_fn)(params)
        return jax.tree.map(lambda p, g: p - 0.01 * g, params, grads), {"loss": loss}

    params = models.init_model(model, jax.random.PRNGKey(0), shape)["params"]
    out = time_step(step, params, batch, FLAGS.repeats, profile_dir=FLAGS.profile_dir)
    with whole_batches():   # the kernel gradients' chunk loop would be counted once
        out["flops"] = xla_analysis(jax.jit(step).lower(params, batch).compile())["flops"]
    return out


def main(argv):
    del argv
    out = {"dm": bench_dm, "eval": bench_eval, "train_step": bench_train_step}[FLAGS.what]()
    times = out.pop("times")
    median = statistics.median(times)
    record = {"benchmark": FLAGS.what, "impl": "ddjax-jax", "channels": FLAGS.channels, "hw": FLAGS.hw,
              "ipc": FLAGS.ipc, "classes": FLAGS.classes, "width": FLAGS.width, "depth": FLAGS.depth,
              "norm": FLAGS.norm, "dsa": FLAGS.dsa, "median_s": round(median, 4), "min_s": round(min(times), 4),
              "repeats": FLAGS.repeats, **{k: (round(v, 3) if isinstance(v, float) else v) for k, v in out.items()}}
    if FLAGS.what == "eval":
        record.update(epochs=FLAGS.epochs, num_seeds=FLAGS.num_seeds)
    elif FLAGS.what == "dm":
        record["batch_real"] = FLAGS.batch_real
    else:
        record.update(batch=FLAGS.batch, dsa="none")
    if record.get("flops"):   # dm and train_step count FLOPs; eval does not
        record["gflops_per_s"] = round(record["flops"] / median / 1e9, 2)
    record.update(jax=jax.__version__, backend=jax.default_backend(), devices=jax.device_count(),
                  machine=platform.machine(), date=time.strftime("%Y-%m-%d"))
    print(json.dumps(record))


if __name__ == "__main__":
    app.run(main)
