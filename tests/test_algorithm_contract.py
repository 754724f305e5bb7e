"""The contract every registered algorithm keeps (like optax's ``alias_test`` over its optimiser table).

For every entry of ``ddjax.algorithms.REGISTRY`` on a tiny problem (3 classes of 8x8x1 digits-shaped images, a
width-8 ConvNet, IPC 2, a few rounds): ``init``, then two jitted ``step`` calls of which the second must not
retrace (``chex.assert_max_traces``), an unchanged state tree and dtypes, finite scalar metrics, and a state that
round-trips an orbax checkpoint (``launch.checkpoint``) exactly. A new algorithm gets tested by adding one line to
:data:`TINY`; a registry entry without one fails with the line to add.
"""
from __future__ import annotations

import tempfile
import types
from typing import Any, Callable, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ddjax import algorithms, experts, models, teachers
from launch.checkpoint import Checkpointer
from launch.config import base_config

K, IPC, SHAPE = 3, 2, (8, 8, 1)
PER_CLASS = (12, 10, 11)


class Tiny(NamedTuple):
    """One algorithm's tiny problem: ``overrides`` (dotted config paths -> values) on ``base_config(name)``, and
    ``data(config, pool, model)``: the step's second argument (None: the ``RealPool``; what ``Entry.prepare``
    would load or train, made here from random networks)."""
    overrides: dict
    data: Callable[[Any, algorithms.RealPool, Any], Any] | None = None


def _expert_buffer(config, pool, model) -> experts.ExpertBuffer:
    """Two 'experts' of 3 snapshots each: a random walk from the model's initialisation (training does not matter
    for the contract)."""
    init = models.init_model(model, jax.random.PRNGKey(0), SHAPE)["params"]
    leaves, tree = jax.tree.flatten(init)
    keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
    walk = [p[None, None] + jnp.cumsum(0.05 * jax.random.normal(k, (2, 3) + p.shape), axis=1)
            for p, k in zip(leaves, keys)]
    return experts.ExpertBuffer(params=jax.tree.unflatten(tree, walk))


def _teacher_pool(config, pool, model) -> dict:
    """IID's data: the real pool and two randomly initialised teachers, stacked."""
    tmodel = teachers.build_teacher_model(config.iid.teacher, K)
    stacked = jax.vmap(lambda k: models.init_model(tmodel, k, SHAPE))(jax.random.split(jax.random.PRNGKey(7), 2))
    return {"real": pool, "teachers": stacked}


def _squeeze_data(config, pool, model):
    """SRe2L/RDED/DTL's data: ``Entry.prepare`` trains a 3-step squeeze model of width 2 on the pool (stored in a
    temporary pretrained store, removed afterwards), as the launcher would."""
    counts = np.asarray(pool.counts)
    images = np.concatenate([np.asarray(pool.images[c, :n]) for c, n in enumerate(counts)])
    labels = np.repeat(np.arange(K), counts).astype(np.int32)
    dataset = types.SimpleNamespace(name="toy", num_classes=K, image_shape=SHAPE, train_images=images,
                                    train_labels=labels, mean=np.full(1, 0.5, np.float32),
                                    std=np.full(1, 0.25, np.float32))
    with tempfile.TemporaryDirectory(prefix="ddjax-contract-") as store:   # only prepare reads the store
        config.pretrained_dir = store
        return algorithms.prepare_data(config, dataset, pool)


_SQUEEZE = {"squeeze.width": 2, "squeeze.steps": 3, "relabel.views": 2}
_DC = {"batch_real": 4, "outer_loop": 2, "inner_loop": 1, "batch_train": 4}
_TRAJECTORY = {"syn_steps": 2, "expert_epochs": 1, "max_start_epoch": 1, "batch_syn": 4, "scan_unroll": 1,
               "experts.num_experts": 2}

#: One line per registered algorithm. Keep them tiny: this file compiles every algorithm once.
TINY: dict[str, Tiny] = {
    "dm": Tiny({"dm.batch_real": 4}),
    "dc": Tiny({f"dc.{k}": v for k, v in _DC.items()}),
    "dsa": Tiny({**{f"dsa.{k}": v for k, v in _DC.items()}, "dsa_strategy": "color_crop"}),
    "idc": Tiny({"idc.batch_real": 4, "idc.inner_loop": 2, "idc.n_data": 8, "idc.net_batch": 4,
                 "idc.batch_syn_max": 4}),
    "dream": Tiny({"dream.idc.batch_real": 4, "dream.idc.inner_loop": 2, "dream.idc.n_data": 8,
                   "dream.idc.net_batch": 4, "dream.interval": 1, "dream.kmeans_iters": 3}),
    "m3d": Tiny({"m3d.batch_real": 4}),
    "idm": Tiny({"idm.batch_real": 4, "idm.queue_size": 2, "idm.train_steps": 0, "idm.new_every": 1}),
    "iid": Tiny({"iid.batch_real": 4, "iid.teacher.model": "convnet", "iid.teacher.width": 8,
                 "iid.teacher.depth": 1, "iid.teacher.num_teachers": 2}, _teacher_pool),
    "mtt": Tiny({f"mtt.{k}": v for k, v in _TRAJECTORY.items()}, _expert_buffer),
    "satm": Tiny({**{f"satm.{k}": v for k, v in _TRAJECTORY.items()}, "satm.truncate": 1, "satm.ema_decay": 0.9},
                 _expert_buffer),
    "sre2l": Tiny({**{f"sre2l.{k}": v for k, v in _SQUEEZE.items()}, "sre2l.iterations": 2,
                   "steps": 2}, _squeeze_data),
    "rded": Tiny({**{f"rded.{k}": v for k, v in _SQUEEZE.items()}, "rded.mipc": 4, "steps": 1}, _squeeze_data),
    "dtl": Tiny({**{f"dtl.{k}": v for k, v in _SQUEEZE.items()}, "dtl.iterations": 2, "dtl.steps_per_visit": 1,
                 "steps": 2, "dtl.psi_width": 2, "dtl.psi_res_blocks": 1}, _squeeze_data),
    "didd": Tiny({"didd.batch_real": 4, "didd.lr_img": 1.0}),
}


def tiny_config(name: str):
    """``base_config(name)`` with the shared tiny settings and ``TINY[name]``'s overrides."""
    if name not in TINY:
        pytest.fail(f"algorithm {name!r} is in ddjax.algorithms.REGISTRY but has no tiny config: add a line "
                    f"TINY[{name!r}] = Tiny({{...}}) to tests/test_algorithm_contract.py")
    config = base_config(name)
    config.ipc = IPC
    config.dsa_strategy = "none"
    config.model.width, config.model.depth = 8, 1
    for path, value in TINY[name].overrides.items():
        *parents, last = path.split(".")
        node = config
        for p in parents:
            node = node[p]
        node[last] = value
    return config


def tiny_problem(name: str):
    """``(algorithm, state after init, the step's data)`` for ``name``'s tiny config."""
    config = tiny_config(name)
    rng = np.random.default_rng(0)
    labels = np.concatenate([np.full(n, c) for c, n in enumerate(PER_CLASS)])
    images = (rng.normal(size=(len(labels),) + SHAPE) + labels[:, None, None, None]).astype(np.float32)
    pool = algorithms.make_real_pool(images, labels, K)
    model = models.build_from_config(config.model, K)
    algo = algorithms.get_algorithm(config, model, K, SHAPE)
    state = algo.init(jax.random.PRNGKey(2), algorithms.init_synthetic(jax.random.PRNGKey(1), pool, IPC))
    make_data = TINY[name].data
    return algo, state, pool if make_data is None else make_data(config, pool, model)


def _signature(tree) -> tuple:
    return jax.tree.structure(tree), [(x.shape, x.dtype) for x in jax.tree.leaves(tree)]


@pytest.mark.parametrize("name", algorithms.ALGORITHM_NAMES)
def test_algorithm_contract(name, tmp_path):
    algo, state, data = tiny_problem(name)
    before = _signature(state)
    chex.clear_trace_counter()  # the counter is keyed by source, shared by every parametrisation

    @jax.jit
    @chex.assert_max_traces(n=1)  # a retrace on the second call raises
    def step(state, data):
        return algo.step(state, data)

    state1, metrics1 = step(state, data)
    state2, metrics2 = step(state1, data)
    assert _signature(state2) == before, "step changed the state's tree, shapes or dtypes"
    assert int(state2.step) == 2
    for metrics in (metrics1, metrics2):
        assert metrics and set(metrics) == set(metrics1)
        for key, value in metrics.items():
            chex.assert_shape(value, ())
            assert np.isfinite(float(value)), f"{name}: metric {key} = {value}"

    checkpointer = Checkpointer(str(tmp_path), max_to_keep=1)
    checkpointer.save(2, state2, {"step": 2})
    checkpointer.manager.wait_until_finished()
    restored, record = checkpointer.restore(2, jax.eval_shape(lambda: state2))
    assert record == {"step": 2}
    assert jax.tree.structure(restored) == jax.tree.structure(state2)
    for got, want in zip(jax.tree.leaves(restored), jax.tree.leaves(state2)):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_tiny_table_names_registered_algorithms():
    assert set(TINY) <= set(algorithms.REGISTRY), f"stale TINY entries: {sorted(set(TINY) - set(algorithms.REGISTRY))}"
