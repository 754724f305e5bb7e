"""launch.malloc: the glibc tunables every compute command re-executes with (docs/performance.md, "Page faults")."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from launch import malloc
from repo_files import REPO


def test_tuned_environment_adds_the_tunables_once_and_respects_the_user():
    env = malloc.tuned_environment({"PATH": "/bin"}, "Linux", "glibc")
    assert env == {"PATH": "/bin", "GLIBC_TUNABLES": malloc.TUNABLES}
    assert malloc.tuned_environment(env, "Linux", "glibc") is None          # after the re-exec: nothing to do
    other = malloc.tuned_environment({"GLIBC_TUNABLES": "glibc.rtld.nns=2"}, "Linux", "glibc")
    assert other["GLIBC_TUNABLES"] == "glibc.rtld.nns=2:" + malloc.TUNABLES   # a non-malloc tunable is kept
    assert malloc.tuned_environment({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, "Linux", "glibc") is None
    assert malloc.tuned_environment({malloc.OPT_OUT: "off"}, "Linux", "glibc") is None
    assert malloc.tuned_environment({}, "Darwin", "") is None
    assert malloc.tuned_environment({}, "Linux", "musl") is None


# In the re-executed child, a 256 MiB malloc lies in the heap (below the program break) and survives free
# (the break does not move back): mmap_max=0 and trim_threshold took effect. Without them glibc mmaps the block.
_CHILD = """
import ctypes, os, sys
from launch.malloc import reexec_with_tuned_malloc
reexec_with_tuned_malloc()
libc = ctypes.CDLL(None)
libc.malloc.restype = libc.sbrk.restype = ctypes.c_void_p
libc.sbrk.argtypes = [ctypes.c_long]
block = libc.malloc(256 << 20)
top = libc.sbrk(0)
libc.free(ctypes.c_void_p(block))
print(os.environ.get("GLIBC_TUNABLES", ""), block < top, libc.sbrk(0) == top)
"""


@pytest.mark.skipif(sys.platform != "linux" or os.confstr("CS_GNU_LIBC_VERSION") is None, reason="glibc only")
@pytest.mark.parametrize("opt_out", ["", "off"])
def test_reexecuted_process_keeps_large_blocks_in_the_heap(opt_out):
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    env[malloc.OPT_OUT] = opt_out
    out = subprocess.run([sys.executable, "-c", _CHILD], cwd=REPO, env=env, capture_output=True, text=True,
                         check=True, timeout=60).stdout.split()
    if opt_out:
        assert out == ["False", "True"], out   # glibc's default: an mmap'd block, above the break (the check can fail)
    else:
        assert out == [malloc.TUNABLES, "True", "True"], out

