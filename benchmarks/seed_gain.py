"""Paired seed comparison: several variants (config + overrides) distilled with the same seeds and budget, each
seed's final test accuracy, and each seed's gain over the first variant (issue 14: "show each seed's gain").

    python benchmarks/seed_gain.py --seeds=0,1,2 --steps=10 \
        --variant='summed|configs/dream_tiny.py|' \
        --variant='per_class|configs/dream_tiny.py|dream.idc.image_step="per_class";dream.idc.clamp_images=True'

A variant is ``NAME|CONFIG[:ARG]|KEY=VALUE;KEY=VALUE`` (values read as Python literals, else strings; ``steps`` and
the evaluation settings may be overridden there too). Distillation seed ``s`` is the launcher's ``config.seed``
(same keys for init, state and evaluation as ``launch.run``); each variant's step is compiled once and reused
for every seed; rows come seed-major (every variant's seed 0 first). The evaluation is the variant's
``config.eval`` (``config.eval.num_seeds`` networks per distilled set). Prints one JSON line per (variant, seed) and a markdown table with mean ± std over the seeds and
the paired gains ``acc(variant, s) − acc(first, s)``. Each row also keeps the mean over the steps of every scalar
step metric (``metric_means``: e.g. SATM's ``loss_perturbed``, ``eps_norm``, ``sam_cosine``), the same over the
last quarter of the steps (``metric_means_last_quarter``: the trend) and the final ‖ϕ‖.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import common  # noqa: E402
from ddjax import algorithms, data  # noqa: E402
from launch.config import validate_config  # noqa: E402
from launch.run import build_eval_model, evaluate_set  # noqa: E402


def load_config(spec: str):
    """``PATH[:ARG]`` -> that config file's ``get_config(ARG)``."""
    path, _, arg = spec.partition(":")
    return common.load_config(path, arg)


def apply_overrides(config, overrides: str):
    """``a.b=1;c=x`` -> each override applied (:func:`benchmarks.common.override_config`)."""
    return common.override_config(config, [s for s in overrides.split(";") if s.strip()])


def build_variant(config, steps: int, dataset, stream) -> dict:
    """Everything one variant's seeds share: the model, real pool, algorithm, step data and the jitted step."""
    config.steps = max(steps, 1)  # --steps=0: evaluate without a step (see --steps' help); the check wants >= 1
    validate_config(config)
    num_classes, shape = dataset.num_classes, dataset.image_shape
    model = build_eval_model(config, num_classes)
    real = algorithms.make_real_pool(dataset.train_images, dataset.train_labels, num_classes)
    algo = algorithms.get_algorithm(config, model, num_classes, shape)
    step_data = algorithms.prepare_data(config, dataset, real, stream=stream)
    return dict(config=config, model=model, real=real, algo=algo, step_data=step_data, step_fn=jax.jit(algo.step),
                dataset=dataset)


def run_seed(name: str, v: dict, seed: int, steps: int) -> dict:
    """Distil variant ``v`` with launcher seed ``seed`` for ``steps`` steps, evaluate, return one row."""
    config, algo, real, step_fn, step_data = v["config"], v["algo"], v["real"], v["step_fn"], v["step_data"]
    started = time.perf_counter()
    k_init, k_state, k_eval = jax.random.split(jax.random.PRNGKey(seed), 3)
    state = algo.init(k_state, algorithms.init_synthetic(k_init, real, config.ipc, config.init))
    times, sums, last, metrics = [], {}, {}, {}
    last_from = steps - max(steps // 4, 1)  # the last quarter of the steps: the metrics' trend (e.g. sharpness)
    for i in range(steps):
        t = time.perf_counter()
        state, metrics = step_fn(state, step_data)
        float(metrics["loss"])
        times.append(time.perf_counter() - t)
        for k, val in metrics.items():
            if np.ndim(val) == 0:
                sums[k] = sums.get(k, 0.0) + float(val)
                if i >= last_from:
                    last[k] = last.get(k, 0.0) + float(val)
    distil = time.perf_counter() - started
    view = algorithms.eval_view(state, config)
    result = evaluate_set(jax.random.fold_in(k_eval, steps), config, v["model"], view["images"], view["labels"],
                          v["dataset"], lr=view.get("lr"))
    row = dict(variant=name, seed=seed, steps=steps, acc=result.mean, acc_std=result.std,
               per_network=list(map(float, result.per_seed)) if hasattr(result, "per_seed") else None,
               distil_s=distil, step_s_median=float(np.median(times[1:] or times)) if times else None,
               first_step_s=times[0] if times else None, eval_s=time.perf_counter() - started - distil,
               final_loss=float(metrics["loss"]) if steps else None,
               metric_means={k: val / steps for k, val in sums.items()},
               metric_means_last_quarter={k: val / (steps - last_from) for k, val in last.items()},
               image_norm=float(np.linalg.norm(np.asarray(state.synthetic.images))))
    print(json.dumps(row), flush=True)
    return row


def table(rows: list[dict], names: list[str], seeds: list[int]) -> str:
    acc = {(r["variant"], r["seed"]): r["acc"] for r in rows}
    lines = ["| variant | " + " | ".join(f"seed {s}" for s in seeds) + " | mean ± std | gain per seed | gain mean ± std |",
             "|---|" + "---|" * (len(seeds) + 3)]
    base = names[0]
    for n in names:
        a = np.array([acc[(n, s)] for s in seeds])
        g = a - np.array([acc[(base, s)] for s in seeds])
        gains = "—" if n == base else ", ".join(f"{x:+.3f}" for x in g)
        gm = "—" if n == base else f"{g.mean():+.3f} ± {g.std():.3f}"
        lines.append(f"| {n} | " + " | ".join(f"{x:.3f}" for x in a) + f" | {a.mean():.3f} ± {a.std():.3f} | "
                     f"{gains} | {gm} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variant", action="append", required=True, help="NAME|CONFIG[:ARG]|KEY=VALUE;...")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--steps", type=int, required=True,
                        help="outer steps per seed (0: evaluate the set init_synthetic makes; IDC/DREAM+ build theirs "
                        "(mosaics, cluster centres) in their first step, so for them 0 scores a placeholder: run 1 "
                        "step at a negligible lr_img instead; MTT/SATM evaluate it at the initial syn_lr, add "
                        "eval.learned_lr=False for eval.lr)")
    parser.add_argument("--out", default="", help="write the rows as JSON lines here")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    rows, names, variants, datasets = [], [], [], {}
    for spec in args.variant:
        name, config_spec, overrides = (spec.split("|") + ["", ""])[:3]
        config = apply_overrides(load_config(config_spec), overrides)
        key = (config.data.name, config.data.zca)
        if key not in datasets:
            datasets[key] = data.load_dataset(config.data.name, data_dir=config.data.data_dir,
                                              source_dir=config.data.source_dir, zca=config.data.zca,
                                              zca_regularization=config.data.zca_regularization)
        names.append(name)
        variants.append(build_variant(config, args.steps, datasets[key], sys.stderr))
    # Seed-major: every variant's seed 0 before any seed 1, so a cut-short run still has paired rows.
    for seed in seeds:
        for name, v in zip(names, variants):
            rows.append(run_seed(name, v, seed, args.steps))
    if args.out:
        with open(args.out, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
    print(table(rows, names, seeds))


if __name__ == "__main__":
    main()
