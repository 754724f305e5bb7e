"""What every ``python -m launch.<command> --config=...`` entry point does around its work: refuse stray arguments
and a missing ``--config`` (one ``error:`` line, exit 2), quieten orbax/jax INFO logs unless ``--verbosity`` was
given, and turn a :class:`ddjax.errors.DDJaxError` into one ``error:`` line and exit status 2."""
from __future__ import annotations

import ast
import glob
import os
import re
import sys
from typing import Any, Callable

from absl import app, flags, logging


def start(argv: list[str], example: str) -> None:
    """Checks shared by the commands; ``example`` is a full command line shown when ``--config`` is missing."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if flags.FLAGS.config is None:
        print(f"error: no config given; run e.g. {example}", file=sys.stderr)
        sys.exit(2)
    quiet_logs()


def quiet_logs() -> None:
    """orbax and jax log every action at INFO (e.g. the missing-TPU line); show warnings only unless the user gave
    ``--verbosity``. Every ``launch.*`` command calls this after absl parsed its flags."""
    if not flags.FLAGS["verbosity"].present:  # --verbosity=0 shows them again
        logging.set_verbosity(logging.WARNING)


def run_or_exit(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)``; a DDJaxError becomes ``error: <message>`` on stderr and exit status 2."""
    from ddjax.errors import DDJaxError  # after absl parsed the flags, so JAX sees the shell's settings first
    try:
        return fn(*args, **kwargs)
    except DDJaxError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


# --------------------------------------------------------------------------------------------------------------
# What ``python -m launch.main --help`` lists, and the default workdir.
# --------------------------------------------------------------------------------------------------------------
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: One line per registered algorithm for ``--help`` (an algorithm missing here shows its module's first line).
ALGORITHM_SUMMARIES = {
    "dm": "distribution matching: mean embeddings of random networks (Zhao & Bilen, WACV'23)",
    "m3d": "distribution matching with a Gaussian-kernel MMD (Zhang et al., AAAI'24)",
    "iid": "IID: class centralization + covariance matching on DM/M3D, teacher pool (Deng et al., CVPR'24)",
    "dc": "gradient matching (Zhao, Mopuri & Bilen, ICLR'21)",
    "dsa": "gradient matching with differentiable siamese augmentation (Zhao & Bilen, ICML'21)",
    "idc": "multi-formation + gradient matching on a trained network (Kim et al., ICML'22)",
    "dream": "DREAM+: k-means representatives + bidirectional matching (Liu et al., 2023)",
    "mtt": "matching training trajectories of expert networks (Cazenavette et al., CVPR'22)",
    "satm": "sharpness-aware trajectory matching: SAM outer step, smoothing, truncated unrolls",
    "sre2l": "squeeze → recover BN statistics → relabel (Yin et al., NeurIPS'23)",
    "rded": "selected and stitched real patches, relabelled (Sun et al., CVPR'24)",
    "dtl": "DD for domain generalisation: style-transfer network, DSM relabel (leave-one-domain-out)",
    "didd": "domain-incremental distillation: α/β meta-learned asymmetric update over a domain stream",
}


def default_workdir(config_argument: str) -> str:
    """``workdirs/<config file stem>[_<argument>]``: ``configs/dm_fmnist.py:10`` → ``workdirs/dm_fmnist_10``, so two
    parameterisations of one config file never share (and refuse) a workdir. Characters other than letters,
    digits, ``.``, ``=`` and ``-`` in the argument become ``_``."""
    path, _, argument = config_argument.partition(".py:")
    stem = os.path.splitext(os.path.basename(path if argument else config_argument))[0]
    if argument:
        stem += "_" + re.sub(r"[^A-Za-z0-9.=-]+", "_", argument).strip("_")
    return os.path.join("workdirs", stem)


def _first_docstring_line(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            doc = ast.get_docstring(ast.parse(f.read())) or ""
    except (OSError, SyntaxError, ValueError):
        return ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def help_text(program: str) -> str:
    """The shipped configs (``configs/*.py``, first docstring line) and the algorithms, for ``--help``."""
    lines = [f"usage: {program} --config=configs/NAME.py[:ARG] [--workdir=DIR] [--config.FIELD=VALUE ...] "
             "[--print_config]", "", "Shipped configs (configs/):"]
    for path in sorted(glob.glob(os.path.join(REPO_ROOT, "configs", "*.py"))):
        line = _first_docstring_line(path)
        lines.append(f"  {os.path.basename(path):<20} {line if len(line) <= 96 else line[:95] + '…'}")
    lines += ["", "Algorithms (config.algorithm):"]
    from ddjax.algorithms import REGISTRY   # noqa: PLC0415  (only when --help is asked: imports jax)
    for name, entry in REGISTRY.items():
        summary = ALGORITHM_SUMMARIES.get(name) or \
            ((sys.modules[entry.make.__module__].__doc__ or "").strip().splitlines() or [""])[0]
        lines.append(f"  {name:<8} {summary}")
    lines += ["", "Outputs go to --workdir (default workdirs/<config name>[_<ARG>]); rerunning resumes. README.md and "
              "docs/ have the tour.", ""]
    return "\n".join(lines)
