"""What every ``python -m launch.<command> --config=...`` entry point does around its work: refuse stray arguments
and a missing ``--config`` (one ``error:`` line, exit 2), quieten orbax/jax INFO logs unless ``--verbosity`` was
given, and turn a :class:`ddjax.errors.DDJaxError` into one ``error:`` line and exit status 2."""
from __future__ import annotations

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
    if not flags.FLAGS["verbosity"].present:  # orbax and jax log every action at INFO; --verbosity=0 shows them
        logging.set_verbosity(logging.WARNING)


def run_or_exit(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)``; a DDJaxError becomes ``error: <message>`` on stderr and exit status 2."""
    from ddjax.errors import DDJaxError  # after absl parsed the flags, so JAX sees the shell's settings first
    try:
        return fn(*args, **kwargs)
    except DDJaxError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
