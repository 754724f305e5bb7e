"""One process of tests/test_multiprocess.py::test_evaluation_seeds_split_over_two_processes (not a test file).

    python tests/mp_seeds_worker.py COORDINATOR PROCESS_ID DATA_NPZ OUT_PREFIX

4 simulated CPU devices per process, 2 processes: one 8-device global mesh. Writes ``OUT_PREFIX.<id>.npz`` with
what ``ddjax.sharding.map_over_seeds`` returned on this process and the per-device seed count each program was
traced with, and the networks ``ddjax.evaluate.train_networks`` trained over the global mesh.
"""
import os
import sys

# the suite's compile switches (tests/conftest.py) beside this process's 4 devices
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4 " + os.environ.get("DDJAX_TEST_COMPILE_FLAGS", "")
os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402
import numpy as np  # noqa: E402

from ddjax import evaluate  # noqa: E402
from ddjax.models import ConvNet  # noqa: E402
from ddjax.sharding import make_mesh, map_over_seeds  # noqa: E402

coordinator, process_id, data_path, out = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
jax.distributed.initialize(coordinator, 2, process_id, heartbeat_timeout_seconds=60)
mesh = make_mesh()   # all 8 devices of both processes
assert len(mesh.devices.flat) == 8 and jax.local_device_count() == 4
traced = []


def double_plus(x, offset):   # records the per-device seed count each time it is traced
    traced.append(x.shape[0])
    return 2 * x + offset


results = {}
for k in (8, 3):   # 8: one seed a device, no padding; 3: process 1's block is seed 2 and a padded copy of it
    per_seed = np.arange(k * 2, dtype=np.float32).reshape(k, 2)
    results[f"double_{k}"] = np.asarray(map_over_seeds(double_plus, mesh, (per_seed,), (np.float32(1),)))
data = np.load(data_path)
trained = evaluate.train_networks(jax.random.split(jax.random.key(5), 3), ConvNet(4, width=8, depth=2),
                                  data["x"], data["y"], num_seeds=3, epochs=4, batch_size=16, mesh=mesh)
for i, leaf in enumerate(jax.tree.leaves(trained)):
    results[f"trained_{i}"] = np.asarray(leaf)
np.savez(f"{out}.{process_id}.npz", traced=np.asarray(traced), **results)
