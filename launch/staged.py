"""A staged run: the generic loop of :mod:`launch.run` over the phases of a plan on a domain collection.

``config.domains.source`` set → :func:`launch.run.run` hands the run to :func:`run_staged`. The plan
(:func:`ddjax.continual.make_plan`, ``config.domains.plan``) is a tuple of phases; ``config.steps`` is the number of
steps PER PHASE, so phase ``k`` (0-based) runs the global steps ``k·S + 1 .. (k+1)·S`` and the phase of any step
follows from the step: a run resumed from any checkpoint, mid-phase or at a boundary, continues exactly as an
uninterrupted run (tested bit for bit). Per phase:

1. its training domains are loaded (:meth:`DomainCollection.load_many`, one Dataset named
   ``<collection>/<domain>+<domain>``) and the algorithm's ``Entry.prepare`` gets them, with ``config.data.name``
   set to that Dataset's name so a teacher, squeeze model or expert made there is stored under what it was trained on;
2. a fresh phase starts from a new synthetic set and ``init`` (keys folded with the phase index); any phase then goes
   through the algorithm's ``Entry.boundary(state, config, phase_index)`` hook (identity when absent);
3. the shared step loop (:func:`launch.run.train_steps`);
4. at the phase end, in this order: ``phases/<k>/synthetic.npz`` (the evaluated view, kept so a gather plan's later
   phases and a resumed run find it), ``images/phase_<k>.png``, the evaluation (K networks trained ONCE on the set
   of the phase's ``eval_sets``, tested on each listed domain's test split), its record in ``metrics.jsonl``, then
   the checkpoint. A checkpoint at a phase end therefore always has its evaluation on disk.
   Every ``metrics.jsonl`` record is mirrored to ``tensorboard/`` (global step numbers; a resume drops the events
   after the restored step, as in :mod:`launch.run`).

``results.json`` is built from the phase records in ``metrics.jsonl`` (so it is whole after any resume):
stream/joint/gather/whole: ``accuracy_matrix`` (row k−1 = after phase k, column t−1 = domain t, seed means), ``A_T``
(eq. 18), ``F_T`` (eq. 19), plus ``accuracy_matrix_std``, ``accuracy_matrix_per_seed``, ``A_curve`` (Aᵗ, Fig. 5),
``A_T_std``/``F_T_std``/``A_T_per_seed``/``F_T_per_seed`` (the metrics of each seed's matrix);
leave_one_out: ``leave_one_out`` (held-out domain → ``{"mean", "std", "per_seed"}``) and ``leave_one_out_mean``.
Pictures: ``accuracy_matrix.png`` (heat map), ``accuracy_curve.png`` (Aᵗ), ``images/phase_<k>.png``, ``curves.png``.
Not in a staged run: ``eval.every`` (evaluations happen at phase ends) and the random-real baseline.

A ``real`` phase (plan ``whole``, DIDD's "Whole data" row) distils nothing: no step runs and no set is saved; the
networks train on the real train splits of its domains (``eval_set_size`` = their number) and the checkpoint at its
end holds the untouched initial state, so the phase still follows from the step and a resume skips finished phases.
No ``synthetic.npz`` is written for such a run.
"""
from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, TextIO

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ddjax import algorithms, continual, evaluate, models
from ddjax.errors import CheckpointError
from ddjax.sharding import jit_step, make_mesh, replicate
from launch import continual_methods, outputs
from launch.checkpoint import CONFIG_FILE, Checkpointer, check_workdir, record_config
from launch.config import config_to_dict
from launch.domains import collection_from_config

__all__ = ["run_staged", "phase_of_step", "train_eval_networks"]

PHASE_RECORD = "phase_accuracy"   # metrics.jsonl key of a phase-end evaluation record


def phase_of_step(step: int, steps_per_phase: int) -> int:
    """The 0-based phase that global step ``step`` (1-based) belongs to."""
    return (int(step) - 1) // int(steps_per_phase)


def train_eval_networks(key: jax.Array, config: ml_collections.ConfigDict, model, images, labels, num_classes: int,
                        lr: float | None = None):
    """``config.eval.num_seeds`` networks trained once on ``(images, labels)`` (the settings of
    :func:`launch.run.evaluate_set`, the seeds split over the devices), to be tested on several domains."""
    e = config.eval
    train_lr = float(lr) if (lr is not None and e.learned_lr) else e.lr
    # The evaluation-protocol fields (config.eval.protocol, cutmix_p) go to train_networks as evaluate_set's do.
    protocol = {name: e[name] for name in ("protocol", "cutmix_p") if name in e}
    return evaluate.train_networks(key, model, np.asarray(images), np.asarray(labels), num_seeds=e.num_seeds,
                                   epochs=e.epochs, lr=train_lr, momentum=e.momentum, weight_decay=e.weight_decay,
                                   batch_size=e.batch_size, dsa_strategy=e.dsa_strategy, num_classes=num_classes,
                                   mesh=make_mesh(), **protocol)


def _phase_config(config: ml_collections.ConfigDict, dataset_name: str) -> ml_collections.ConfigDict:
    """``config`` with ``data.name`` = the phase's Dataset name: what ``Entry.prepare`` keys stored networks by."""
    copy = ml_collections.ConfigDict(config.to_dict())
    copy.data.name = dataset_name
    return copy


def _same_structure(before: Any, after: Any, phase: int, algorithm: str) -> None:
    shapes = lambda tree: [(jnp.shape(x), jnp.result_type(x)) for x in jax.tree.leaves(tree)]  # noqa: E731
    if jax.tree.structure(before) != jax.tree.structure(after) or shapes(before) != shapes(after):
        raise CheckpointError(f"the {algorithm} boundary hook changed the state's structure at phase {phase}; it must "
                              "return a state with the same leaves, shapes and dtypes (allocate them in init)")


class _Phases:
    """Everything one staged run shares between its phases (keeps :func:`run_staged` one screen long)."""

    def __init__(self, config, workdir, stream, collection, plan, model, algo, mesh, writer, progress,
                 checkpointer, elapsed, keys):
        self.config, self.workdir, self.stream, self.collection, self.plan = config, workdir, stream, collection, plan
        self.model, self.algo, self.mesh, self.writer, self.progress = model, algo, mesh, writer, progress
        self.checkpointer, self.elapsed, self.keys = checkpointer, elapsed, keys
        self.step_fn = jit_step(algo.step, mesh)

    def data(self, k: int):
        """``(Dataset, real pool, step data)`` of phase ``k``'s training domains (no step data for a real phase)."""
        dataset = self.collection.load_many(self.plan[k].train)
        real = replicate(algorithms.make_real_pool(dataset.train_images, dataset.train_labels,
                                                   dataset.num_classes), self.mesh)
        if self.plan[k].real:   # nothing is distilled: Entry.prepare (teachers, experts, ...) is not needed
            return dataset, real, None
        step_data = algorithms.prepare_data(_phase_config(self.config, dataset.name), dataset, real, mesh=self.mesh,
                                            stream=self.stream)
        return dataset, real, replicate(step_data, self.mesh)

    def start_state(self, k: int, previous, real):
        """The state phase ``k`` starts from: a fresh one or ``previous``, through the boundary hook."""
        if self.plan[k].fresh or previous is None:
            k_init, k_state = (jax.random.fold_in(key, k) for key in self.keys[:2])
            synthetic = algorithms.init_synthetic(k_init, real, self.config.ipc, self.config.init)
            previous = replicate(jax.tree.map(jnp.copy, self.algo.init(k_state, synthetic)), self.mesh)
        state = algorithms.boundary(previous, self.config, k)
        _same_structure(previous, state, k, self.config.algorithm)
        return replicate(jax.tree.map(jnp.copy, state), self.mesh)

    def finish(self, k: int, state, end_step: int, dataset) -> None:
        """Phase ``k``'s end: its set on disk, its picture, its evaluation record, then its checkpoint. A real
        phase evaluates ``dataset``'s real train split instead and saves no set."""
        c, phase = self.config, self.plan[k]
        if phase.real:
            self._evaluate(k, end_step, dataset.train_images, dataset.train_labels, None, {})
            self.progress.update(end_step)
            self.checkpointer.save(end_step, state, {"step": end_step, "seconds": self.elapsed(), "phase": k})
            return
        view = algorithms.eval_view(state, c)
        images, labels = np.asarray(view["images"]), np.asarray(view["labels"])
        folder = os.path.join(self.workdir, "phases", str(k))
        learned = {"lr": np.asarray(view["lr"])} if "lr" in view else {}
        pixels = self._to_pixels(images)
        outputs.save_synthetic(os.path.join(folder, "synthetic.npz"), images, labels, pixels=pixels,
                               mean=self.collection.mean, std=self.collection.std, zca=None,
                               class_names=self.collection.class_names, dataset=self.collection.name,
                               config=config_to_dict(c), lr=learned.get("lr"))
        classes = labels if labels.ndim == 1 else labels.argmax(-1)   # soft labels: drawn in their top class
        for name in (f"images/phase_{k}.png", "synthetic.png"):
            outputs.save_image_grid(os.path.join(self.workdir, name), pixels, classes, self.collection.num_classes,
                                    self.collection.class_names)
        summary = {name: np.asarray(value) for name, value in algorithms.summarize(state, c).items()}
        if summary:
            outputs.save_npz_atomic(os.path.join(folder, "summary.npz"), **summary)
        eval_images, eval_labels = self.eval_set(k)
        lr = view.get("lr") if len(phase.eval_sets) == 1 else None   # one learned lr per set: only for one set
        self._evaluate(k, end_step, eval_images, eval_labels, lr, summary)
        self.checkpointer.save(end_step, state, {"step": end_step, "seconds": self.elapsed(), "phase": k})

    def _evaluate(self, k: int, end_step: int, images, labels, lr, summary: dict) -> None:
        """Train the K evaluation networks once on ``(images, labels)``, score them on phase ``k``'s test domains,
        write the phase record."""
        phase = self.plan[k]
        variables = train_eval_networks(jax.random.fold_in(self.keys[2], end_step), self.config, self.model, images,
                                        labels, self.collection.num_classes, lr=lr)
        per_seed = [evaluate.accuracy(self.model, variables, *self.collection.load_test(t)).tolist()
                    for t in phase.evaluate]
        means = [float(np.mean(a)) for a in per_seed]
        self.writer.write(step=end_step, phase=k, train_domains=[self.collection.domains[t] for t in phase.train],
                          eval_domains=[self.collection.domains[t] for t in phase.evaluate], **{PHASE_RECORD: means},
                          phase_accuracy_std=[float(np.std(a)) for a in per_seed], phase_accuracy_per_seed=per_seed,
                          eval_set_size=int(len(labels)),
                          **{name: float(v) for name, v in summary.items() if v.size == 1})
        self.progress.write(f"phase {k + 1}/{len(self.plan)} (step {end_step}): mean accuracy {np.mean(means):.4f} on "
                            f"{len(means)} domain(s)")

    def eval_set(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The images and labels phase ``k`` evaluates: its ``eval_sets`` phases' final sets, concatenated."""
        sets = []
        for j in self.plan[k].eval_sets:
            with np.load(os.path.join(self.workdir, "phases", str(j), "synthetic.npz")) as z:
                sets.append((z["images"], z["labels"]))
        return np.concatenate([s[0] for s in sets]), np.concatenate([s[1] for s in sets])

    def _to_pixels(self, images: np.ndarray) -> np.ndarray:
        mean, std = self.collection.mean, self.collection.std
        return np.clip(images * std + mean, 0.0, 1.0).astype(np.float32)


def _check_steps_per_phase(workdir: str, steps: int) -> None:
    """Refuse to resume with another ``steps``: in a staged run it is the phase length, so the phase of every
    checkpointed step would change (a single-dataset run may extend ``steps`` on resume)."""
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.exists(path):
        return
    with open(path, encoding="utf-8") as f:
        saved = json.load(f).get("steps")
    if saved is not None and saved != steps and os.path.isdir(os.path.join(workdir, "checkpoints")):
        raise CheckpointError(f"workdir {workdir} holds a staged run with steps={saved} per phase; resume it with "
                              f"--config.steps={saved} or choose a new --workdir for steps={steps}")


def run_staged(config: ml_collections.ConfigDict, workdir: str, stream: TextIO | None = None) -> dict:
    """Distil over the phases of ``config.domains.plan``, evaluate after each, write every output to ``workdir``;
    returns the ``results.json`` dict. ``config`` is already validated by :func:`launch.run.run`."""
    from launch.run import build_eval_model, train_steps   # launch.run imports this module

    stream = sys.stderr if stream is None else stream
    started = time.perf_counter()
    config_dict = config_to_dict(config)
    check_workdir(workdir, config_dict)
    _check_steps_per_phase(workdir, config.steps)
    collection = collection_from_config(config)
    plan = continual.make_plan(config.domains.plan, collection.num_domains)
    steps, total = config.steps, config.steps * len(plan)
    mesh = make_mesh()
    model = build_eval_model(config, collection.num_classes)   # trained on the set at every phase end
    distill_model = models.build_from_config(config.model, collection.num_classes)
    algo = algorithms.get_algorithm(config, distill_model, collection.num_classes, collection.image_shape, mesh=mesh)
    keys = jax.random.split(jax.random.PRNGKey(config.seed), 3)   # init, state, eval
    record_config(workdir, config_dict)

    checkpointer = Checkpointer(workdir, config.keep_checkpoints)
    tensorboard = outputs.TensorBoardWriter(os.path.join(workdir, "tensorboard"),
                                            resume_step=checkpointer.latest_step() or 0, stream=stream)
    try:
        metrics_path = os.path.join(workdir, "metrics.jsonl")
        start = checkpointer.latest_step() or 0
        state, previous_seconds = None, 0.0
        if start:
            n = collection.num_classes * config.ipc
            abstract_set = algorithms.SyntheticSet(
                images=jax.ShapeDtypeStruct((n, *collection.image_shape), jnp.float32),
                labels=jax.ShapeDtypeStruct((n,), jnp.int32))
            state, record = checkpointer.restore(start, jax.eval_shape(algo.init, keys[1], abstract_set))
            state, previous_seconds = replicate(state, mesh), float(record.get("seconds", 0.0))
            print(f"resuming from step {start} (phase {phase_of_step(start, steps) + 1}; {checkpointer.directory})",
                  file=stream)
        elif os.path.exists(metrics_path):
            os.remove(metrics_path)   # records of an attempt that died before its first checkpoint
        writer = outputs.MetricsWriter(metrics_path, resume_step=start or None, tensorboard=tensorboard)
        progress = outputs.Progress(total, initial=start, stream=stream, log_every=config.log_every,
                                    desc=f"{config.algorithm} {config.domains.plan}")
        session_start = time.perf_counter()
        elapsed = lambda: previous_seconds + time.perf_counter() - session_start   # noqa: E731
        phases = _Phases(config, workdir, stream, collection, plan, model, algo, mesh, writer, progress,
                         checkpointer, elapsed, keys)
        for k in range(min(start // steps, len(plan)), len(plan)):
            first, last = k * steps + 1, (k + 1) * steps
            dataset, real, step_data = phases.data(k)
            if start < first:   # the phase starts here (a restored state is the previous phase's end)
                state = phases.start_state(k, state, real)
            if not plan[k].real:
                state = train_steps(state, phases.step_fn, step_data, max(first, start + 1), last, config=config,
                                    writer=writer, progress=progress, checkpointer=checkpointer, elapsed=elapsed)
            phases.finish(k, state, last, dataset)
        progress.close()
        writer.close()
        return _results(config, config_dict, workdir, collection, plan, total, elapsed(), started)
    finally:
        tensorboard.close()
        checkpointer.close()


def _final_set(workdir: str, eval_sets: tuple[int, ...]) -> dict[str, np.ndarray]:
    """The last phase's evaluated set (gather: the union of every phase's set) for ``synthetic.npz``."""
    parts = []
    for j in eval_sets:
        with np.load(os.path.join(workdir, "phases", str(j), "synthetic.npz")) as z:
            parts.append({name: z[name] for name in z.files})
    if len(parts) == 1:
        return parts[0]
    union = {name: np.concatenate([p[name] for p in parts]) for name in ("images", "pixels", "labels")}
    return {**{k: v for k, v in parts[0].items() if k != "lr"}, **union}   # the metadata is every phase's


def _results(config, config_dict, workdir, collection, plan, total, seconds, started) -> dict:
    """``results.json``, the heat map and the Aᵗ curve, from the phase records of ``metrics.jsonl``."""
    metrics_path = os.path.join(workdir, "metrics.jsonl")
    history = outputs.read_metrics(metrics_path)
    records = {int(r["phase"]): r for r in history if PHASE_RECORD in r}
    if sorted(records) != list(range(len(plan))):
        raise CheckpointError(f"{metrics_path} lacks the evaluation of phase(s) "
                              f"{sorted(set(range(len(plan))) - set(records))}; delete the workdir's checkpoints to "
                              "rerun them")
    result: dict[str, Any] = {
        "algorithm": config.algorithm, "dataset": collection.name, "domains": list(collection.domains),
        "plan": config.domains.plan, "ipc": config.ipc, "steps_per_phase": config.steps, "steps": total,
        "model": config_dict["model"], "eval_epochs": config.eval.epochs, "num_seeds": config.eval.num_seeds,
        "normalization": collection.statistics,
    }
    last = records[len(plan) - 1]
    final = None if plan[-1].real else _final_set(workdir, plan[-1].eval_sets)
    if config.domains.plan == "leave_one_out":
        held_out = {records[k]["eval_domains"][0]: evaluate.EvalResult.from_accuracies(
            records[k]["phase_accuracy_per_seed"][0]).to_dict() for k in range(len(plan))}
        result["leave_one_out"] = held_out
        result["leave_one_out_mean"] = float(np.mean([r["mean"] for r in held_out.values()]))
    else:
        per_seed = np.asarray([records[k]["phase_accuracy_per_seed"] for k in range(len(plan))])   # (P, T, S)
        matrix = per_seed.mean(axis=-1)
        seeds_a = [continual.average_accuracy(per_seed[..., s]) for s in range(per_seed.shape[-1])]
        seeds_f = [continual.average_forgetting(per_seed[..., s]) for s in range(per_seed.shape[-1])]
        result.update(accuracy_matrix=matrix.tolist(), accuracy_matrix_std=per_seed.std(axis=-1).tolist(),
                      accuracy_matrix_per_seed=per_seed.tolist(), A_T=continual.average_accuracy(matrix),
                      F_T=continual.average_forgetting(matrix), A_curve=continual.accuracy_curve(matrix).tolist(),
                      A_T_std=float(np.std(seeds_a)), F_T_std=float(np.std(seeds_f)), A_T_per_seed=seeds_a,
                      F_T_per_seed=seeds_f)
        title = f"{config.algorithm} {config.domains.plan} on {collection.name}, ipc {config.ipc}"
        outputs.save_heatmap(os.path.join(workdir, "accuracy_matrix.png"), matrix, list(collection.domains),
                             [f"after {d}" for d in collection.domains], title=title)
        outputs.save_accuracy_curve(os.path.join(workdir, "accuracy_curve.png"), result["A_curve"],
                                    list(collection.domains), title=title)
    continual_methods.save_summary_images(workdir, len(plan), lambda x: np.clip(x * collection.std + collection.mean,
                                                                               0.0, 1.0),
                                          collection.num_classes, collection.class_names)   # e.g. DIDD's Fig. 6
    result["synthetic_size"] = int(last["eval_set_size"])
    result["seconds"] = seconds
    result["wall_seconds_this_invocation"] = time.perf_counter() - started
    if final is not None:   # a whole-data run has no set
        outputs.save_npz_atomic(os.path.join(workdir, "synthetic.npz"), **final)
    outputs.save_curves(os.path.join(workdir, "curves.png"), history, title=f"{config.algorithm} on {collection.name}")
    outputs.write_json_atomic(os.path.join(workdir, "results.json"), result)
    return result
