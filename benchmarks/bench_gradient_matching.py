"""Benchmark one outer iteration (one ``step``: a fresh network and its matching rounds) of DC, IDC and DREAM+;
one JSON line per algorithm.

    python benchmarks/bench_gradient_matching.py --algorithms=dc,idc,dream --ipc=10 --rounds=10
    python benchmarks/bench_gradient_matching.py --algorithms=dc --unroll=none,classes,classes_rounds

Random stand-in data of Fashion-MNIST's shape (28x28x1, 10 classes, ``--pool`` images per class), ConvNet-3.
The step runs ``--rounds`` matching rounds (the references: DC 10 at IPC 10, IDC/DREAM+ 100); ``per_round_s`` =
median / rounds, and ``paper_outer_s`` scales it to the reference's rounds. FLOPs come from XLA's cost analysis,
which counts a loop body once: ``flops_loop_bodies`` is that count for the timed program, ``flops_step`` the count
of a loop-free copy of the same step (classes vmapped, rounds/network steps/embedding chunks unrolled, batch
gradients whole (``GRAD_CHUNK`` 0) and kernel gradients unchunked; compiled,
never run; only k-means' data-dependent Lloyd loop still counts once) and ``gflop_per_s`` = flops_step / median_s.
DREAM+'s k-means share: the same step timed without representative matching (random real batches, still the
feature term) — the difference is the clustering (embedding the clustered pool + k-means), reported as
``kmeans_s`` per step and ``kmeans_share``. ``--unroll`` times each listed loop-unrolling choice
(:func:`ddjax.algorithms.gradient_matching.resolve_unroll`) in the same process, one line each.
"""
from __future__ import annotations

import dataclasses
import json
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from common import time_step, whole_batches, xla_analysis

from ddjax import algorithms, models
from ddjax.algorithms import dream, gradient_matching as gm, idc
from launch.config import base_config

flags.DEFINE_list("algorithms", ["dc", "idc", "dream"], "Which steps to time.")
flags.DEFINE_integer("ipc", 10, "Synthetic images per class.")
flags.DEFINE_integer("rounds", 10, "Matching rounds per step.")
flags.DEFINE_integer("width", 128, "ConvNet width.")
flags.DEFINE_integer("pool", 512, "Real images per class (the clustered pool for DREAM+).")
flags.DEFINE_integer("repeats", 2, "Timed calls after one warm-up.")
flags.DEFINE_integer("batch_real", 0, "Real images per class per round (0 = the algorithm's default).")
flags.DEFINE_integer("net_epochs", -1, "DC: network epochs between rounds (-1 = DC's schedule).")
flags.DEFINE_integer("net_samples", -1, "IDC/DREAM+: real samples the network trains on per round (-1 = default).")
flags.DEFINE_list("unroll", ["auto"], "Loop-unrolling choices to time (auto, none, classes, classes_rounds, ...).")
flags.DEFINE_string("profile_dir", None, "Also trace one call of each step there and add its summary "
                    "(benchmarks/trace_summary.py) to the line as `profile`.")
flags.DEFINE_integer("grad_chunk", -1, "Images per chunk of the first-order batch gradients (real statistics, "
                     "network steps) on one CPU device (gradient_matching.GRAD_CHUNK; -1: the library's, 0: whole).")
flags.DEFINE_bool("exact_flops", True, "Also compile a loop-free copy of each step to count its FLOPs (not run).")
FLAGS = flags.FLAGS
SHAPE, K = (28, 28, 1), 10
PAPER_ROUNDS = {"dc": None, "idc": 100, "dream": 100}


def _spec(name: str) -> gm.MatchingSpec:
    if name == "dc":
        c = base_config("dc")
        c.ipc = FLAGS.ipc
        spec = gm.spec_from_dc_config(c.dc, FLAGS.ipc, "")
    elif name == "idc":
        c = base_config("idc")
        c.ipc = FLAGS.ipc
        spec = idc.spec_from_idc_config(c.idc, FLAGS.ipc)
    else:
        c = base_config("dream")
        c.ipc = FLAGS.ipc
        spec = dream.spec_from_config(c)
    spec = dataclasses.replace(spec, rounds=FLAGS.rounds, syn_init="given")
    if FLAGS.batch_real:
        spec = dataclasses.replace(spec, batch_real=FLAGS.batch_real)
    if FLAGS.net_epochs >= 0 and spec.net_source == "synthetic":
        spec = dataclasses.replace(spec, net_epochs=FLAGS.net_epochs)
    if FLAGS.net_samples >= 0 and spec.net_source == "real":
        spec = dataclasses.replace(spec, net_samples=FLAGS.net_samples)
    return spec


def _algorithm(spec: gm.MatchingSpec, model) -> algorithms.Algorithm:
    """The step of ``spec``: DREAM+'s composition covers all three (it only swaps in what ``spec`` switches on)."""
    return gm.matching(dream.dream_parts(spec), model, K, SHAPE)


def _time(spec: gm.MatchingSpec, real, count_flops: bool = True) -> dict:
    model = models.build_model("convnet", K, width=FLAGS.width, depth=3)
    algo = _algorithm(spec, model)
    state = algo.init(jax.random.PRNGKey(0), algorithms.init_synthetic(jax.random.PRNGKey(1), real, FLAGS.ipc))
    out = time_step(algo.step, state, real, FLAGS.repeats, profile_dir=FLAGS.profile_dir if count_flops else None)
    out["median_s"] = statistics.median(out.pop("times"))
    out["compile_s"] = round(out["compile_s"], 2)
    out["flops_loop_bodies"] = out.pop("flops")
    if FLAGS.exact_flops and count_flops:
        # The same step with no loop left for XLA's cost analysis to count once: classes vmapped, rounds,
        # network steps and embedding chunks unrolled, batch gradients whole. Compiled for the count only, never run.
        with whole_batches():   # (benchmarks/common.py)
            counted = _algorithm(dataclasses.replace(spec, class_axis="vmap", unroll="rounds_net_embed"), model)
            out["flops_step"] = xla_analysis(jax.jit(counted.step).lower(state, real).compile())["flops"]
    return out


def _net_steps_per_round(spec: gm.MatchingSpec) -> int:
    """SGD steps of the network between rounds: DC's epochs over the decoded synthetic set in batches of
    ``min(net_batch, n)`` (``synthetic_sgd``), or IDC's ``⌈net_samples / net_batch⌉`` (``real_data_sgd``)."""
    if spec.net_source == "synthetic":
        n = K * spec.decoded_per_class
        return spec.net_epochs * -(-n // min(spec.net_batch, n))
    return -(-spec.net_samples // spec.net_batch)


def main(argv):
    del argv
    if FLAGS.grad_chunk >= 0:
        gm.GRAD_CHUNK = FLAGS.grad_chunk
    rng = np.random.default_rng(0)
    real = algorithms.RealPool(jnp.asarray(rng.normal(size=(K, FLAGS.pool) + SHAPE), jnp.float32),
                               jnp.full((K,), FLAGS.pool, jnp.int32))
    for name, unroll in [(n, u) for n in FLAGS.algorithms for u in FLAGS.unroll]:
        spec = dataclasses.replace(_spec(name), unroll=unroll)
        out = _time(spec, real)
        record = {"benchmark": "gradient_matching", "algorithm": name, "ipc": FLAGS.ipc, "rounds": spec.rounds,
                  "unroll": "_".join(sorted(gm.resolve_unroll(unroll))) or "none",
                  "width": FLAGS.width, "batch_real": spec.batch_real, "factor": spec.factor,
                  "net_steps_per_round": _net_steps_per_round(spec),
                  "pool": FLAGS.pool, "grad_chunk": gm.GRAD_CHUNK, "median_s": round(out["median_s"], 3),
                  "per_round_s": round(out["median_s"] / spec.rounds, 3), **{k: v for k, v in out.items()
                                                                           if k != "median_s"}}
        if out.get("flops_step"):
            record["gflop_per_s"] = round(out["flops_step"] / out["median_s"] / 1e9, 1)
        paper_rounds = PAPER_ROUNDS[name] or gm.dc_loops(FLAGS.ipc)[0]
        record["paper_rounds"] = paper_rounds
        record["paper_outer_s"] = round(out["median_s"] / spec.rounds * paper_rounds, 2)
        if name == "dream":
            plain = _time(dataclasses.replace(spec, representative=False), real, count_flops=False)
            kmeans_s = out["median_s"] - plain["median_s"]
            record.update(kmeans_s=round(kmeans_s, 3), kmeans_share=round(kmeans_s / out["median_s"], 3),
                          clusterings_per_step=-(-spec.rounds // spec.interval),
                          without_representatives_s=round(plain["median_s"], 3))
            # at the paper's rounds: one clustering every `interval` rounds on top of the plain rounds
            clusterings = -(-paper_rounds // spec.interval)
            paper_kmeans = clusterings * kmeans_s / record["clusterings_per_step"]
            record["paper_kmeans_share"] = round(
                paper_kmeans / (plain["median_s"] / spec.rounds * paper_rounds + paper_kmeans), 3)
        record.update(jax=jax.__version__, backend=jax.default_backend(), devices=jax.device_count(),
                      machine=platform.machine(), date=time.strftime("%Y-%m-%d"))
        print(json.dumps(record), flush=True)


if __name__ == "__main__":
    app.run(main)
