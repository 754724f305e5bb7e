"""JAX's persistent compilation cache for launcher runs (issue 15): a repeated or resumed run loads its compiled
XLA programs from disk instead of compiling them again (MTT/SATM's unrolled step and the evaluation take minutes
to compile on CPU; docs/results.md, issue 15).

``config.compilation_cache`` chooses the directory:

- ``"auto"`` (default): ``$DDJAX_CACHE`` when set (``off`` there disables it), else ``<workdir's parent>/.jax_cache``
  (``workdirs/dm_tiny`` -> ``workdirs/.jax_cache``, shared by every run made beside it);
- ``"off"``: no persistent cache;
- any other string: that directory.

Programs that compile in under :data:`MIN_COMPILE_SECONDS` are not stored (the many tiny eager ops). JAX reads the
directory once per process: a second run in the same process with another directory keeps the first one. JAX's own
``JAX_COMPILATION_CACHE_DIR`` (already in ``jax.config``) wins over ``"auto"``. The cache is trusted code: keep it
in a directory only you can write.
"""
from __future__ import annotations

import os

import jax

ENV = "DDJAX_CACHE"
OFF = ("off", "none", "false", "0")
MIN_COMPILE_SECONDS = 1.0   # jax_persistent_cache_min_compile_time_secs
MIN_ENTRY_BYTES = 0         # jax_persistent_cache_min_entry_size_bytes: any size


def cache_dir(setting: str, workdir: str) -> str | None:
    """The directory ``setting`` (``config.compilation_cache``) names for a run in ``workdir``; None: off."""
    setting = (setting or "auto").strip()
    if setting.lower() in OFF:
        return None
    if setting != "auto":
        return os.path.abspath(os.path.expanduser(setting))
    env = os.environ.get(ENV, "").strip()
    if env:
        return None if env.lower() in OFF else os.path.abspath(os.path.expanduser(env))
    return os.path.join(os.path.dirname(os.path.abspath(workdir)), ".jax_cache")


def enable(setting: str, workdir: str) -> str | None:
    """Point JAX's persistent compilation cache at :func:`cache_dir` (unless ``jax_compilation_cache_dir`` is
    already set, which is kept); returns the directory in use, None when off."""
    current = jax.config.jax_compilation_cache_dir
    if current:
        return current
    path = cache_dir(setting, workdir)
    if path is None:
        return None
    os.makedirs(path, exist_ok=True)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", MIN_ENTRY_BYTES)
    jax.config.update("jax_compilation_cache_dir", path)
    return path
