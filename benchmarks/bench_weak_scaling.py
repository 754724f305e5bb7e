"""Weak scaling of the DM and MTT outer steps over 1/2/4/8 devices and over 1 vs 2 processes (issue 15).

    python benchmarks/bench_weak_scaling.py                       # both algorithms, 1/2/4/8 devices, 1 vs 2 processes
    python benchmarks/bench_weak_scaling.py --algorithms=dm --devices=1,8 --processes=0

Weak scaling: the work per device is fixed and the step grows with the device count ``n``: DM's real batch is
``dm_batch_per_device · n`` images per class, MTT's synthetic minibatch ``mtt_batch_per_device · n`` images (the
axes each family splits over the ``data`` mesh). For each ``n`` the same step is timed twice: over a ``data`` mesh
of ``n`` devices (``seconds``), and on ONE device (``seconds_one_device``, the same total work unsplit), with

* ``efficiency = seconds(n = 1) / seconds(n)``: the usual weak-scaling efficiency (1.0 = perfect), meaningful on
  devices that compute in parallel (GPU/TPU chips). Simulated CPU devices share the host's cores, so on a CPU it
  falls with ``n`` however good the partitioning is;
* ``overhead = seconds(n) / seconds_one_device(n)``: what splitting the same work over ``n`` devices costs or saves
  (collectives, padding, per-device dispatch) — the number that a CPU can measure;
* ``collective_bytes``: bytes each device produces per step in all-reduce / all-gather / ... (the optimised HLO,
  a loop body counted once; :func:`benchmarks.bench_scaling.collective_bytes`), and ``flops_per_device``.

``--processes=2`` also runs the largest ``n`` as 2 processes × ``n/2`` simulated devices on 127.0.0.1 (this script
as its own workers, ``jax.distributed`` with gloo collectives) and reports its step time beside the 1-process
``n``-device one. Each configuration is compiled once and timed over ``--repeats`` calls after a warm-up (median).
Simulated CPU devices come from ``XLA_FLAGS=--xla_force_host_platform_device_count`` (set here to the largest
``n`` when not already set, before jax is imported). One JSON line per row.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--algorithms", default="dm,mtt", help="comma-separated: dm, mtt")
    p.add_argument("--devices", default="1,2,4,8", help="comma-separated device counts n")
    p.add_argument("--processes", type=int, default=2, help="also time the largest n over this many processes "
                   "(0: skip)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--hw", type=int, default=32)
    p.add_argument("--channels", type=int, default=3)
    p.add_argument("--ipc", type=int, default=10)
    p.add_argument("--width", type=int, default=64, help="ConvNet-3 width")
    p.add_argument("--dm_batch_per_device", type=int, default=32, help="DM real images per class per device")
    p.add_argument("--mtt_batch_per_device", type=int, default=8, help="MTT synthetic images per device")
    p.add_argument("--mtt_syn_steps", type=int, default=10)
    p.add_argument("--dsa", default="color_crop_cutout_flip_scale_rotate",
                   help="DSA strategy of the step (the papers' default; 'none': off)")
    p.add_argument("--out", default="", help="also append the JSON lines to this file")
    # internal: one process of a multi-process row
    p.add_argument("--worker", default="", help=argparse.SUPPRESS)      # "COORDINATOR,NUM_PROCESSES,PROCESS_ID"
    p.add_argument("--worker_algorithm", default="", help=argparse.SUPPRESS)
    p.add_argument("--worker_n", type=int, default=0, help=argparse.SUPPRESS)
    return p.parse_args(argv)


ARGS = parse_args()
if not ARGS.worker:
    os.environ.setdefault("XLA_FLAGS",
                          f"--xla_force_host_platform_device_count={max(int(d) for d in ARGS.devices.split(','))}")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import common  # noqa: E402
from benchmarks.bench_scaling import collective_bytes  # noqa: E402
from ddjax import algorithms, experts, models  # noqa: E402
from ddjax.sharding import jit_step, make_mesh, replicate  # noqa: E402
from launch.config import base_config  # noqa: E402


def build(algorithm: str, n: int, mesh, args: argparse.Namespace):
    """(step, state, data) of the weak-scaling step for ``n`` devices' worth of work, laid out on ``mesh`` (the
    data's real pool split over processes as the launcher does, ``launch.distributed.real_pool``)."""
    from launch import distributed

    shape = (args.hw, args.hw, args.channels)
    k = args.classes
    config = base_config(algorithm)
    config.ipc = args.ipc
    config.dsa_strategy = args.dsa
    model = models.build_model("convnet", k, width=args.width, depth=3)
    rng = np.random.default_rng(0)
    hp = config[algorithm]
    if algorithm == "dm":
        hp.batch_real = args.dm_batch_per_device * n
        images = rng.normal(size=(k * hp.batch_real,) + shape).astype(np.float32)
        labels = np.repeat(np.arange(k), hp.batch_real)
        data = distributed.real_pool(images, labels, k, mesh)
        real = algorithms.make_real_pool(images, labels, k)
    else:
        hp.syn_steps = args.mtt_syn_steps
        hp.batch_syn = args.mtt_batch_per_device * n
        hp.expert_epochs, hp.max_start_epoch = 2, 2
        if hp.batch_syn > k * args.ipc:
            raise SystemExit(f"--mtt_batch_per_device={args.mtt_batch_per_device} x {n} devices exceeds the "
                             f"{k * args.ipc} synthetic images; lower it or raise --ipc")
        params = models.init_model(model, jax.random.PRNGKey(1), shape)["params"]
        buffer = experts.ExpertBuffer(params=jax.tree.map(
            lambda p: jnp.stack([jnp.stack([p + 0.01 * e * jnp.ones_like(p) for e in range(5)])] * 2), params))
        data = replicate(buffer, mesh)
        real = algorithms.make_real_pool(rng.normal(size=(k * args.ipc,) + shape).astype(np.float32),
                                         np.repeat(np.arange(k), args.ipc), k)
    algo = algorithms.get_algorithm(config, model, k, shape, mesh=mesh)
    synthetic = algorithms.init_synthetic(jax.random.PRNGKey(2), real, args.ipc, "real")
    state = replicate(jax.tree.map(jnp.copy, algo.init(jax.random.PRNGKey(3), synthetic)), mesh)
    return algo.step, state, data


def time_step(algorithm: str, n: int, devices, args: argparse.Namespace) -> dict:
    """The step over a ``data`` mesh of ``devices``, jitted as the launcher does (:func:`ddjax.sharding.jit_step`)
    and timed by :func:`benchmarks.common.time_step`. Returns the median seconds, compile seconds, per-device FLOPs
    and collective bytes."""
    mesh = make_mesh(devices)
    step, state, data = build(algorithm, n, mesh, args)
    def analyse(compiled) -> dict:
        return {**common.xla_analysis(compiled), "collective_bytes": collective_bytes(compiled.as_text())}

    out = common.time_step(step, state, data, args.repeats, jit=lambda f: jit_step(f, mesh), analyse=analyse)
    return {"seconds": statistics.median(out["times"]), "times": [round(x, 4) for x in out["times"]],
            "compile_s": round(out["compile_s"], 1), "flops_per_device": out["flops"],
            "collective_bytes": out["collective_bytes"]}


def worker(args: argparse.Namespace) -> None:
    """One process of a multi-process row: the global mesh over every process's devices; process 0 prints."""
    coordinator, num, pid = args.worker.split(",")
    jax.distributed.initialize(coordinator, int(num), int(pid), heartbeat_timeout_seconds=120)
    row = time_step(args.worker_algorithm, args.worker_n, jax.devices(), args)
    if jax.process_index() == 0:
        print("ROW " + json.dumps(row), flush=True)


def multi_process(algorithm: str, n: int, processes: int, args: argparse.Namespace) -> dict:
    """``n`` devices as ``processes`` processes × ``n / processes`` simulated devices on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={n // processes}",
           "JAX_PLATFORMS": "cpu"}
    passthrough = [a for a in sys.argv[1:] if not a.startswith(("--out", "--worker"))]
    procs = [subprocess.Popen([sys.executable, os.path.abspath(__file__), *passthrough,
                               f"--worker=127.0.0.1:{port},{processes},{i}", f"--worker_algorithm={algorithm}",
                               f"--worker_n={n}"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for i in range(processes)]
    outputs = [p.communicate()[0] for p in procs]
    for i, (p, out) in enumerate(zip(procs, outputs)):
        if p.returncode != 0:
            raise SystemExit(f"worker {i} exited with {p.returncode}:\n{out[-3000:]}")
    row = [line for line in outputs[0].splitlines() if line.startswith("ROW ")]
    return json.loads(row[-1][4:])


def main(args: argparse.Namespace) -> None:
    if args.worker:
        worker(args)
        return
    counts = sorted(int(d) for d in args.devices.split(","))
    if counts[-1] > len(jax.devices()):
        raise SystemExit(f"--devices asks for {counts[-1]} devices but jax sees {len(jax.devices())}; set "
                         f"XLA_FLAGS=--xla_force_host_platform_device_count={counts[-1]} (CPU) or lower --devices")
    common = {"backend": jax.default_backend(), "device_kind": jax.devices()[0].device_kind,
              "machine": platform.machine(), "cpus": os.cpu_count(), "jax": jax.__version__,
              "width": args.width, "image": [args.hw, args.hw, args.channels], "classes": args.classes,
              "ipc": args.ipc, "dsa": args.dsa, "date": time.strftime("%Y-%m-%d")}
    rows = []
    for algorithm in args.algorithms.split(","):
        per_device = args.dm_batch_per_device if algorithm == "dm" else args.mtt_batch_per_device
        base = None
        for n in counts:
            split = time_step(algorithm, n, jax.devices()[:n], args)
            one = split if n == 1 else time_step(algorithm, n, jax.devices()[:1], args)
            base = split["seconds"] if n == 1 else base
            row = {"algorithm": algorithm, "devices": n, "processes": 1,
                   "batch": per_device * n, "batch_axis": "real per class" if algorithm == "dm" else "synthetic",
                   **split, "seconds_one_device": one["seconds"],
                   "efficiency": None if base is None else round(base / split["seconds"], 3),
                   "overhead": round(split["seconds"] / one["seconds"], 3), **common}
            if algorithm == "mtt":
                row["syn_steps"] = args.mtt_syn_steps
            rows.append(row)
            print(json.dumps(row), flush=True)
        if args.processes > 1:
            n = counts[-1]
            mp = multi_process(algorithm, n, args.processes, args)
            same = next(r for r in rows if r["algorithm"] == algorithm and r["devices"] == n)
            row = {"algorithm": algorithm, "devices": n, "processes": args.processes, "batch": per_device * n,
                   **mp, "seconds_one_process": same["seconds"],
                   "process_overhead": round(mp["seconds"] / same["seconds"], 3), **common}
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.out:
        with open(args.out, "a") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main(ARGS)
