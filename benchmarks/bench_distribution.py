"""Benchmark one outer step of DM, M3D and IID (on DM or M3D); prints one JSON line per case.

    python benchmarks/bench_distribution.py --algorithms=dm,m3d,iid,iid_m3d --ipcs=10,50

Same set-up as ``benchmarks/bench_dm.py --what=dm``: a fresh ConvNet-3 (w128, instance norm) per step, 10 classes,
32×32×1 random stand-in data, siamese DSA, ``batch_real`` real images per class, SGD momentum 0.5 on the images.
IID adds the covariance matching of the last block's local maps and the class centralization through one teacher
drawn per step from a pool of ``--num_teachers`` networks (``--teacher``: the paper's ResNet-18, instance norm; the
teachers are randomly initialised here, which costs the same as trained ones). Reports compile seconds,
median/min seconds per call over ``--repeats`` calls after one warm-up, XLA FLOPs (``cost_analysis``), achieved
GFLOP/s and XLA temporary memory (``memory_analysis``).
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

from ddjax import algorithms, models, teachers
from launch.config import base_config

from common import time_step

flags.DEFINE_list("algorithms", ["dm", "m3d", "iid", "iid_m3d"], "Cases: dm, m3d, iid (on DM), iid_m3d.")
flags.DEFINE_list("ipcs", ["10", "50"], "Synthetic images per class, one case each.")
flags.DEFINE_integer("channels", 1, "Image channels.")
flags.DEFINE_integer("hw", 32, "Image height = width.")
flags.DEFINE_integer("classes", 10, "Number of classes.")
flags.DEFINE_integer("batch_real", 256, "Real images per class per step (all algorithms, for one comparison).")
flags.DEFINE_integer("width", 128, "ConvNet width.")
flags.DEFINE_integer("depth", 3, "ConvNet depth.")
flags.DEFINE_string("dsa", "color_crop_cutout_flip_scale_rotate", "DSA strategy ('none' to disable).")
flags.DEFINE_string("teacher", "resnet18", "IID teacher model.")
flags.DEFINE_integer("teacher_width", 64, "IID teacher width.")
flags.DEFINE_integer("num_teachers", 2, "IID teacher pool size.")
flags.DEFINE_integer("repeats", 3, "Timed calls after one warm-up.")
FLAGS = flags.FLAGS


def bench(case: str, ipc: int) -> dict:
    name = "iid" if case.startswith("iid") else case
    shape = (FLAGS.hw, FLAGS.hw, FLAGS.channels)
    config = base_config(name)
    config.ipc, config.dsa_strategy = ipc, FLAGS.dsa
    config[name].batch_real = FLAGS.batch_real
    if name == "iid":
        config.iid.base = "m3d" if case == "iid_m3d" else "dm"
        t = config.iid.teacher
        t.model, t.width, t.norm, t.num_teachers = FLAGS.teacher, FLAGS.teacher_width, "instance", FLAGS.num_teachers
    model = models.build_model("convnet", FLAGS.classes, width=FLAGS.width, depth=FLAGS.depth, norm="instance")
    rng = np.random.default_rng(0)
    pool_size = max(2000, FLAGS.batch_real)
    real = algorithms.RealPool(jnp.asarray(rng.normal(size=(FLAGS.classes, pool_size) + shape), jnp.float32),
                               jnp.full((FLAGS.classes,), pool_size, jnp.int32))
    data = real
    if name == "iid":
        tmodel = teachers.build_teacher_model(config.iid.teacher, FLAGS.classes)
        keys = jax.random.split(jax.random.PRNGKey(3), FLAGS.num_teachers)
        data = {"real": real, "teachers": jax.vmap(lambda k: models.init_model(tmodel, k, shape))(keys)}
    algo = algorithms.get_algorithm(config, model, FLAGS.classes, shape)
    state = algo.init(jax.random.PRNGKey(0), algorithms.init_synthetic(jax.random.PRNGKey(1), real, ipc))
    run = time_step(algo.step, state, data, FLAGS.repeats)
    times, compile_s = run.pop("times"), run.pop("compile_s")
    median = statistics.median(times)
    out = {"benchmark": "distribution_step", "algorithm": case, "ipc": ipc, "impl": "ddjax-jax",
           "channels": FLAGS.channels, "hw": FLAGS.hw, "classes": FLAGS.classes, "width": FLAGS.width,
           "depth": FLAGS.depth, "batch_real": FLAGS.batch_real, "dsa": FLAGS.dsa,
           "median_s": round(median, 4), "min_s": round(min(times), 4), "repeats": FLAGS.repeats,
           "compile_s": round(compile_s, 2), **run}
    if name == "iid":
        out.update(teacher=FLAGS.teacher, teacher_width=FLAGS.teacher_width, num_teachers=FLAGS.num_teachers)
    if out.get("flops"):
        out["gflops_per_s"] = round(out["flops"] / median / 1e9, 2)
    out.update(jax=jax.__version__, backend=jax.default_backend(), devices=jax.device_count(),
               machine=platform.machine(), date=time.strftime("%Y-%m-%d"))
    return out


def main(argv):
    del argv
    for ipc in FLAGS.ipcs:
        for case in FLAGS.algorithms:
            print(json.dumps(bench(case, int(ipc))), flush=True)


if __name__ == "__main__":
    app.run(main)
