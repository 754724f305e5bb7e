"""launch.compile_cache: where a run's persistent compilation cache goes (issue 15)."""
import os

import jax

from launch import compile_cache


def test_cache_dir_auto_env_off_and_explicit(tmp_path, monkeypatch):
    workdir = str(tmp_path / "workdirs" / "dm_tiny")
    monkeypatch.delenv("DDJAX_CACHE", raising=False)
    assert compile_cache.cache_dir("auto", workdir) == str(tmp_path / "workdirs" / ".jax_cache")
    assert compile_cache.cache_dir("off", workdir) is None
    assert compile_cache.cache_dir(str(tmp_path / "c"), workdir) == str(tmp_path / "c")
    monkeypatch.setenv("DDJAX_CACHE", str(tmp_path / "shared"))
    assert compile_cache.cache_dir("auto", workdir) == str(tmp_path / "shared")
    assert compile_cache.cache_dir("off", workdir) is None          # the config's "off" wins over the variable
    monkeypatch.setenv("DDJAX_CACHE", "off")
    assert compile_cache.cache_dir("auto", workdir) is None


def test_enable_sets_jax_config_and_keeps_an_existing_one(tmp_path, monkeypatch):
    monkeypatch.delenv("DDJAX_CACHE", raising=False)
    before = jax.config.jax_compilation_cache_dir
    try:
        jax.config.update("jax_compilation_cache_dir", None)
        assert compile_cache.enable("off", str(tmp_path / "w")) is None
        assert jax.config.jax_compilation_cache_dir is None
        path = compile_cache.enable("auto", str(tmp_path / "w"))
        assert path == str(tmp_path / ".jax_cache") and os.path.isdir(path)
        assert jax.config.jax_compilation_cache_dir == path
        assert jax.config.jax_persistent_cache_min_compile_time_secs == compile_cache.MIN_COMPILE_SECONDS
        assert compile_cache.enable("auto", str(tmp_path / "elsewhere" / "w")) == path   # JAX reads it once
    finally:
        jax.config.update("jax_compilation_cache_dir", before)
