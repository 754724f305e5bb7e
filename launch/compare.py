"""Command line: ``python -m launch.compare DIR [DIR ...] [--out=compare.png]``.

Reads each finished run's ``results.json`` (and ``config.json`` for the method's variant) and prints one markdown
table: run, method, dataset, IPC, steps, synthetic and random-real accuracy (mean ± std), the other architectures
of ``eval_<NAME>.json`` files, and seconds; staged runs show A^T / F^T or the leave-one-domain-out mean instead.
Writes a bar chart of the headline accuracy (with the std as error bars) to ``--out``. A run folder without
``results.json`` is one ``error:`` line and exit status 2; nothing is written then.
"""
from __future__ import annotations

import glob
import json
import os
import sys
from typing import Any

from absl import app, flags

FLAGS = flags.FLAGS


def _pm(entry: dict | None) -> str:
    return "" if entry is None else f"{entry['mean']:.4f} ± {entry['std']:.4f}"


def read_run(folder: str) -> dict[str, Any]:
    """One table row from a run folder: its ``results.json``, the method variant from ``config.json``
    (``<algorithm>.mode`` or ``.base`` when the config has one) and every ``eval_<NAME>.json``."""
    from ddjax.errors import CheckpointError   # noqa: PLC0415
    path = os.path.join(folder, "results.json")
    try:
        with open(path, encoding="utf-8") as f:
            results = json.load(f)
    except FileNotFoundError:
        raise CheckpointError(f"{folder} has no results.json (not a finished ddjax run); pass run folders such as "
                              "workdirs/dm_tiny") from None
    except ValueError as e:
        raise CheckpointError(f"{path} is unreadable ({e})") from None
    method = results.get("algorithm", "?")
    try:
        with open(os.path.join(folder, "config.json"), encoding="utf-8") as f:
            section = json.load(f).get(method, {})
        variant = section.get("mode") or section.get("base")
        if isinstance(variant, str) and variant:
            method = f"{method} ({variant})"
    except (OSError, ValueError, AttributeError):
        pass   # the variant is decoration; results.json alone makes the row
    row = {"run": os.path.basename(os.path.normpath(folder)), "method": method,
           "dataset": results.get("dataset", "?"), "ipc": results.get("ipc", "?"), "steps": results.get("steps", "?"),
           "seconds": results.get("seconds")}
    if "synthetic" in results:
        row["accuracy"] = results["synthetic"]
        row["random_real"] = results.get("random_real")
    elif "A_T" in results:
        row["accuracy"] = {"mean": results["A_T"], "std": results.get("A_T_std", 0.0)}
        row["note"] = f"A^T (F^T {results['F_T']:.4f})"
    elif "leave_one_out_mean" in results:
        per_domain = [v["mean"] for v in results["leave_one_out"].values()]
        std = float(sum((a - results["leave_one_out_mean"]) ** 2 for a in per_domain) / len(per_domain)) ** 0.5
        row["accuracy"] = {"mean": results["leave_one_out_mean"], "std": std}
        row["note"] = "leave-one-domain-out mean (std over held-out domains)"
    row["architectures"] = {}
    for eval_file in sorted(glob.glob(os.path.join(folder, "eval_*.json"))):
        with open(eval_file, encoding="utf-8") as f:
            entry = json.load(f)
        row["architectures"][entry.get("architecture", os.path.basename(eval_file)[5:-5])] = entry
    return row


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The comparison table (GitHub markdown); one column per architecture evaluated in any run."""
    archs = sorted({name for r in rows for name in r["architectures"]})
    header = ["run", "method", "dataset", "IPC", "steps", "synthetic", "random real", *archs, "seconds"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        acc = _pm(r.get("accuracy")) + (f" ({r['note']})" if r.get("note") else "")
        seconds = "" if r["seconds"] is None else f"{r['seconds']:.0f}"
        cells = [r["run"], r["method"], r["dataset"], str(r["ipc"]), str(r["steps"]), acc, _pm(r.get("random_real")),
                 *[_pm(r["architectures"].get(a)) for a in archs], seconds]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def bar_chart(rows: list[dict[str, Any]], path: str) -> None:
    """Bars of each run's headline accuracy (± std), random real beside it where the run has one."""
    from launch import outputs   # noqa: PLC0415

    accuracy = [r.get("accuracy") or {"mean": 0.0, "std": 0.0} for r in rows]
    real = [r.get("random_real") or {"mean": 0.0, "std": 0.0} for r in rows]
    outputs.save_bar_chart(path, [f"{r['run']}\n{r['method']}" for r in rows], {
        "synthetic": ([e["mean"] for e in accuracy], [e["std"] for e in accuracy]),
        "random real": ([e["mean"] for e in real], [e["std"] for e in real])})


def main(argv):
    folders = argv[1:]
    if not folders:
        print("error: give run folders, e.g. python -m launch.compare workdirs/dm_tiny workdirs/m3d_tiny",
              file=sys.stderr)
        sys.exit(2)
    from launch import cli   # noqa: PLC0415
    cli.quiet_logs()
    rows = [cli.run_or_exit(read_run, folder) for folder in folders]
    print(markdown_table(rows))
    bar_chart(rows, FLAGS.out)
    print(f"bar chart: {FLAGS.out}", file=sys.stderr)


if __name__ == "__main__":
    flags.DEFINE_string("out", "compare.png", "Where to write the bar chart (PNG).")
    app.run(main)
