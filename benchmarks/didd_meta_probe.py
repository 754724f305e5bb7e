"""Why do DIDD's learned rates not specialise? Per-sample meta-gradients along a real bi-level trajectory (issue 12).

    python benchmarks/didd_meta_probe.py --config=configs/didd_tiny.py --arg=seed=0 --out=/tmp/didd_probe.json
    python benchmarks/didd_meta_probe.py --set=didd.meta_normalise=True --out=/tmp/didd_probe_norm.json

Runs the config's stream exactly as the staged launcher does (same keys, boundary hook, per-domain steps; no
evaluation) and, at every step of domains t ≥ 2, BEFORE the step, measures with that step's own network, batch and
augmentation (``didd.step_inputs``), per stored image ``i``:

- ``dA_i = ∂L_meta/∂ᾱ_i`` and ``dB_i = ∂L_meta/∂β̄_i`` (eq. 10 at ``x̂_meta`` of eq. 9, the config's weights, no
  penalty), at the current rates;
- ``‖g_S,i‖²``, ``‖g_P,i‖²``, ``⟨g_S,i, g_P,i⟩`` and the first-order predictions (eq. 11)
  ``dA_i ≈ −η_x(w_S‖g_S,i‖² + w_P⟨g_S,i, g_P,i⟩)``, ``dB_i ≈ −η_x(w_P‖g_P,i‖² + w_S⟨g_S,i, g_P,i⟩)``.

The rates' SGD moves ``ᾱ_i − β̄_i`` up (towards stability) when ``push_i = dB_i − dA_i > 0`` (up to the sigmoid
factors of eq. 8). Per domain it reports: how well eq. 11 predicts the meta-gradient (correlation), the fraction of
(step, image) pairs with ``push > 0``, the per-image mean push over the domain's steps against its step-to-step std
(a consistent per-image preference is what specialisation needs; a per-step sign that the fresh random network
re-draws averages out), the correlation of an image's mean push with its share of ``‖g_S‖²`` (its "stable
contribution"), and the size of the meta-gradient against the penalty's ``λ/IPC``. One JSON file; docs/results.md,
"DIDD", has the numbers.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import common  # noqa: E402


def probe_fn(spec, didd_mod, bounds: tuple[tuple[float, float], tuple[float, float]]):
    """``probe(state, real_pool) -> dict`` of per-sample arrays at this state, with the next step's draws."""
    import jax  # noqa: PLC0415
    import jax.numpy as jnp  # noqa: PLC0415

    def probe(state, real_pool):
        d = state.extras["didd"]
        _, inputs, stored = didd_mod.step_inputs(spec, state, real_pool)
        previous = jax.lax.stop_gradient(didd_mod.network_outputs(spec, inputs, didd_mod.decode_stored(spec, d.previous)))

        def outputs_fn(x):
            return didd_mod.network_outputs(spec, inputs, didd_mod.decode_stored(spec, x))

        def plastic(out):
            return didd_mod.class_mmd(inputs.real_embed, out["embed"], spec.scales, spec.unbiased)

        def stable(out):
            return didd_mod.class_mmd(previous["embed"], out["embed"], spec.scales, spec.unbiased)

        (lp, ls), (g_p, g_s), _ = didd_mod.pulled_back_gradients(outputs_fn, stored, (plastic, stable))
        w_s, w_p = didd_mod.meta_weights(spec, ls, lp)
        hp_alpha, hp_beta = state.extras["didd"].rates.alpha, state.extras["didd"].rates.beta
        a_bar = didd_mod.bounded_rates(hp_alpha, bounds[0])
        b_bar = didd_mod.bounded_rates(hp_beta, bounds[1])
        col = lambda v: v[:, None, None, None]  # noqa: E731

        def meta(rates):
            x_meta = stored - spec.eta_x * (col(rates[0]) * g_s + col(rates[1]) * g_p)
            out = outputs_fn(x_meta)
            return w_s * stable(out) + w_p * plastic(out)

        d_a, d_b = jax.grad(meta)((a_bar, b_bar))
        flat = lambda g: g.reshape(g.shape[0], -1)  # noqa: E731
        ss, pp = jnp.sum(flat(g_s) ** 2, -1), jnp.sum(flat(g_p) ** 2, -1)
        sp = jnp.sum(flat(g_s) * flat(g_p), -1)
        return {"dA": d_a, "dB": d_b, "ss": ss, "pp": pp, "sp": sp,
                "predA": -spec.eta_x * (w_s * ss + w_p * sp), "predB": -spec.eta_x * (w_p * pp + w_s * sp),
                "loss_stable": ls, "loss_plastic": lp, "a_bar": a_bar, "b_bar": b_bar}
    return jax.jit(probe)


def corr(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel(), b.ravel()
    if a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def domain_summary(records: list[dict], ipc: int, lambdas: tuple[float, float]) -> dict:
    """Statistics of one domain's probes (arrays ``(steps, N)``)."""
    stack = {k: np.stack([r[k] for r in records]) for k in records[0]}
    push = stack["dB"] - stack["dA"]                        # > 0: ᾱ_i − β̄_i grows
    mean_push, std_push = push.mean(0), push.std(0)
    share_s = stack["ss"] / stack["ss"].sum(1, keepdims=True)
    share_p = stack["pp"] / stack["pp"].sum(1, keepdims=True)
    return {
        "steps": int(push.shape[0]),
        "corr_dA_eq11": corr(stack["dA"], stack["predA"]), "corr_dB_eq11": corr(stack["dB"], stack["predB"]),
        "frac_push_stable": float((push > 0).mean()),
        "frac_images_mean_push_stable": float((mean_push > 0).mean()),
        "mean_push": float(mean_push.mean()), "spread_of_image_mean_push": float(mean_push.std()),
        "mean_step_std_push": float(std_push.mean()),
        "snr_image_preference": float(mean_push.std() / (std_push.mean() / np.sqrt(push.shape[0]) + 1e-30)),
        "corr_push_stable_share": corr(mean_push, share_s.mean(0)),
        "corr_push_plastic_share": corr(mean_push, share_p.mean(0)),
        "corr_push_step_to_step": float(np.mean([corr(push[t], push[t + 1]) for t in range(push.shape[0] - 1)])),
        "median_ratio_ss_pp": float(np.median(stack["ss"] / (stack["pp"] + 1e-30))),
        "frac_ss_gt_pp": float((stack["ss"] > stack["pp"]).mean()),
        "mean_cos_sp": float(np.mean(stack["sp"] / np.sqrt(stack["ss"] * stack["pp"] + 1e-30))),
        "median_abs_dA": float(np.median(np.abs(stack["dA"]))), "median_abs_dB": float(np.median(np.abs(stack["dB"]))),
        "penalty_grad_alpha": lambdas[0] / ipc, "penalty_grad_beta": lambdas[1] / ipc,
        "mean_loss_stable": float(stack["loss_stable"].mean()), "mean_loss_plastic": float(stack["loss_plastic"].mean()),
        "end_diff_std": float((stack["a_bar"][-1] - stack["b_bar"][-1]).std()),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="configs/didd_tiny.py")
    p.add_argument("--arg", default="seed=0")
    p.add_argument("--set", action="append", default=[], help="key=value config override (repeatable)")
    p.add_argument("--out", default="/tmp/didd_probe.json")
    args = p.parse_args()

    import jax  # noqa: PLC0415

    from ddjax import algorithms, continual, models  # noqa: PLC0415
    from ddjax.algorithms import didd  # noqa: PLC0415
    from launch.domains import collection_from_config  # noqa: PLC0415

    config = common.override_config(common.load_config(args.config, args.arg), args.set)
    hp = config.didd
    collection = collection_from_config(config)
    plan = continual.make_plan(config.domains.plan, collection.num_domains)
    model = models.build_from_config(config.model, collection.num_classes)
    algo = didd.make(config, model, collection.num_classes, collection.image_shape)
    spec = didd.make_spec(config, model, collection.num_classes, collection.image_shape)
    probe = probe_fn(spec, didd, (tuple(hp.alpha_range), tuple(hp.beta_range)))
    step = jax.jit(algo.step)
    keys = jax.random.split(jax.random.PRNGKey(config.seed), 3)
    state, domains = None, []
    for k in range(len(plan)):
        dataset = collection.load_many(plan[k].train)
        real = algorithms.make_real_pool(dataset.train_images, dataset.train_labels, dataset.num_classes)
        if state is None:
            synthetic = algorithms.init_synthetic(jax.random.fold_in(keys[0], k), real, config.ipc, config.init)
            state = algo.init(jax.random.fold_in(keys[1], k), synthetic)
        state = algorithms.boundary(state, config, k)
        records = []
        for _ in range(config.steps):
            if k > 0 and hp.mode == "bilevel":
                records.append({n: np.asarray(v) for n, v in probe(state, real).items()})
            state, _ = step(state, real)
        if records:
            summary = {"domain": k + 1, **domain_summary(records, config.ipc, (hp.lambda_alpha, hp.lambda_beta))}
            domains.append(summary)
            print(json.dumps(summary), flush=True)
    a_bar, b_bar = didd.rates_in_use(state, config)
    result = {"config": args.config, "arg": args.arg, "set": args.set, "domains": domains,
              "end_alpha_bar": np.asarray(a_bar).round(4).tolist(), "end_beta_bar": np.asarray(b_bar).round(4).tolist()}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
