"""XLA FLOPs and memory of one outer step at paper scale, without running it (docs/scaling.md's table).

    python benchmarks/bench_scaling.py --cases=dm_cifar10_ipc50,mtt_cifar10_ipc10

Every input is a ``jax.ShapeDtypeStruct`` (nothing is allocated, so ImageNet-scale pools fit any machine):
``jax.jit(step).lower(state, data)`` gives the FLOPs (``Lowered.cost_analysis``: the program before XLA's
optimisations; trajectory matching is lowered fully unrolled there, since XLA counts a rolled loop body once) and
``.compile()`` the memory (``memory_analysis``: temporaries + arguments on ONE device of this backend; trajectory
matching compiled as a rolled scan, the GPU/TPU default). One JSON line per case. The stand-in real pool holds
``batch_real`` images per class (the step's memory does not depend on the pool size beyond the pool itself,
reported separately as ``pool_bytes``).
"""
from __future__ import annotations

import json
import math
import re
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from ddjax import algorithms, experts, models
from launch.config import base_config

#: name -> (algorithm, classes, hw, channels, ipc, depth, step settings). Settings follow the papers' tables
#: (DM: batch_real 256, ConvNet-3/4; MTT: N syn_steps on the whole set or ``batch_syn``); see docs/scaling.md.
CASES = {
    "dm_cifar10_ipc50": ("dm", 10, 32, 3, 50, 3, {"batch_real": 256}),
    "dm_cifar100_ipc50": ("dm", 100, 32, 3, 50, 3, {"batch_real": 256}),
    "dm_tinyimagenet_ipc50": ("dm", 200, 64, 3, 50, 4, {"batch_real": 256}),
    "mtt_cifar10_ipc10": ("mtt", 10, 32, 3, 10, 3, {"syn_steps": 30, "batch_syn": 0}),
    "mtt_cifar10_ipc50": ("mtt", 10, 32, 3, 50, 3, {"syn_steps": 30, "batch_syn": 0}),
    "mtt_tinyimagenet_ipc10": ("mtt", 200, 64, 3, 10, 4, {"syn_steps": 20, "batch_syn": 0}),
    "satm_cifar10_ipc10": ("satm", 10, 32, 3, 10, 3, {"syn_steps": 30, "batch_syn": 0}),
    # DIDD on R-MNIST (Table 6): 128 real images per class, IPC 10 with multi-formation factor 2; both branches of
    # the step's lax.cond (domain 1 / later domains) are in the program. At MNIST's 28×28, as recorded in
    # docs/scaling.md (§5.1.2 resizes to 32×32: 1.31× the pixels).
    "didd_rmnist_ipc10": ("didd", 10, 28, 1, 10, 3, {"batch_real": 128, "factor": 2, "init_mix": False}),
}
flags.DEFINE_list("cases", list(CASES), "Which cases (names in CASES).")
flags.DEFINE_bool("compile", True, "Also compile for memory_analysis (slow for big cases on CPU).")
flags.DEFINE_string("dsa", "color_crop_cutout_flip_scale_rotate", "DSA strategy of the step ('none': off).")
flags.DEFINE_bool("remat", False, "Trajectory matching: rematerialise the differentiated inner steps "
                  "(config.<mtt|satm>.remat).")
flags.DEFINE_integer("mesh_devices", 0, "Also compile over a data mesh of this many devices (simulated CPU devices: "
                     "XLA_FLAGS=--xla_force_host_platform_device_count=N) and report the per-device FLOPs and "
                     "memory of the partitioned program and its collective bytes.")
FLAGS = flags.FLAGS
#: algorithms whose step takes a per-class real batch (RealPool) rather than expert trajectories
REAL_BATCH = ("dm", "didd")


def _abstract(tree):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x)), tree)


#: ``%name = RESULT kind(``; RESULT one shape or a tuple of them (XLA combines a step's gradient all-reduces into one
#: tuple-shaped op: the first version of this pattern took only single shapes and reported MTT's as none)
_COLLECTIVE = re.compile(r"=\s*(\([^()]*\)|\S+?)\s+(all-reduce|all-gather|reduce-scatter|all-to-all|collective-permute)"
                         r"(?:-start)?\(")
_SHAPE = re.compile(r"(f32|f16|bf16|s32|u32|pred|f64|s64|u8|s8)\[([0-9,]*)\]")
_BYTES = {"f32": 4, "f16": 2, "bf16": 2, "s32": 4, "u32": 4, "pred": 1, "f64": 8, "s64": 8, "u8": 1, "s8": 1}


def collective_bytes(hlo: str) -> dict:
    """Bytes produced per device by each kind of collective in an optimised HLO module (a loop body counts once)."""
    out: dict = {}
    for result, kind in _COLLECTIVE.findall(hlo):
        size = sum(_BYTES[t] * math.prod(int(d) for d in dims.split(",") if d) for t, dims in _SHAPE.findall(result))
        out[kind] = out.get(kind, 0) + size
    return out


def build(name: str, unroll: bool, mesh=None):
    """(step, abstract state, abstract data) of case ``name``; ``unroll``: trajectory inner loop fully unrolled."""
    algorithm, classes, hw, channels, ipc, depth, settings = CASES[name]
    shape = (hw, hw, channels)
    config = base_config(algorithm)
    config.ipc = ipc
    config.dsa_strategy = FLAGS.dsa
    hp = config[algorithm]
    for key, value in settings.items():
        hp[key] = value
    model = models.build_model("convnet", classes, width=128, depth=depth)
    labels = jnp.repeat(jnp.arange(classes, dtype=jnp.int32), ipc)
    synthetic = algorithms.SyntheticSet(images=jax.ShapeDtypeStruct((classes * ipc,) + shape, jnp.float32),
                                        labels=labels)
    if algorithm in REAL_BATCH:
        data = algorithms.RealPool(jax.ShapeDtypeStruct((classes, hp.batch_real) + shape, jnp.float32),
                                   jax.ShapeDtypeStruct((classes,), jnp.int32))
    else:
        hp.expert_epochs, hp.max_start_epoch = 2, 2
        hp.scan_unroll = hp.syn_steps if unroll else 1
        hp.remat = FLAGS.remat
        init = jax.eval_shape(lambda: models.init_model(model, jax.random.PRNGKey(0), shape)["params"])
        data = experts.ExpertBuffer(params=jax.tree.map(
            lambda p: jax.ShapeDtypeStruct((2, 5) + p.shape, p.dtype), init))
    algo = algorithms.get_algorithm(config, model, classes, shape, mesh=mesh)
    state = jax.eval_shape(algo.init, jax.random.PRNGKey(0), synthetic)
    return algo.step, state, data


def measure(name: str) -> dict:
    algorithm, classes, hw, channels, ipc, depth, settings = CASES[name]
    t = time.perf_counter()
    step, state, data = build(name, unroll=True)
    cost = jax.jit(step).lower(state, data).cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    row = {"case": name, "algorithm": algorithm, "classes": classes, "image": [hw, hw, channels], "ipc": ipc,
           "convnet_depth": depth, **settings, "remat": FLAGS.remat if algorithm not in REAL_BATCH else None,
           "dsa": FLAGS.dsa, "flops": float(cost["flops"]) if cost and "flops" in cost else None,
           "lower_s": round(time.perf_counter() - t, 1)}
    leaves = jax.tree.leaves(data)
    row["data_bytes"] = int(sum(math.prod(x.shape) * np.dtype(x.dtype).itemsize for x in leaves))
    row["state_bytes"] = int(sum(math.prod(x.shape) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(state)))
    if FLAGS.compile:
        t = time.perf_counter()
        step, state, data = build(name, unroll=False)
        mem = jax.jit(step).lower(state, data).compile().memory_analysis()
        row.update(temp_bytes=int(mem.temp_size_in_bytes), argument_bytes=int(mem.argument_size_in_bytes),
                   compile_s=round(time.perf_counter() - t, 1))
    if FLAGS.mesh_devices > 1:
        from ddjax.sharding import make_mesh
        t = time.perf_counter()
        step, state, data = build(name, unroll=False, mesh=make_mesh(jax.devices()[:FLAGS.mesh_devices]))
        compiled = jax.jit(step).lower(state, data).compile()
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        mem = compiled.memory_analysis()
        row.update(mesh_devices=FLAGS.mesh_devices, mesh_flops_per_device=float(cost.get("flops", float("nan"))),
                   mesh_temp_bytes=int(mem.temp_size_in_bytes), collective_bytes=collective_bytes(compiled.as_text()),
                   mesh_compile_s=round(time.perf_counter() - t, 1))
    row.update(backend=jax.default_backend(), machine=platform.machine(), jax=jax.__version__)
    return row


def main(argv):
    del argv
    for name in FLAGS.cases:
        print(json.dumps(measure(name)), flush=True)


if __name__ == "__main__":
    app.run(main)
