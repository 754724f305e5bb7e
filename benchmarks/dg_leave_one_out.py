"""Leave-one-domain-out measurements of the decoupled methods on a domain collection (docs/results.md, "Domain
generalisation"): for every held-out domain, distil from the other domains with a fresh state and validate on the
held-out domain's test split, with the library pieces the launcher uses (prepare → init/step → eval_view →
``evaluate_synthetic``), compiled once for all phases of a method.

PYTHONPATH=. python benchmarks/dg_leave_one_out.py --run=dtl@configs/dtl_tiny.py \
    --run=dtl_nodsm@configs/dtl_tiny.py@dtl.dsm=False --run=dtl_xarch@configs/dtl_tiny.py@@convnet:32,resnet50:4
``--held=photo`` runs one held-out domain; ``--dump`` saves each phase's views (and S itself, ``synthetic``);
``--views=DIR`` validates saved views on other networks (``@@resnet18,resnet50:4``) without distilling again.
``--merge=A.json,B.json --out=DIR`` joins one method's per-held-out-domain results (one invocation per domain) into
``DIR/<name>.json`` with the same ``leave_one_out`` / ``leave_one_out_mean`` keys. ``--recover_budget=SECONDS``
pauses a longer recover into a checkpoint in ``OUT/NAME_DOMAIN_recover/``; the same command run again resumes it
(bit-identical). The name ``erm`` trains the validation network on all seen-domain training images instead (the
"whole data" row), ``random_real`` on IPC random real seen-domain images with hard labels.
"""
from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import os
import shutil
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from ddjax import algorithms, evaluate, models, squeeze
from ddjax.algorithms import decoupled
from launch.checkpoint import Checkpointer
from launch.config import validate_config
from launch.domains import collection_from_config


def load_config(path: str, sets: list[str]):
    spec = importlib.util.spec_from_file_location("cfg", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    for item in sets:
        key, value = item.split("=", 1)
        node = config
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        try:
            node[leaf] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            node[leaf] = value
    validate_config(config)
    return config


def eval_model(spec: str, config, num_classes: int):
    name, _, width = spec.partition(":")
    m = config.model
    return models.build_model(name, num_classes, width=int(width) if width else m.width, depth=m.depth,
                              norm=m.norm if name == m.name else None)


def distil(config, dataset, resume: str = "", budget_s: float = 0.0):
    """One phase: the relabelled set the launcher would evaluate.

    ``resume``: a folder for the recover's checkpoint (the launcher's :class:`launch.checkpoint.Checkpointer`). If
    it holds one the recover continues from it; with ``budget_s`` > 0 the recover stops after that many seconds,
    checkpoints its state there and exits (``SystemExit``), so that a recover longer than one invocation may take
    (the 15-minute limit on the shared CPU) runs in several. The step is a pure function of the state, so a
    resumed recover gives the same set as an uninterrupted one."""
    k = dataset.num_classes
    real = algorithms.make_real_pool(dataset.train_images, dataset.train_labels, k)
    model = models.build_from_config(config.model, k)
    algo = algorithms.get_algorithm(config, model, k, dataset.image_shape)
    data = algorithms.prepare_data(config, dataset, real, stream=sys.stderr)
    k_init, k_state, _ = jax.random.split(jax.random.PRNGKey(config.seed), 3)
    state = algo.init(k_state, algorithms.init_synthetic(k_init, real, config.ipc, config.init))
    start, checkpoints = 0, Checkpointer(resume, max_to_keep=1) if resume else None
    if checkpoints is not None and checkpoints.latest_step() is not None:
        start = checkpoints.latest_step()
        state, _ = checkpoints.restore(start, state)
        print(f"recover: resumed at step {start} of {config.steps} from {resume}", file=sys.stderr, flush=True)
    step = jax.jit(algo.step, donate_argnums=0)
    started = time.perf_counter()
    for i in range(start, config.steps):
        state, metrics = step(state, data)
        if i == start or budget_s:           # steps are dispatched asynchronously: wait, so the clock is true
            jax.block_until_ready(metrics)
        if i == start:
            first = time.perf_counter() - started
        if checkpoints is not None and budget_s and i + 1 < config.steps and time.perf_counter() - started > budget_s:
            checkpoints.save(i + 1, state, {"steps": config.steps})
            checkpoints.close()
            raise SystemExit(f"recover paused after step {i + 1} of {config.steps} (budget {budget_s:.0f} s); "
                             f"state in {resume}: run the same command again to go on")
    loss = float(metrics["loss"])
    if checkpoints is not None:
        checkpoints.close()
        shutil.rmtree(resume, ignore_errors=True)  # done: a rerun starts afresh
    print(f"recover: first step (compiles) {first:.0f} s, {config.steps - start - 1} more in "
          f"{time.perf_counter() - started - first:.0f} s", file=sys.stderr, flush=True)
    if not np.isfinite(loss):
        raise FloatingPointError(f"loss {loss}")
    view = algorithms.eval_view(state, config)
    return np.asarray(view["images"]), np.asarray(view["labels"]), loss, state


def stage_evidence(config, state, view_labels: np.ndarray, test_x: np.ndarray, test_y: np.ndarray) -> dict:
    """Where a distilled set's class evidence is lost (docs/domain_generalization.md): the squeeze model's accuracy
    on the held-out test split and on the distilled images S themselves, and the share of relabelled views whose
    soft-label argmax is the class of the image they were cut from (views are view-major: image ``i`` at
    ``i, n + i, ...``; CutMix pastes another image into some)."""
    hp = config[config.algorithm]
    k = int(state.synthetic.labels.shape[0] // config.ipc)
    model = squeeze.build_squeeze_model(hp.squeeze, k)
    teacher = decoupled.pick(state.extras["teacher"], 0)

    def acc(x, y) -> float:
        hits = [np.asarray(jnp.argmax(model.apply(teacher, jnp.asarray(x[i:i + 1000]), train=False), -1))
                == y[i:i + 1000] for i in range(0, len(y), 1000)]
        return round(float(np.mean(np.concatenate(hits))), 4)

    s_y = np.asarray(state.synthetic.labels)
    view_y = np.tile(s_y, len(view_labels) // len(s_y))
    return {"squeeze_acc_held_out": acc(test_x, test_y),
            "squeeze_acc_S": acc(np.asarray(state.synthetic.images), s_y),
            "relabel_views_agree": round(float(np.mean(np.argmax(view_labels, -1) == view_y)), 4),
            "relabel_mean_max_prob": round(float(np.mean(np.max(view_labels, -1))), 4)}


def run_one(name: str, config_path: str, sets: list[str], eval_models: str, out_dir: str, held_only: str = "",
            dump: bool = False, views_dir: str = "", budget_s: float = 0.0) -> dict:
    """Every leave-one-out phase of one method (or only the held-out domains named in ``held_only``, comma
    list); writes ``<out_dir>/<name>.json`` (and ``<name>_<domain>.npz`` with the views if ``dump``). With
    ``views_dir``, the views of an earlier ``--dump`` are validated instead of distilling again (cross-architecture
    validation of the same sets). ``budget_s`` > 0: a recover longer than that pauses into
    ``<out_dir>/<name>_<domain>_recover/`` and the same command goes on from there (:func:`distil`)."""
    config = load_config(config_path, sets)
    collection = collection_from_config(config)
    e = config.eval
    specs = eval_models.split(",") if eval_models else [config.model.name]
    started = time.perf_counter()
    out: dict = {"name": name, "config": config_path, "set": sets, "ipc": config.ipc,
                 "domains": list(collection.domains), "leave_one_out": {s: {} for s in specs}}
    wanted = [d for d in held_only.split(",") if d]
    for held in range(collection.num_domains):
        if wanted and collection.domains[held] not in wanted:
            continue
        seen = [i for i in range(collection.num_domains) if i != held]
        dataset = collection.load_many(seen)
        test_x, test_y = collection.load_test(held)  # the held-out domain's train split is never built
        state = None
        if name == "erm":
            images, labels = dataset.train_images, dataset.train_labels
        elif views_dir:
            saved = np.load(os.path.join(views_dir, f"{name}_{collection.domains[held]}.npz"))
            images, labels = saved["images"], saved["labels"]
        elif name == "random_real":  # IPC random real images of the seen domains, hard labels
            images, labels = evaluate.random_real_subset(jax.random.PRNGKey(held), dataset.train_images,
                                                         dataset.train_labels, config.ipc, dataset.num_classes)
        else:
            resume = os.path.join(out_dir, f"{name}_{collection.domains[held]}_recover") if budget_s else ""
            images, labels, loss, state = distil(config, dataset, resume, budget_s)
            evidence = stage_evidence(config, state, labels, test_x, test_y)
            out.setdefault("evidence", {})[collection.domains[held]] = evidence
            print(f"{name} held-out {collection.domains[held]}: {json.dumps(evidence)}", file=sys.stderr, flush=True)
            print(f"{name} held-out {collection.domains[held]}: final loss {loss:.4f}, {len(images)} views",
                  file=sys.stderr, flush=True)
        if dump:
            os.makedirs(out_dir, exist_ok=True)
            extra = {} if state is None else {"synthetic": np.asarray(state.synthetic.images),
                                               "synthetic_labels": np.asarray(state.synthetic.labels)}
            np.savez(os.path.join(out_dir, f"{name}_{collection.domains[held]}.npz"), images=np.asarray(images),
                     labels=np.asarray(labels), **extra)
        for spec in specs:
            model = eval_model(spec, config, collection.num_classes)
            result = evaluate.evaluate_synthetic(
                jax.random.PRNGKey(1000 + held), model, images, labels, test_x, test_y, num_seeds=e.num_seeds,
                epochs=e.epochs, lr=e.lr, momentum=e.momentum, weight_decay=e.weight_decay, batch_size=e.batch_size,
                dsa_strategy=e.dsa_strategy, num_classes=collection.num_classes)
            out["leave_one_out"][spec][collection.domains[held]] = result.to_dict()
            print(f"  {name} {spec} on {collection.domains[held]}: {result.mean:.4f} ± {result.std:.4f}",
                  file=sys.stderr, flush=True)
    out["leave_one_out_mean"] = {s: float(np.mean([r["mean"] for r in out["leave_one_out"][s].values()]))
                                 for s in specs}
    out["seconds"] = time.perf_counter() - started
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, f"{name}.json"), "w", encoding="utf-8") as f:
        json.dump(out, f, indent=1)
    print(json.dumps({"name": name, "mean": out["leave_one_out_mean"], "seconds": round(out["seconds"])}),
          flush=True)
    return out


def merge_runs(paths: list[str], out_dir: str) -> dict:
    """One method's results of separate invocations (``--held=...`` each) joined: the union of their
    ``leave_one_out`` cells (a domain measured twice is refused), the mean over the joined domains, the summed
    ``seconds``, every ``evidence`` entry, and ``merged_from`` (the files). Writes ``<out_dir>/<name>.json``."""
    parts = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            parts.append(json.load(f))
    names = {p["name"] for p in parts}
    if len(names) != 1:
        raise ValueError(f"--merge joins one method's runs; got names {sorted(names)}")
    out: dict = {k: parts[0][k] for k in ("name", "config", "set", "ipc", "domains")}
    out["leave_one_out"], out["evidence"] = {}, {}
    for p in parts:
        for spec, cells in p["leave_one_out"].items():
            joined = out["leave_one_out"].setdefault(spec, {})
            for domain, cell in cells.items():
                if domain in joined:
                    raise ValueError(f"held-out domain {domain!r} ({spec}) is in more than one of {paths}")
                joined[domain] = cell
        out["evidence"].update(p.get("evidence", {}))
    order = {d: i for i, d in enumerate(out["domains"])}
    out["leave_one_out"] = {s: dict(sorted(c.items(), key=lambda kv: order.get(kv[0], len(order))))
                            for s, c in out["leave_one_out"].items()}
    out["leave_one_out_mean"] = {s: float(np.mean([r["mean"] for r in c.values()]))
                                 for s, c in out["leave_one_out"].items()}
    out["seconds"] = float(sum(p.get("seconds", 0.0) for p in parts))
    out["merged_from"] = list(paths)
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, f"{out['name']}.json"), "w", encoding="utf-8") as f:
        json.dump(out, f, indent=1)
    print(json.dumps({"name": out["name"], "mean": out["leave_one_out_mean"],
                      "domains": {s: list(c) for s, c in out["leave_one_out"].items()}}), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run", action="append", default=[],
                        help="NAME@CONFIG[@key=value,key=value][@EVAL_MODELS]; several --run share compilations")
    parser.add_argument("--out", default="/tmp/dg/results")
    parser.add_argument("--held", default="", help="comma list: only these held-out domains (default: all)")
    parser.add_argument("--dump", action="store_true", help="save each phase's views and labels (.npz)")
    parser.add_argument("--views", default="", help="validate the views an earlier --dump saved in this folder")
    parser.add_argument("--recover_budget", type=float, default=0.0,
                        help="seconds: pause a longer recover into OUT/NAME_DOMAIN_recover/; rerun to go on")
    parser.add_argument("--merge", default="", help="comma list of one method's result JSONs to join (no run)")
    args = parser.parse_args()
    if args.merge:
        merge_runs([p for p in args.merge.split(",") if p], args.out)
        return
    if not args.run:
        parser.error("--run or --merge is required")
    jax.config.update("jax_compilation_cache_dir", "/tmp/dg/jaxcache")
    for item in args.run:
        parts = item.split("@")
        name, config_path = parts[0], parts[1]
        sets = [s for s in (parts[2].split(",") if len(parts) > 2 else []) if s]
        run_one(name, config_path, sets, parts[3] if len(parts) > 3 else "", args.out, args.held, args.dump,
                args.views, args.recover_budget)


if __name__ == "__main__":
    main()
