"""Why does DTL fall short? Evidence per held-out domain (docs/domain_generalization.md, "Diagnosis").

PYTHONPATH=. python benchmarks/dg_diagnose.py --config=configs/dtl_tiny.py --held=photo [--set=dtl.alpha_style=0.1]

For every chosen held-out domain, with the squeeze model the run uses (made and stored if missing):
* the squeeze model's accuracy on the held-out domain's test split and on each seen domain's test split;
* the spatial size of every BN-layer input (eq. 4's per-image variance is 0 on a 1x1 map);
* the DTL loss terms (CE, avg-style, ψ CE, per-style) at a few recover steps;
* after the recover: the squeeze model's accuracy and CE on S, on ψ(S; θ_e) for each seen domain e, and on the
  relabel views; the normalised style distance (eq. 8) of S, of ψ(S; θ_e) and -- for scale -- of IPC random real
  images of every seen domain to the targets, per stage of the network;
* per-layer, the size of each style term relative to the CE term (which one drives the images).
With ``--validate``, also the held-out accuracy (dg_leave_one_out.py's protocol). Prints one JSON line per
held-out domain; ``--out`` also writes them.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, os.path.dirname(__file__))

from dg_leave_one_out import load_config  # noqa: E402

from ddjax import algorithms, evaluate, losses, models, squeeze  # noqa: E402
from ddjax.algorithms import decoupled, dtl  # noqa: E402
from ddjax.data import collection_from_config  # noqa: E402


def accuracy(model, variables, x, y) -> float:
    logits = model.apply(variables, jnp.asarray(x), train=False)
    return float(jnp.mean(jnp.argmax(logits, -1) == jnp.asarray(y)))


def layer_distances(model, teacher, x, targets, normalize=True) -> list[float]:
    """Normalised style loss (eq. 8) of each BN layer between the set ``x`` (class-wise: per class, then the
    mean over classes, as DTL's batches) and ``targets``."""
    _, layers = models.bn_inputs(model, teacher, jnp.asarray(x))
    return [float(losses.normalized_style_loss(losses.set_style(maps), t, normalize=normalize))
            for (maps, _, _), t in zip(layers, targets)]


def classwise_distances(model, teacher, x, y, num_classes, targets) -> list[float]:
    per = [layer_distances(model, teacher, x[y == k], targets) for k in range(num_classes)]
    return list(np.mean(np.asarray(per), 0))


def stage_means(values: list[float], sizes: list[int]) -> dict:
    """Mean of per-layer values grouped by the layer's spatial side."""
    out: dict = {}
    for v, s in zip(values, sizes):
        out.setdefault(f"{s}x{s}", []).append(v)
    return {k: round(float(np.mean(v)), 4) for k, v in out.items()}


def diagnose(config, held: int, collection, validate: bool = False) -> dict:
    hp = config.dtl
    k = collection.num_classes
    seen = [i for i in range(collection.num_domains) if i != held]
    dataset = collection.load_many(seen)
    real = algorithms.make_real_pool(dataset.train_images, dataset.train_labels, k)
    data = algorithms.prepare_data(config, dataset, real, stream=sys.stderr)
    model = squeeze.build_squeeze_model(hp.squeeze, k)
    teacher = decoupled.pick(data.teacher, 0)
    out: dict = {"held_out": collection.domains[held]}
    held_x, held_y = collection.load_test(held)     # the held-out domain's train split is never built
    out["squeeze_acc_held_out"] = round(accuracy(model, teacher, held_x, held_y), 4)
    out["squeeze_acc_seen_test"] = {collection.domains[i]: round(accuracy(model, teacher, *collection.load_test(i)), 4)
                                    for i in seen}
    _, layers = models.bn_inputs(model, teacher, jnp.asarray(dataset.train_images[:2]))
    sizes = [int(maps.shape[1]) for maps, _, _ in layers]
    out["bn_layer_sides"] = sizes
    avg_targets = [(jnp.mean(m, 0), jnp.mean(s, 0)) for m, s in data.styles]

    algo = algorithms.get_algorithm(config, models.build_from_config(config.model, k), k, dataset.image_shape)
    k_init, k_state, _ = jax.random.split(jax.random.PRNGKey(config.seed), 3)
    state = algo.init(k_state, algorithms.init_synthetic(k_init, real, config.ipc, config.init))
    step = jax.jit(algo.step)
    trace = []
    marks = {0, config.steps // 4, config.steps // 2, config.steps - 1}
    for i in range(config.steps):
        state, metrics = step(state, data)
        if i in marks:
            trace.append({"step": i + 1, **{n: round(float(v), 4) for n, v in metrics.items()}})
    out["loss_trace"] = trace
    s_x = np.asarray(state.synthetic.images)
    s_y = np.asarray(state.synthetic.labels)
    s_logits = model.apply(teacher, jnp.asarray(s_x), train=False)
    out["teacher_acc_S"] = round(float(jnp.mean(jnp.argmax(s_logits, -1) == s_y)), 4)
    out["teacher_ce_S"] = round(float(optax.softmax_cross_entropy_with_integer_labels(s_logits, s_y).mean()), 4)
    out["style_S_vs_avg_by_side"] = stage_means(classwise_distances(model, teacher, s_x, s_y, k, avg_targets), sizes)
    # real IPC images of each seen domain against the same average target: what "a real set" scores
    reals = {}
    for j, i in enumerate(seen):
        d = collection.load(i)
        rx, ry = evaluate.random_real_subset(jax.random.PRNGKey(j), d.train_images, d.train_labels, config.ipc, k)
        reals[collection.domains[i]] = stage_means(classwise_distances(model, teacher, np.asarray(rx), ry, k,
                                                                       avg_targets), sizes)
        out.setdefault("teacher_acc_real_ipc", {})[collection.domains[i]] = round(accuracy(model, teacher, rx, ry), 4)
    out["style_real_ipc_vs_avg_by_side"] = reals
    if hp.transfer:
        psi = dtl.build_psi(hp, len(seen))
        aux = state.extras["aux"]
        out["teacher_acc_psi"], out["style_psi_vs_domain_by_side"], out["psi_change"] = {}, {}, {}
        for e in range(len(seen)):
            w = models.domain_weights(jnp.full((len(s_x),), e), len(seen))
            t = np.asarray(psi.apply(aux, jnp.asarray(s_x), w))
            name = collection.domains[seen[e]]
            out["teacher_acc_psi"][name] = round(accuracy(model, teacher, t, s_y), 4)
            target = [(m[e], s[e]) for m, s in data.styles]
            out["style_psi_vs_domain_by_side"][name] = stage_means(
                classwise_distances(model, teacher, t, s_y, k, target), sizes)
            out["psi_change"][name] = round(float(np.sqrt(np.mean((t - s_x) ** 2)) / np.std(s_x)), 4)
    view = algorithms.eval_view(state, config)
    soft = np.asarray(view["labels"])
    n = len(s_y)
    view_y = np.tile(s_y, len(soft) // n)       # view-major: views of image i at i, n + i, ...
    out["relabel_view_argmax_agrees_with_class"] = round(float(np.mean(np.argmax(soft, -1) == view_y)), 4)
    out["relabel_mean_max_prob"] = round(float(np.mean(np.max(soft, -1))), 4)
    if validate:
        e = config.eval
        result = evaluate.evaluate_synthetic(
            jax.random.PRNGKey(1000 + held), models.build_from_config(config.model, k), view["images"], soft,
            held_x, held_y, num_seeds=e.num_seeds, epochs=e.epochs, lr=e.lr,
            momentum=e.momentum, weight_decay=e.weight_decay, batch_size=e.batch_size, dsa_strategy=e.dsa_strategy,
            num_classes=k)
        out["validation"] = result.to_dict()     # same protocol and keys as dg_leave_one_out.py
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default="configs/dtl_tiny.py")
    parser.add_argument("--set", action="append", default=[], help="key=value config override (repeatable)")
    parser.add_argument("--held", default="photo", help="comma list of held-out domains")
    parser.add_argument("--out", default="")
    parser.add_argument("--validate", action="store_true", help="also train the validation networks (3 seeds)")
    args = parser.parse_args()
    config = load_config(args.config, args.set)
    collection = collection_from_config(config)
    rows = []
    for name in args.held.split(","):
        row = diagnose(config, collection.index(name), collection, args.validate)
        row["set"] = args.set
        print(json.dumps(row), flush=True)
        rows.append(row)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
