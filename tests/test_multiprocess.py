"""Multi-process runs (launch.distributed, docs/scaling.md): two `python -m launch.main` processes on 127.0.0.1, each
with 4 simulated CPU devices (one 8-device global mesh, gloo collectives), against a 1-process 8-device run in
this process.

* DM: the 2-process run is killed mid-run (SIGKILL to process 0, the coordinator and checkpoint finaliser); process 1
  must stop with JAX's error within a bounded time, the last finalised checkpoint must be intact, and rerunning
  both commands must resume from it and end with the 1-process run's synthetic set (within 1e-5). The final
  2-process checkpoint is then restored in this process onto one device and onto 8 devices (resharding).
* SATM: a 2-process run (experts made here first, shared through ``pretrained_dir``) ends with the 1-process set.
* Evaluation seeds over the global mesh (``tests/mp_seeds_worker.py``): each process trains its own block of seeds
  and both end with the networks one device trains.

Every subprocess shares one persistent compilation cache (``JAX_COMPILATION_CACHE_DIR``), so the resumed run
loads the killed run's executables instead of compiling again. The runs distil only (``eval.num_seeds=0``).
Nothing here is skipped: gloo (jax 0.10.2's default CPU collectives) runs cross-process collectives on any
Linux/macOS machine.
"""
import io
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from launch.checkpoint import Checkpointer
from launch.run import run
from repo_files import REPO, load_module
HEARTBEAT = 60   # seconds: --heartbeat_timeout_seconds of the subprocesses (10 s lost a starved process on a
#                  machine loaded 7x its cores)


def dm_overrides(steps: int) -> dict:
    """dm_tiny shrunk to seconds: width 8, depth 2, ipc 2, no augmentation, distil only (eval.num_seeds=0: no
    evaluation programs to compile, which were most of a tiny run's compile time)."""
    return {"steps": steps, "checkpoint_every": 3, "keep_checkpoints": 2, "log_every": 1, "ipc": 2,
            "model.width": 8, "model.depth": 2, "dm.batch_real": 16, "dsa_strategy": "none", "eval.every": 0,
            "eval.num_seeds": 0, "eval.epochs": 1, "eval.batch_size": 64, "eval.random_real": False,
            "eval.dsa_strategy": "none"}


def satm_overrides(pretrained: str) -> dict:
    """satm_tiny shrunk the same way: 3 unrolled steps over 2 tiny experts of 3 epochs."""
    return {"steps": 3, "checkpoint_every": 3, "log_every": 1, "ipc": 2, "model.width": 8, "dsa_strategy": "none",
            "satm.syn_steps": 3, "satm.expert_epochs": 1, "satm.max_start_epoch": 2, "satm.batch_syn": 8,
            "satm.scan_unroll": 1, "satm.experts.num_experts": 2, "satm.experts.epochs": 3,
            "satm.experts.batch_size": 128, "pretrained_dir": pretrained, "eval.every": 0, "eval.num_seeds": 0,
            "eval.epochs": 1, "eval.batch_size": 64, "eval.random_real": False, "eval.dsa_strategy": "none"}


def config_of(name: str, overrides: dict):
    """configs/<name>.py's config with ``overrides`` applied, as ``--config.<field>=<value>`` would."""
    module = load_module(f"configs/{name}.py")
    config = module.get_config()
    for path, value in overrides.items():
        *parents, leaf = path.split(".")
        node = config
        for p in parents:
            node = node[p]
        node[leaf] = value
    return config


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_pair(name: str, overrides: dict, workdir: str, logs: str, cache: str) -> list:
    """Start the two processes of one run; their stdout+stderr go to ``<logs>.<i>``."""
    port = free_port()
    flags = f"--xla_force_host_platform_device_count=4 {os.environ.get('DDJAX_TEST_COMPILE_FLAGS', '')}"
    env = {**os.environ, "XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu",
           "JAX_COMPILATION_CACHE_DIR": cache, "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
    args = [f"--config.{k}={v}" for k, v in overrides.items()]
    procs = []
    for i in range(2):
        log = open(f"{logs}.{i}", "w")
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "launch.main", f"--config=configs/{name}.py", f"--workdir={workdir}",
             f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2", f"--process_id={i}",
             f"--heartbeat_timeout_seconds={HEARTBEAT}", *args], cwd=REPO, env=env, stdout=log,
            stderr=subprocess.STDOUT))
    return procs


def wait_ok(procs: list, logs: str, timeout: float = 300) -> None:
    for i, p in enumerate(procs):
        rc = p.wait(timeout=timeout)
        assert rc == 0, f"process {i} exited with {rc}:\n" + open(f"{logs}.{i}").read()[-3000:]


def images(workdir) -> np.ndarray:
    return np.load(os.path.join(workdir, "synthetic.npz"))["images"]


def restore_on(workdir, step: int, sharding) -> dict:
    """Checkpoint ``step`` of ``workdir`` restored with every array on ``sharding`` (the launcher's
    Checkpointer.restore, with the saved tree's shapes as the target)."""
    meta = ocp.StandardCheckpointer().metadata(os.path.join(workdir, "checkpoints", str(step), "state"))
    tree = meta.item_metadata.tree
    abstract = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=sharding), tree)
    checkpointer = Checkpointer(workdir, 2)
    try:
        return checkpointer.restore(step, abstract)[0]
    finally:
        checkpointer.close()


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> str:
    """One persistent compilation cache for every subprocess of this file: the resumed DM run loads the killed
    run's step."""
    return str(tmp_path_factory.mktemp("jax_cache"))


def test_dm_two_processes_kill_resume_equal_one_process(tmp_path, cache):
    steps = 30
    overrides = dm_overrides(steps)
    workdir, logs = str(tmp_path / "mp"), str(tmp_path / "mp_a")
    procs = launch_pair("dm_tiny", overrides, workdir, logs, cache)
    killed = {}

    def kill_after_first_checkpoint():   # a finalised checkpoint is a folder named by its step (orbax renames)
        ckpt = os.path.join(workdir, "checkpoints", "3")
        while not os.path.isdir(ckpt) and procs[0].poll() is None:
            time.sleep(0.02)
        procs[0].send_signal(signal.SIGKILL)
        killed["at"] = time.perf_counter()
        killed["rc"] = procs[1].wait(timeout=HEARTBEAT + 60)
        killed["stopped_after"] = time.perf_counter() - killed["at"]

    killer = threading.Thread(target=kill_after_first_checkpoint)
    killer.start()
    # the 1-process 8-device reference, while the pair compiles
    reference = run(config_of("dm_tiny", {**overrides, "checkpoint_every": 1000}), str(tmp_path / "ref"),
                    stream=io.StringIO())
    killer.join(timeout=400)
    rc, stopped_after = killed["rc"], killed["stopped_after"]
    log1 = open(f"{logs}.1").read()
    assert procs[0].wait() == -signal.SIGKILL
    assert not os.path.exists(os.path.join(workdir, "results.json")), "the run ended before the kill"
    # process 1 is stopped by JAX (LOG(FATAL), SIGABRT): at once as the coordinator died, at most one heartbeat later
    assert rc != 0 and stopped_after < HEARTBEAT + 20, (rc, stopped_after, log1[-2000:])
    assert "another task died" in log1 or "coordination service" in log1, log1[-2000:]

    last = Checkpointer(workdir, 2).latest_step()
    assert last is not None and 3 <= last < steps
    intact = restore_on(workdir, last, jax.sharding.SingleDeviceSharding(jax.devices()[0]))
    assert int(intact["step"]) == last

    # the rerun checkpoints only at the end (checkpoint_every may change on resume): orbax saves cost CPU
    procs = launch_pair("dm_tiny", {**overrides, "checkpoint_every": 1000}, workdir, str(tmp_path / "mp_b"), cache)
    wait_ok(procs, str(tmp_path / "mp_b"))
    assert f"resuming from step {last}" in open(str(tmp_path / "mp_b") + ".0").read()
    assert reference["steps"] == steps
    np.testing.assert_allclose(images(workdir), images(tmp_path / "ref"), atol=1e-5, rtol=0)

    # the 2-process checkpoint onto other device counts: one device, and replicated over this process's 8
    mesh = jax.sharding.Mesh(np.asarray(jax.devices()), ("data",))
    for sharding in (jax.sharding.SingleDeviceSharding(jax.devices()[0]),
                     jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())):
        state = restore_on(workdir, steps, sharding)
        assert state["synthetic"]["images"].sharding == sharding
        np.testing.assert_allclose(np.asarray(state["synthetic"]["images"]), images(tmp_path / "ref"), atol=1e-5,
                                   rtol=0)


def test_satm_two_processes_equal_one_process(tmp_path, cache):
    overrides = satm_overrides(str(tmp_path / "pretrained"))
    run(config_of("satm_tiny", overrides), str(tmp_path / "ref"), stream=io.StringIO())   # makes the experts
    logs = str(tmp_path / "mp")
    procs = launch_pair("satm_tiny", overrides, str(tmp_path / "mp"), logs, cache)
    wait_ok(procs, logs)
    assert "making experts" not in open(f"{logs}.0").read()
    np.testing.assert_allclose(images(tmp_path / "mp"), images(tmp_path / "ref"), atol=1e-5, rtol=0)
    lr = [float(np.load(os.path.join(d, "synthetic.npz"))["lr"]) for d in (tmp_path / "mp", tmp_path / "ref")]
    assert lr[0] == pytest.approx(lr[1], abs=1e-7)


def test_evaluation_seeds_split_over_two_processes(tmp_path):
    """Issue 15: K = 8 seeds over 2 processes × 4 devices train one seed a device (each process traces its program
    with 1 seed per device, not 2 as when every process trained all 8 on its own 4 devices); K = 3 pads process
    1's block; both processes return all K results, equal to one device's (``map_over_seeds`` and the evaluator's
    ``train_networks``)."""
    from test_evaluate import make_data

    from ddjax import evaluate
    from ddjax.models import ConvNet
    x, y = make_data(24, 1)
    np.savez(tmp_path / "data.npz", x=x, y=y)
    port = free_port()
    env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": os.environ.get("DDJAX_SUITE_CACHE", str(tmp_path / "c"))}
    procs = [subprocess.Popen([sys.executable, os.path.join(REPO, "tests", "mp_seeds_worker.py"),
                               f"127.0.0.1:{port}", str(i), str(tmp_path / "data.npz"), str(tmp_path / "out")],
                              cwd=REPO, env=env, stdout=open(tmp_path / f"log.{i}", "w"), stderr=subprocess.STDOUT)
             for i in range(2)]
    wait_ok(procs, str(tmp_path / "log"))
    one = evaluate.train_networks(jax.random.split(jax.random.key(5), 3), ConvNet(4, width=8, depth=2), x, y,
                                  num_seeds=3, epochs=4, batch_size=16)
    for i in range(2):
        out = np.load(tmp_path / f"out.{i}.npz")
        assert out["traced"].tolist() == [1, 1]   # K = 8: 4 seeds a process, 1 a device; K = 3: 2, 1 a device
        for k in (8, 3):
            np.testing.assert_array_equal(out[f"double_{k}"], 2 * np.arange(k * 2.0).reshape(k, 2) + 1)
        for j, leaf in enumerate(jax.tree.leaves(one)):
            np.testing.assert_allclose(out[f"trained_{j}"], np.asarray(leaf), rtol=1e-5, atol=1e-5)
