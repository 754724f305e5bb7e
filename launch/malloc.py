"""glibc malloc settings for XLA:CPU's per-call buffers: every ``launch.*`` command that computes re-executes itself
once with them (``GLIBC_TUNABLES``, which glibc reads only when a process starts).

Why (measured, docs/performance.md, "Page faults"): XLA:CPU allocates an executable's temporary buffers (GBs for
MTT/SATM) with ``malloc`` on every call. glibc serves blocks above 32 MiB with fresh ``mmap``'d pages and unmaps
them on ``free``, so every call faults its whole working set in again, one zeroed 4 KiB page at a time: MTT's N=5
outer step took 675,000 minor page faults and 1.3–1.5 s of kernel time per 4.5 s step. With

- ``glibc.malloc.mmap_max=0`` and ``glibc.malloc.trim_threshold=64 GiB``: large blocks come from the heap and stay
  there after ``free``, so the next call reuses pages already mapped;
- ``glibc.malloc.hugetlb=1``: the heap is ``madvise``'d for transparent huge pages (2 MiB pages, fewer TLB misses
  and faults; glibc ≥ 2.35, ignored by older ones),

the same step takes ~1,600 faults. The cost: the process keeps its peak heap until it exits instead of returning
freed blocks to the system. ``DDJAX_MALLOC_TUNABLES=off`` keeps glibc's defaults; a ``GLIBC_TUNABLES`` that already
sets any ``glibc.malloc.*`` tunable is left as it is.
"""
from __future__ import annotations

import os
import platform
import sys

#: The tunables added to ``GLIBC_TUNABLES`` (module doc).
TUNABLES = "glibc.malloc.hugetlb=1:glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736"
#: Set to ``off`` to keep glibc's malloc defaults.
OPT_OUT = "DDJAX_MALLOC_TUNABLES"


def tuned_environment(environ: dict[str, str], system: str, libc: str) -> dict[str, str] | None:
    """The environment to re-execute with, or ``None`` when there is nothing to do: not Linux with glibc, opted
    out, or ``GLIBC_TUNABLES`` already sets a ``glibc.malloc.*`` tunable (the user's, or ours after the re-exec)."""
    current = environ.get("GLIBC_TUNABLES", "")
    if (system != "Linux" or libc != "glibc" or environ.get(OPT_OUT, "").lower() in ("off", "0", "false", "no")
            or "glibc.malloc." in current):
        return None
    return {**environ, "GLIBC_TUNABLES": f"{current}:{TUNABLES}" if current else TUNABLES}


def reexec_with_tuned_malloc() -> None:
    """Re-execute this command (``sys.orig_argv``: the same interpreter flags, ``-m`` module and arguments) with
    :data:`TUNABLES` in its environment, unless :func:`tuned_environment` says there is nothing to do. Call it
    first thing in a command's ``__main__`` block, never from code that a test or notebook imports."""
    env = tuned_environment(dict(os.environ), platform.system(), platform.libc_ver()[0])
    if env is None:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, sys.orig_argv, env)
