"""SATM's sharpness step: sweep ρ (SAM radius) and γ (smoothing noise) through the launcher and record, per run,
the measured sharpness L(ϕ+ε) − L(ϕ̃) (the step's ``loss_perturbed − loss``, averaged over all steps) and the test
accuracy of the distilled set. Issue 14 item 5; results in docs/results.md.

    python benchmarks/sweep_satm.py --config=configs/satm_tiny.py --ipc=1 --steps=100 \
        --rhos=0,0.01,0.1,0.5,2 --gammas=0.001 --out=/tmp/satm_sweep
    python benchmarks/sweep_satm.py ... --rho_relative   # ρ as a fraction of ‖ϕ‖ (config.satm.sam.rho_relative)

Every run shares one expert buffer (the config's, made on first use) and evaluates with the config's protocol.
Prints one JSON line per run and a markdown table at the end; ``--out/sweep.json`` keeps everything.
"""
from __future__ import annotations

import argparse
import importlib.util
import io
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from launch.run import run  # noqa: E402


def load_config(path: str):
    spec = importlib.util.spec_from_file_location("sweep_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def sharpness(metrics_path: str) -> dict:
    """Mean over logged steps of ``loss``, ``loss_perturbed``, their difference and its ratio to ``loss``."""
    records = [json.loads(line) for line in open(metrics_path)]
    steps = [r for r in records if "loss" in r and "synthetic_acc" not in r]
    loss = np.array([r["loss"] for r in steps])
    if not steps or "loss_perturbed" not in steps[0]:
        return {"loss": float(loss.mean()) if len(loss) else None, "sharpness": 0.0, "relative_sharpness": 0.0,
                "eps_norm": 0.0}
    perturbed = np.array([r["loss_perturbed"] for r in steps])
    return {"loss": float(loss.mean()), "sharpness": float((perturbed - loss).mean()),
            "relative_sharpness": float(((perturbed - loss) / loss).mean()),
            "eps_norm": float(np.mean([r["eps_norm"] for r in steps]))}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="configs/satm_tiny.py")
    p.add_argument("--ipc", type=int, default=1)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--rhos", default="0,0.01,0.1,0.5")
    p.add_argument("--gammas", default="0.001")
    p.add_argument("--rho_relative", action="store_true", help="ρ is a fraction of ‖ϕ‖ (sam.rho_relative)")
    p.add_argument("--eval_epochs", type=int, default=300)
    p.add_argument("--eval_seeds", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="/tmp/satm_sweep")
    args = p.parse_args(argv)
    rows = []
    for gamma in (float(g) for g in args.gammas.split(",")):
        for rho in (float(r) for r in args.rhos.split(",")):
            config = load_config(args.config)
            s = config.satm
            config.ipc, config.steps, config.seed = args.ipc, args.steps, args.seed
            config.log_every, config.checkpoint_every, config.eval.every = 1, args.steps, 0
            config.eval.epochs, config.eval.num_seeds = args.eval_epochs, args.eval_seeds
            config.eval.random_real = False  # the baseline does not depend on ρ, γ
            s.noise_gamma = gamma
            if rho == 0:
                s.sam.variant, s.sam.rho = "none", 0.0
            else:
                s.sam.rho = rho
                if args.rho_relative:
                    s.sam.rho_relative = True
            tag = f"ipc{args.ipc}_rho{rho:g}{'rel' if args.rho_relative else ''}_gamma{gamma:g}_seed{args.seed}"
            workdir = os.path.join(args.out, tag)
            started = time.perf_counter()
            result = run(config, workdir, stream=io.StringIO())
            row = {"ipc": args.ipc, "rho": rho, "rho_relative": args.rho_relative, "gamma": gamma,
                   "steps": args.steps, "seed": args.seed, "accuracy": result["synthetic"]["mean"],
                   "accuracy_std": result["synthetic"]["std"], "seconds": time.perf_counter() - started,
                   **sharpness(os.path.join(workdir, "metrics.jsonl"))}
            print(json.dumps(row), flush=True)
            rows.append(row)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "sweep.json"), "w") as f:
        json.dump(rows, f, indent=1)
    print("\n| ρ | γ | L(ϕ̃) | L(ϕ+ε) − L(ϕ̃) | relative | ‖ε‖ | accuracy |\n|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['rho']:g}{' ‖ϕ‖' if r['rho_relative'] else ''} | {r['gamma']:g} | {r['loss']:.4f} | "
              f"{r['sharpness']:.4f} | {r['relative_sharpness']:.3f} | {r['eps_norm']:.3f} | "
              f"{r['accuracy']:.4f} ± {r['accuracy_std']:.4f} |")


if __name__ == "__main__":
    main()
