"""DIDD's Table 1 at reduced scale: every method × seed of a DIDD stream config through the staged launcher, then
A^T / F^T mean ± std over seeds as a markdown table (issue 12; results in docs/results.md, "DIDD").

    python benchmarks/didd_table.py --config=configs/didd_tiny.py --methods=finetune,bilevel,mas --seeds=0,1,2 \
        --out=/tmp/didd_table
    python benchmarks/didd_table.py --config=configs/didd_tiny.py --methods=mas --seeds=0 \
        --set=didd.penalty_weight=0.01 --tag=mas_l0.01 --out=/tmp/didd_table          # one point of a λ sweep

Each run is ``launch.run.run(get_config("method=M,seed=S"), OUT/<tag>/M_sS)`` (a rerun resumes or reuses a
finished workdir), so every number has its launcher command:
``python -m launch.main --config=CONFIG:method=M,seed=S --config.K=V ...``. ``--set`` applies ``key=value``
overrides (values parsed as Python literals) after the config file. A persistent XLA compilation cache
(``OUT/xla_cache``) lets runs of the same shapes (other seeds, other λ) skip compilation; it changes no number.

Per run it also records, for the DIDD modes, the spread of ᾱ − β̄ over the stored images after the last domain
(``summary.npz`` of the last phase): std and max − min; a bi-level run whose rates never separate has ≈ 0.
Prints one JSON line per run and the table; ``OUT/<tag>/table.json`` keeps everything.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import common  # noqa: E402
from launch.run import run  # noqa: E402


def load_config(path: str, arg: str):
    """``get_config(arg)`` of the config file at ``path``."""
    return common.load_config(path, arg)


def apply_overrides(config, items: list[str]):
    """``key.sub=value`` overrides (Python literals, else strings), as ``--config.key.sub=value`` would."""
    return common.override_config(config, items)


def rate_spread(workdir: str, last_phase: int) -> dict:
    """Spread of ᾱ − β̄ over the stored images after the last phase (DIDD modes only), and the mean rates."""
    path = os.path.join(workdir, "phases", str(last_phase), "summary.npz")
    if not os.path.exists(path):
        return {}
    with np.load(path) as z:
        if "alpha_bar" not in z.files:
            return {}
        diff = z["alpha_bar"] - z["beta_bar"]
        return {"diff_std": float(diff.std()), "diff_range": float(diff.max() - diff.min()),
                "alpha_bar_mean": float(z["alpha_bar"].mean()), "beta_bar_mean": float(z["beta_bar"].mean())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="configs/didd_tiny.py")
    p.add_argument("--methods", default="finetune,stable,linear,bilevel,mas,lwf,joint_m3d,gather_m3d")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--arg", default="", help="extra config-file options, e.g. ipc=10 (didd_rfmnist)")
    p.add_argument("--set", action="append", default=[], help="key=value config override (repeatable)")
    p.add_argument("--tag", default="default", help="sub-folder of --out for this group of runs")
    p.add_argument("--out", default="/tmp/didd_table")
    args = p.parse_args()

    import jax  # noqa: PLC0415
    cache = os.path.join(args.out, "xla_cache")
    jax.config.update("jax_compilation_cache_dir", cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)

    folder = os.path.join(args.out, args.tag)
    rows = []
    for method in args.methods.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            option = ",".join(filter(None, [args.arg, f"method={method}", f"seed={seed}"]))
            config = apply_overrides(load_config(args.config, option), args.set)
            workdir = os.path.join(folder, f"{method}_s{seed}")
            started = time.perf_counter()
            saved = os.path.join(workdir, "results.json")
            if os.path.exists(saved):
                with open(saved, encoding="utf-8") as f:
                    results = json.load(f)
            else:
                with open(os.devnull, "w") as quiet:
                    results = run(config, workdir, stream=quiet)
            matrix = np.asarray(results["accuracy_matrix"])
            row = {"method": method, "seed": seed, "A_T": results["A_T"], "F_T": results["F_T"],
                   "last_row": matrix[-1].round(3).tolist(), "seconds": round(time.perf_counter() - started, 1),
                   "command": f"python -m launch.main --config={args.config}:{option} "
                              + " ".join(f"--config.{s}" for s in args.set) + f" --workdir={workdir}",
                   **rate_spread(workdir, len(matrix) - 1)}
            print(json.dumps(row), flush=True)
            rows.append(row)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "table.json"), "w", encoding="utf-8") as f:
        json.dump({"config": args.config, "arg": args.arg, "set": args.set, "runs": rows}, f, indent=1)
    print("\n| method | seeds | A^T | F^T | a_t^T (seed mean) | ᾱ−β̄ std | s/run |\n|---|---|---|---|---|---|---|")
    for method in dict.fromkeys(r["method"] for r in rows):
        group = [r for r in rows if r["method"] == method]
        a, f_ = np.array([r["A_T"] for r in group]), np.array([r["F_T"] for r in group])
        last = np.mean([r["last_row"] for r in group], axis=0)
        spread = f"{np.mean([r['diff_std'] for r in group]):.3f}" if "diff_std" in group[0] else "—"
        print(f"| {method} | {','.join(str(r['seed']) for r in group)} | {a.mean():.3f} ± {a.std():.3f} | "
              f"{f_.mean():.3f} ± {f_.std():.3f} | {' '.join(f'{v:.2f}' for v in last)} | {spread} | "
              f"{np.mean([r['seconds'] for r in group]):.0f} |")


if __name__ == "__main__":
    main()
