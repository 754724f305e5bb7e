"""The one generic distillation loop: config → data → ``init`` → jitted ``step`` → periodic eval → checkpoint →
metrics and pictures. Importable (tests and notebooks call :func:`run`); ``launch.main`` is only its CLI.

Workdir outputs:
  ``config.json``            the config that made the run (a rerun with another config is refused)
  ``checkpoints/<step>/``    orbax checkpoints; rerunning the same command resumes from the latest
  ``metrics.jsonl``          one JSON record per logged step / evaluation
  ``images/step_<N>.png``    synthetic images, one row per class, at each evaluation (``synthetic.png``: latest)
  ``curves.png``             loss and accuracy over steps
  ``tensorboard/``           TensorBoard event files: the metrics.jsonl scalars and the image grid at each evaluation
                             (``tensorboard --logdir W/tensorboard``); a resume appends without duplicate steps
  ``synthetic.npz``          final set: ``images`` (model space), ``pixels`` ([0, 1]), ``labels`` (and ``lr``, a
                             learned training learning rate, for trajectory matching), and what maps model space to
                             pixels without the dataset: ``mean``/``std``, the ZCA transform, ``class_names``,
                             ``image_shape``, ``config`` (JSON); ``ddjax.load_synthetic(path)`` reads it
  ``results.json``           algorithm, dataset, ipc, steps, seconds, synthetic/random_real {mean, std, per_seed}
                             (and ``cross_architecture``: name -> {mean, std, per_seed}, one per
                             ``config.eval.architectures`` entry)
  ``eval_<NAME>.json``       one per ``config.eval.architectures`` entry (:mod:`launch.cross_architecture`)

With ``config.domains.source`` set, the run is staged over a domain collection (:mod:`launch.staged`): the same
step loop (:func:`train_steps`) per phase, with per-phase outputs documented there.
"""
from __future__ import annotations

import os
import sys
import time
from typing import Any, Callable, TextIO

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ddjax import algorithms, data, evaluate, models
from ddjax.errors import ConfigError, DivergenceError
from ddjax.sharding import jit_step, make_mesh, replicate
from launch import compile_cache, cross_architecture, distributed, outputs, staged
from launch.checkpoint import Checkpointer, check_workdir, record_config
from launch.config import config_to_dict, validate_config


def build_eval_model(config: ml_collections.ConfigDict, num_classes: int):
    """The network trained on the synthetic set: the distillation model (the reference 'SS' eval mode), or
    ``config.eval.model`` (width ``config.eval.width``, that model's default norm) for cross-architecture runs."""
    name = config.eval.get("model", "")
    if not name:
        return models.build_from_config(config.model, num_classes)
    m = config.model
    return models.build_model(name, num_classes, width=config.eval.width or m.width, depth=m.depth,
                              norm=m.norm if name == m.name else None, pooling=m.pooling)


def evaluate_set(key: jax.Array, config: ml_collections.ConfigDict, model, images, labels,
                 dataset: data.Dataset, lr: float | None = None) -> evaluate.EvalResult:
    """Train ``config.eval.num_seeds`` fresh networks on (images, labels) in one program, the seeds split over the
    devices (:func:`ddjax.sharding.map_over_seeds`); test accuracy.

    ``lr``: the training learning rate when the algorithm learned one (MTT/SATM's α) and ``config.eval.learned_lr``
    is on; ``config.eval.lr`` otherwise."""
    e = config.eval
    train_lr = float(lr) if (lr is not None and e.learned_lr) else e.lr
    return evaluate.evaluate_synthetic(
        key, model, np.asarray(images), np.asarray(labels), dataset.test_images, dataset.test_labels,
        num_seeds=e.num_seeds, epochs=e.epochs, lr=train_lr, momentum=e.momentum, weight_decay=e.weight_decay,
        batch_size=e.batch_size, dsa_strategy=e.dsa_strategy, num_classes=dataset.num_classes,
        protocol=e.protocol, cutmix_p=e.cutmix_p, mesh=make_mesh())


@jax.jit
def _watch(first_bad: jax.Array, bad_loss: jax.Array, loss: jax.Array, step: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Device-side divergence record: the first step whose loss was non-finite (0: none yet) and that loss."""
    new = (first_bad == 0) & ~jnp.isfinite(loss)
    return jnp.where(new, step, first_bad), jnp.where(new, loss.astype(jnp.float32), bad_loss)


def train_steps(state, step_fn: Callable, step_data, first: int, last: int, *, config: ml_collections.ConfigDict,
                writer: outputs.MetricsWriter, progress: outputs.Progress, checkpointer: Checkpointer,
                elapsed: Callable[[], float], on_step: Callable[[int, Any], None] | None = None):
    """Run the jitted ``step_fn`` for steps ``first..last`` (1-based, inclusive): stop on a non-finite loss, log
    every ``config.log_every`` steps and at ``last``, call ``on_step(step, state)``, checkpoint every
    ``config.checkpoint_every`` steps before ``last`` (the caller saves ``last`` itself, after what it does at the
    end). Shared by the single-dataset run and every phase of a staged run. Returns the state after ``last``.

    No host sync between those steps (issue 15): the loss stays on device and :func:`_watch` records the first
    step that went non-finite; the record is read only at log, checkpoint, evaluation (``config.eval.every``, when
    ``on_step`` is given) and last steps, so the error still names that step, and a checkpoint is written only of
    a state known finite (the last good one is kept)."""
    first_bad, bad_loss = jnp.zeros((), jnp.int32), jnp.zeros((), jnp.float32)
    eval_every = config.eval.every if on_step is not None else 0
    for step in range(first, last + 1):
        state, metrics = step_fn(state, step_data)
        first_bad, bad_loss = _watch(first_bad, bad_loss, metrics["loss"], step)
        logged = step % config.log_every == 0 or step == last
        saved = step % config.checkpoint_every == 0 and step != last
        if logged or saved or (eval_every and step % eval_every == 0):
            bad = int(first_bad)  # the one host sync
            if bad:
                raise DivergenceError(
                    f"loss became {float(bad_loss)} at step {bad}; the last good checkpoint (step "
                    f"{checkpointer.latest_step()}) is kept in {checkpointer.directory}; lower the image learning "
                    f"rate (--config.{config.algorithm}.lr_img) or check the data")
        if logged:
            values = {k: float(v) for k, v in jax.device_get(metrics).items()}
            progress.update(step, loss=values["loss"])
            writer.write(step=step, seconds=elapsed(), **values)
        else:
            progress.update(step)
        if on_step is not None:
            on_step(step, state)
        if saved:
            checkpointer.save(step, state, {"step": step, "seconds": elapsed()})
    return state


def run(config: ml_collections.ConfigDict, workdir: str, stream: TextIO | None = None) -> dict:
    """Distil, evaluate and write every output to ``workdir``; returns the ``results.json`` dict.

    Raises a :class:`ddjax.errors.DDJaxError` (one line) on bad config, missing data, a workdir made by another
    config, an unreadable checkpoint or a diverged loss; in each case the last good checkpoint is left untouched.
    """
    stream = sys.stderr if stream is None else stream
    started = time.perf_counter()
    validate_config(config)
    compile_cache.enable(config.get("compilation_cache", "auto"), workdir)   # before the first compile
    if config.get("domains") is not None and config.domains.source:   # a run over a domain collection
        if jax.process_count() > 1:
            raise ConfigError("staged runs (config.domains.source) run in one process; start one process without "
                              "--num_processes/--coordinator_address")
        return staged.run_staged(config, workdir, stream)
    writes = distributed.is_writer()   # process 0 speaks and writes for a multi-process run (launch.distributed)
    stream = stream if writes else open(os.devnull, "w")
    config_dict = config_to_dict(config)
    check_workdir(workdir, config_dict)

    dataset = data.load_dataset(config.data.name, data_dir=config.data.data_dir, source_dir=config.data.source_dir,
                                zca=config.data.zca, zca_regularization=config.data.zca_regularization)
    num_classes, image_shape = dataset.num_classes, dataset.image_shape
    mesh = make_mesh()
    model = build_eval_model(config, num_classes)
    real = distributed.real_pool(dataset.train_images, dataset.train_labels, num_classes, mesh)
    algo = algorithms.get_algorithm(config, model, num_classes, image_shape, mesh=mesh)
    step_data = distributed.replicate_rest(algorithms.prepare_data(config, dataset, real, mesh=mesh, stream=stream),
                                           mesh)

    k_init, k_state, k_eval = jax.random.split(jax.random.PRNGKey(config.seed), 3)  # k_eval: evals + baseline
    synthetic = algorithms.init_synthetic(k_init, real, config.ipc, config.init)
    # Every leaf gets its own buffer: the jitted step donates the state, and XLA refuses a buffer donated twice
    # (an init that stores the same array in two places, e.g. images and their EMA, would otherwise fail).
    state = replicate(jax.tree.map(jnp.copy, algo.init(k_state, synthetic)), mesh)
    if writes:
        record_config(workdir, config_dict)

    checkpointer = Checkpointer(workdir, config.keep_checkpoints)
    tensorboard = outputs.TensorBoardWriter(os.path.join(workdir, "tensorboard") if writes else None,
                                            resume_step=checkpointer.latest_step() or 0, stream=stream)
    try:
        return _loop(config, workdir, stream, started, dataset, model, step_data, algo, state, checkpointer,
                     k_eval, config_dict, mesh, tensorboard, writes)
    finally:
        tensorboard.close()
        checkpointer.close()


def _loop(config, workdir, stream, started, dataset, model, step_data, algo, state, checkpointer, k_eval, config_dict,
          mesh, tensorboard, writes=True) -> dict:
    metrics_path = os.path.join(workdir, "metrics.jsonl")
    start = checkpointer.latest_step()
    previous_seconds = 0.0
    if start is not None:
        state, record = checkpointer.restore(start, state)   # onto this run's mesh, whatever the saved one
        state = replicate(state, mesh)
        previous_seconds = float(record.get("seconds", 0.0))
        print(f"resuming from step {start} ({checkpointer.directory})", file=stream)
    start = start or 0
    if start == 0 and writes and os.path.exists(metrics_path):
        os.remove(metrics_path)  # records of an attempt that died before its first checkpoint
    writer = outputs.MetricsWriter(metrics_path if writes else None, resume_step=start or None,
                                   tensorboard=tensorboard)

    step_fn = jit_step(algo.step, mesh)   # the state stays replicated: one compile
    progress = outputs.Progress(config.steps, initial=start, stream=stream, log_every=config.log_every,
                                desc=config.algorithm)
    session_start = time.perf_counter()

    def elapsed() -> float:
        return previous_seconds + time.perf_counter() - session_start

    def evaluate_periodically(step: int, current) -> None:
        if config.eval.every and step % config.eval.every == 0 and step != config.steps:
            evaluate_now(step, current)

    def evaluate_now(step: int, current) -> dict:
        """Evaluate the set (unless ``eval.num_seeds`` = 0: distil only) and draw its picture; returns the host
        view of the set (``algorithms.eval_view``)."""
        view = distributed.to_host(algorithms.eval_view(current, config))
        if evaluates:
            result = evaluate_set(jax.random.fold_in(k_eval, step), config, model, view["images"], view["labels"],
                                  dataset, lr=view.get("lr"))
            record = {"synthetic_acc": result.mean, "synthetic_acc_std": result.std}
            if "lr" in view:
                record["eval_lr"] = float(view["lr"]) if config.eval.learned_lr else float(config.eval.lr)
            writer.write(step=step, **record)
            progress.write(f"step {step}: synthetic accuracy {result.mean:.4f} ± {result.std:.4f} "
                           f"over {config.eval.num_seeds} seeds")
            last_eval["result"] = result
        pixels = dataset.to_pixels(np.asarray(view["images"]))
        labels = np.asarray(view["labels"])
        if writes:
            os.makedirs(os.path.join(workdir, "images"), exist_ok=True)
            for name in (f"images/step_{step:06d}.png", "synthetic.png"):
                outputs.save_image_grid(os.path.join(workdir, name), pixels, labels, dataset.num_classes,
                                        dataset.class_names)
            tensorboard.add_image_file("images/synthetic", os.path.join(workdir, "synthetic.png"), step)
        return view

    evaluates = config.eval.num_seeds > 0
    last_eval: dict[str, Any] = {}
    state = train_steps(state, step_fn, step_data, start + 1, config.steps, config=config, writer=writer,
                        progress=progress, checkpointer=checkpointer, elapsed=elapsed,
                        on_step=evaluate_periodically)
    if start < config.steps:
        checkpointer.save(config.steps, state, {"step": config.steps, "seconds": elapsed()})
    progress.close()

    final_step = max(start, config.steps)  # the last step ran (and was checkpointed), or a longer restored run
    view = evaluate_now(final_step, state)
    result: dict[str, Any] = {
        "algorithm": config.algorithm, "dataset": dataset.name, "ipc": config.ipc, "steps": final_step,
        "model": config_dict["model"], "eval_epochs": config.eval.epochs, "num_seeds": config.eval.num_seeds,
    }
    if evaluates:   # eval.num_seeds = 0: no "synthetic" entry (launch.evaluate --num_seeds=K evaluates it later)
        result["synthetic"] = last_eval["result"].to_dict()
    if config.eval.random_real and evaluates:
        k_subset, k_train = jax.random.split(jax.random.fold_in(k_eval, 2**31 - 1))  # not a step number
        images, labels = evaluate.random_real_subset(k_subset, dataset.train_images, dataset.train_labels,
                                                     config.ipc, dataset.num_classes)
        baseline = evaluate_set(k_train, config, model, images, labels, dataset)
        result["random_real"] = baseline.to_dict()
        writer.write(step=final_step, random_real_acc=baseline.mean, random_real_acc_std=baseline.std)
        print(f"random real images (ipc {config.ipc}): accuracy {baseline.mean:.4f} ± {baseline.std:.4f}",
              file=stream)
    cross = {name: cross_architecture.evaluate_architecture(name, config, dataset, view["images"], view["labels"],
                                                            view.get("lr"))
             for name in models.parse_architectures(config.eval.architectures)}
    for name, accuracy in cross.items():
        result.setdefault("cross_architecture", {})[name] = {k: accuracy[k] for k in ("mean", "std", "per_seed")}
        writer.write(step=final_step, **{f"{name}_acc": accuracy["mean"], f"{name}_acc_std": accuracy["std"]})
        print(f"{name} trained on the synthetic set: accuracy {accuracy['mean']:.4f} ± {accuracy['std']:.4f}",
              file=stream)
    writer.close()
    result["seconds"] = elapsed()
    result["wall_seconds_this_invocation"] = time.perf_counter() - started
    if not writes:
        return result

    outputs.save_synthetic(os.path.join(workdir, "synthetic.npz"), np.asarray(view["images"]),
                           np.asarray(view["labels"]), pixels=dataset.to_pixels(np.asarray(view["images"])),
                           mean=dataset.mean, std=dataset.std, zca=dataset.zca, class_names=dataset.class_names,
                           dataset=dataset.name, config=config_dict, lr=view.get("lr"))
    outputs.save_curves(os.path.join(workdir, "curves.png"), outputs.read_metrics(metrics_path),
                        title=f"{config.algorithm} on {dataset.name}, ipc {config.ipc}")
    for name, accuracy in cross.items():
        cross_architecture.write_evaluation(workdir, name, accuracy, os.path.join(workdir, "synthetic.npz"))
    outputs.write_json_atomic(os.path.join(workdir, "results.json"), result)
    return result
