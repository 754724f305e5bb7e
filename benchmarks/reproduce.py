"""Reproduce a paper table end to end: distil every (method, IPC) cell with the config of the paper's setting,
evaluate with the paper's protocol (the config's ``eval`` section), and write a markdown table of ddjax's numbers
beside the paper's.

    python benchmarks/reproduce.py --table=dream_table1 [--scale=tiny|cpu|paper] [--ipcs=1,10] [--methods=IDC,DREAM+]

Scales (the markdown says which ran):
  paper  the configs as they are (the paper's iterations and evaluation; a GPU job).
  cpu    1/20 of the iterations (at least 2), evaluation 300 epochs x 3 seeds, DREAM+ clusters 512 images per class:
         hours on a 2-core CPU per table.
  tiny   the same configs shrunk to seconds (digits instead of the paper's data, width 8, one iteration of two
         matching rounds, 2 evaluation epochs): checks the pipeline, not the numbers (tests/test_reproduce.py).
Runs on whatever device JAX sees. Each cell's workdir is ``--out/<table>/<scale>/<method>_ipc<N>``; rerunning
resumes finished cells from their results.json.
"""
from __future__ import annotations

import argparse
import importlib.util
import io
import json
import os
import sys
from typing import NamedTuple

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from launch.run import run  # noqa: E402

SCALES = ("tiny", "cpu", "paper")


class Row(NamedTuple):
    method: str
    config: str                 # configs/<config>.py, called with the IPC
    paper: tuple                # the paper's accuracy (%) per IPC of the table, None where not reported


class Table(NamedTuple):
    title: str
    ipcs: tuple
    rows: tuple
    random_real: tuple          # the paper's "Random" row


TABLES = {
    "dream_table1": Table(
        title="DREAM+ (Liu et al.) Table 1, Fashion-MNIST, ConvNet-3, top-1 test accuracy (%)",
        ipcs=(1, 10, 50),
        rows=(Row("DC", "dc_fmnist", (70.5, 82.3, 83.6)), Row("DSA", "dsa_fmnist", (70.6, 84.6, 88.7)),
              Row("IDC", "idc_fmnist", (81.0, 86.0, 86.2)), Row("DREAM+", "dream_fmnist", (82.6, 87.2, 87.6))),
        random_real=(51.4, 73.8, 82.5)),
}


def load_config(name: str, ipc: int):
    path = os.path.join(REPO, "configs", f"{name}.py")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(str(ipc))


def _section(config):
    """The algorithm's hyper-parameters and, for DREAM+, its base's section (where rounds and batches live)."""
    hp = config[config.algorithm]
    return hp, (hp[hp.base] if "base" in hp and hp.base in hp else hp)


def apply_scale(config, scale: str):
    """Shrink ``config`` in place to ``scale`` (module docstring); returns it."""
    if scale == "paper":
        return config
    hp, base = _section(config)
    if scale == "cpu":
        config.steps = max(2, config.steps // 20)
        config.eval.epochs, config.eval.num_seeds = 300, 3
        config.eval.every = 0
        if "cluster_pool" in hp:
            hp.cluster_pool = 512
        return config
    config.data.name = "digits"
    config.data.zca = False
    config.model.width, config.model.depth = 8, 2
    config.steps, config.log_every, config.checkpoint_every = 1, 1, 1
    config.eval.every, config.eval.epochs, config.eval.num_seeds = 0, 2, 1
    digits_strategy = "color_crop_cutout_scale_rotate"  # digits are not mirror-symmetric: no flip
    if config.dsa_strategy not in ("", "none"):
        config.dsa_strategy = digits_strategy
    if config.eval.dsa_strategy not in ("", "none"):
        config.eval.dsa_strategy = digits_strategy
    for field, value in (("outer_loop", 2), ("inner_loop", 2), ("batch_real", 8), ("batch_train", 16),
                         ("n_data", 16), ("net_batch", 16), ("factor", 1), ("batch_syn_max", 16)):
        if field in base:
            base[field] = value
    if "interval" in hp:
        hp.interval, hp.cluster_pool, hp.kmeans_iters = 2, 32, 5
    return config


def run_cell(table: str, scale: str, row: Row, ipc: int, out: str, stream) -> dict:
    config = apply_scale(load_config(row.config, ipc), scale)
    workdir = os.path.join(out, table, scale, f"{row.config}_ipc{ipc}")
    done = os.path.join(workdir, "results.json")
    if os.path.exists(done):
        return json.load(open(done))
    print(f"{row.method} IPC {ipc} ({scale}): {config.steps} iterations, eval {config.eval.epochs} epochs x "
          f"{config.eval.num_seeds} seeds, protocol {config.eval.protocol} -> {workdir}", file=stream, flush=True)
    return run(config, workdir, stream=io.StringIO())


def _pct(result: dict | None, key: str = "synthetic") -> str:
    if not result or key not in result:
        return "not run"
    r = result[key]
    return f"{100 * r['mean']:.1f} ± {100 * r['std']:.1f}"


def markdown(table_name: str, scale: str, results: dict, ipcs: tuple, methods: tuple) -> str:
    """The table: one row per method, per IPC 'ddjax (paper)' cells, a random-real row, and the scale."""
    table = TABLES[table_name]
    header = "| method | " + " | ".join(f"IPC {i}: ddjax | paper" for i in ipcs) + " |"
    lines = [f"### {table.title}", "", f"ddjax scale: `{scale}` (benchmarks/reproduce.py --table={table_name} "
             f"--scale={scale}); ddjax cells: mean ± std over evaluation seeds.", "", header,
             "|---|" + "---|---|" * len(ipcs)]
    any_result = {}
    for row in table.rows:
        if row.method not in methods:
            continue
        cells = []
        for ipc in ipcs:
            res = results.get((row.method, ipc))
            any_result.setdefault(ipc, res)
            paper = row.paper[table.ipcs.index(ipc)]
            cells.append(f"{_pct(res)} | {paper if paper is not None else '-'}")
        lines.append(f"| {row.method} | " + " | ".join(cells) + " |")
    cells = [f"{_pct(any_result.get(ipc), 'random_real')} | {table.random_real[table.ipcs.index(ipc)]}"
             for ipc in ipcs]
    lines.append("| random real | " + " | ".join(cells) + " |")
    first = next((r for r in results.values() if r), None)
    if first:
        lines += ["", f"Data: {first['dataset']}; model: {first['model']}; evaluation: {first['eval_epochs']} epochs, "
                      f"{first['num_seeds']} seeds."]
    return "\n".join(lines) + "\n"


def reproduce(table: str, scale: str = "cpu", ipcs: tuple | None = None, methods: tuple | None = None,
              out: str = "runs/reproduce", stream=None) -> str:
    """Run the cells and write ``<out>/<table>_<scale>.md``; returns the markdown."""
    stream = sys.stderr if stream is None else stream
    if table not in TABLES:
        raise SystemExit(f"error: unknown table {table!r}; choose one of {', '.join(TABLES)}")
    if scale not in SCALES:
        raise SystemExit(f"error: unknown scale {scale!r}; choose one of {', '.join(SCALES)}")
    t = TABLES[table]
    ipcs = tuple(ipcs or t.ipcs)
    methods = tuple(methods or (r.method for r in t.rows))
    bad = [i for i in ipcs if i not in t.ipcs] + [m for m in methods if m not in {r.method for r in t.rows}]
    if bad:
        raise SystemExit(f"error: {bad} not in table {table} (IPCs {t.ipcs}, methods "
                         f"{[r.method for r in t.rows]})")
    results = {}
    for row in t.rows:
        if row.method in methods:
            for ipc in ipcs:
                results[row.method, ipc] = run_cell(table, scale, row, ipc, out, stream)
    text = markdown(table, scale, results, ipcs, methods)
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, f"{table}_{scale}.md")
    with open(path, "w") as f:
        f.write(text)
    print(text, file=stream)
    print(f"written {path}", file=stream)
    return text


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--table", required=True, choices=sorted(TABLES))
    p.add_argument("--scale", default="cpu", choices=SCALES)
    p.add_argument("--ipcs", default="", help="comma-separated subset of the table's IPCs")
    p.add_argument("--methods", default="", help="comma-separated subset of the table's methods")
    p.add_argument("--out", default="runs/reproduce")
    args = p.parse_args(argv)
    ipcs = tuple(int(i) for i in args.ipcs.split(",")) if args.ipcs else None
    methods = tuple(args.methods.split(",")) if args.methods else None
    reproduce(args.table, args.scale, ipcs, methods, args.out)


if __name__ == "__main__":
    main()
