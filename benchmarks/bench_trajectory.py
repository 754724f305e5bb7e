"""Benchmark one MTT / SATM outer step: seconds, FLOPs and XLA temporary memory; one JSON line per case.

    python benchmarks/bench_trajectory.py --what=time --algorithm=mtt --syn_steps=20   # vs mtt_torch.py 1 32 10 20
    python benchmarks/bench_trajectory.py --what=time --algorithm=satm --syn_steps=20  # vs satm_torch.py 1 32 10 20
    python benchmarks/bench_trajectory.py --what=memory                               # N x iota x remat grid
    python benchmarks/bench_trajectory.py --what=compile --scan_unroll=1 --memory_steps=20,80   # compile only

The step is the same work as ``../shared/bench/mtt_torch.py CHANNELS HW IPC SYN_STEPS [BATCH_SYN]``: ConvNet-3
(w128, instance norm) from an expert snapshot, ``syn_steps`` unrolled SGD steps on minibatches of ``batch_syn``
synthetic images with per-sample augmentation, normalised parameter distance, meta-gradient to the images and the
learning rate (SGD momentum 0.5), on random stand-in data and a random-walk stand-in expert buffer.
``--what=memory`` only compiles (no run) and reports XLA's temporary bytes of one outer step for every
``N`` in ``--memory_steps``, ``iota`` in {0, N/3, 2N/3} and remat off/on, plus the ratio to the naive full unroll
(iota 0, no remat) of the same ``N``. ``--what=compile`` compiles the ``--algorithm`` step for every ``N`` in
``--memory_steps`` with the given ``--scan_unroll``/``--remat`` and reports compile seconds and temporary bytes. FLOPs: XLA counts a rolled loop body once, so FLOPs are reported for
fully unrolled programs only (``--what=time`` on CPU), counted on a copy of the step whose kernel gradients are not
chunked (``ddjax.models.conv`` sums them over batch chunks in a loop on one CPU).
"""
from __future__ import annotations

import json
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from ddjax import algorithms, experts, models
from ddjax.algorithms import trajectory
from launch.config import base_config

from common import time_step, whole_batches, xla_analysis

flags.DEFINE_enum("what", "time", ["time", "memory", "compile"],
                  "Time one step, the temp-memory grid, or compile time and memory per N.")
flags.DEFINE_enum("algorithm", "mtt", ["mtt", "satm"], "time: which step.")
flags.DEFINE_integer("channels", 1, "Image channels.")
flags.DEFINE_integer("hw", 32, "Image height = width.")
flags.DEFINE_integer("ipc", 10, "Synthetic images per class.")
flags.DEFINE_integer("classes", 10, "Number of classes.")
flags.DEFINE_integer("syn_steps", 20, "Unrolled inner steps N.")
flags.DEFINE_integer("batch_syn", 100, "Synthetic images per inner step.")
flags.DEFINE_integer("width", 128, "ConvNet width.")
flags.DEFINE_integer("depth", 3, "ConvNet depth.")
flags.DEFINE_integer("truncate", -1, "time: iota (-1: the algorithm's default).")
flags.DEFINE_integer("scan_unroll", 0, "0: auto (full unroll on CPU), 1: rolled, N: unroll factor.")
flags.DEFINE_bool("remat", None, "time/compile: rematerialise differentiated steps (unset: the algorithm's auto "
                  "rule, trajectory.resolved_remat).")
flags.DEFINE_string("dsa", "color_crop_cutout_flip_scale_rotate", "DSA strategy ('none' to disable).")
flags.DEFINE_list("memory_steps", ["20", "50", "80"], "memory: the N values.")
flags.DEFINE_integer("repeats", 3, "Timed calls after one warm-up.")
flags.DEFINE_string("profile_dir", None, "time: also trace one call there and add its summary "
                    "(benchmarks/trace_summary.py).")
FLAGS = flags.FLAGS


def _setup(algorithm: str, syn_steps: int, truncate: int | None, remat: bool | None, scan_unroll: int):
    """``(algorithm, state, expert buffer, whether its step rematerialises)`` for one benchmark setting."""
    shape = (FLAGS.hw, FLAGS.hw, FLAGS.channels)
    config = base_config(algorithm)
    config.ipc, config.dsa_strategy = FLAGS.ipc, FLAGS.dsa
    hp = config[algorithm]
    hp.syn_steps, hp.batch_syn, hp.remat, hp.scan_unroll = syn_steps, FLAGS.batch_syn, remat, scan_unroll
    hp.expert_epochs, hp.max_start_epoch = 2, 2
    if truncate is not None:
        hp.truncate = truncate
    model = models.build_model("convnet", FLAGS.classes, width=FLAGS.width, depth=FLAGS.depth)
    init = models.init_model(model, jax.random.PRNGKey(0), shape)["params"]
    keys = iter(jax.random.split(jax.random.PRNGKey(1), 64))
    buffer = experts.ExpertBuffer(params=jax.tree.map(
        lambda p: p[None, None] + jnp.cumsum(0.01 * jax.random.normal(next(keys), (2, 5) + p.shape), axis=1), init))
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(FLAGS.classes), FLAGS.ipc).astype(np.int32)
    synthetic = algorithms.SyntheticSet(images=jnp.asarray(rng.normal(size=(len(labels),) + shape), jnp.float32),
                                        labels=jnp.asarray(labels))
    algo = algorithms.get_algorithm(config, model, FLAGS.classes, shape)
    state = algo.init(jax.random.PRNGKey(2), synthetic)
    return algo, state, buffer, trajectory.resolved_remat(hp)


def bench_time() -> dict:
    truncate = None if FLAGS.truncate < 0 else FLAGS.truncate
    algo, state, buffer, remat = _setup(FLAGS.algorithm, FLAGS.syn_steps, truncate, FLAGS.remat, FLAGS.scan_unroll)
    run = time_step(algo.step, state, buffer, FLAGS.repeats, profile_dir=FLAGS.profile_dir)
    times, compile_s = run.pop("times"), run.pop("compile_s")
    # XLA counts a loop body once, and on one CPU the convs' kernel gradients are summed over batch chunks in a
    # lax.scan (ddjax.models.conv): count the FLOPs of the same step built with whole-batch kernel gradients
    with whole_batches():
        whole = _setup(FLAGS.algorithm, FLAGS.syn_steps, truncate, FLAGS.remat, FLAGS.scan_unroll)[0]
        run["flops"] = xla_analysis(jax.jit(whole.step).lower(state, buffer).compile())["flops"]
    info = run
    median = statistics.median(times)
    return {"bench": "trajectory_step", "algorithm": FLAGS.algorithm, "channels": FLAGS.channels, "hw": FLAGS.hw,
            "ipc": FLAGS.ipc, "syn_steps": FLAGS.syn_steps, "batch_syn": FLAGS.batch_syn, "width": FLAGS.width,
            "truncate": truncate, "remat": remat, "scan_unroll": FLAGS.scan_unroll,
            "compile_s": round(compile_s, 2), "median_s": round(median, 4), "min_s": round(min(times), 4),
            **info, "gflops_per_s": round(info["flops"] / median / 1e9, 2) if info["flops"] else None,
            "backend": jax.default_backend(), "devices": jax.device_count(), "machine": platform.processor() or
            platform.machine(), "jax": jax.__version__}


def bench_memory() -> list[dict]:
    rows = []
    for n in (int(v) for v in FLAGS.memory_steps):
        naive = None
        for iota in (0, n // 3, 2 * n // 3):
            for remat in (False, True):
                algo, state, buffer, _ = _setup("mtt", n, iota, remat, scan_unroll=1)
                compiled = jax.jit(algo.step).lower(state, buffer).compile()
                temp = xla_analysis(compiled)["temp_bytes"]
                naive = temp if (iota == 0 and not remat) else naive
                rows.append({"bench": "trajectory_memory", "syn_steps": n, "truncate": iota, "remat": remat,
                             "temp_bytes": temp, "ratio_to_full_unroll": round(temp / naive, 3),
                             "batch_syn": FLAGS.batch_syn, "hw": FLAGS.hw, "channels": FLAGS.channels,
                             "width": FLAGS.width, "backend": jax.default_backend()})
                print(json.dumps(rows[-1]), flush=True)
    return rows


def bench_compile() -> list[dict]:
    rows = []
    truncate = None if FLAGS.truncate < 0 else FLAGS.truncate
    for n in (int(v) for v in FLAGS.memory_steps):
        algo, state, buffer, remat = _setup(FLAGS.algorithm, n, truncate, FLAGS.remat, FLAGS.scan_unroll)
        t = time.perf_counter()
        compiled = jax.jit(algo.step).lower(state, buffer).compile()
        rows.append({"bench": "trajectory_compile", "algorithm": FLAGS.algorithm, "syn_steps": n,
                     "scan_unroll": FLAGS.scan_unroll, "remat": remat, "truncate": truncate,
                     "compile_s": round(time.perf_counter() - t, 2), **xla_analysis(compiled),
                     "batch_syn": FLAGS.batch_syn, "hw": FLAGS.hw, "backend": jax.default_backend()})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main(argv):
    del argv
    if FLAGS.what == "memory":
        bench_memory()
    elif FLAGS.what == "compile":
        bench_compile()
    else:
        print(json.dumps(bench_time()), flush=True)


if __name__ == "__main__":
    app.run(main)
