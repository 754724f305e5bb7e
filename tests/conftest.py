"""Test set-up: 8 simulated CPU devices, XLA's fast-compile mode and compile switches (set before jax is imported), no
launcher cache beside the tmp workdirs, and one persistent compilation cache for this run of the suite, shared by its
xdist workers."""
import os
import shutil
import tempfile

# XLA:CPU's compile-time switches for the suite's processes (subprocess runs put them beside their own device count,
# from DDJAX_TEST_COMPILE_FLAGS): the legacy elemental emitters instead of the MLIR fusion emitters, and the LLVM
# module compiled whole instead of split for parallel codegen, which buys nothing when two workers share two cores.
# 2026-12-08 on the AMD EPYC 2-core machine: tests/test_gradient_matching.py 99 -> 68 -> 55 s (one switch, both),
# the suite 1180 -> 648 s, a one-op eager compile 48 -> 34 ms. Compile-only: the same HLO and IEEE arithmetic (one
# jitted-vs-eager comparison moved by 2e-6 and now says its atol).
COMPILE_FLAGS = "--xla_cpu_use_fusion_emitters=false --xla_cpu_parallel_codegen_split_count=1"
os.environ.setdefault("DDJAX_TEST_COMPILE_FLAGS", COMPILE_FLAGS)
os.environ.setdefault("XLA_FLAGS", f"--xla_force_host_platform_device_count=8 {COMPILE_FLAGS}")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# XLA without most of its optimisation work in every test process (jax's `jax_disable_most_optimizations`; the
# environment variable reaches the subprocess runs too): LLVM's backend optimisation off and its expensive passes
# skipped. The suite is mostly compile time and that is most of it (2026-12-07: tests/test_models.py 139 -> 42 s
# of CPU, test_evaluate + test_dm 116 -> 56 s); the program and its IEEE arithmetic are the same, only the machine
# code is slower, which the suite's tiny programs do not feel. Speed is measured in benchmarks/, not here.
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
# No launcher cache beside each run's tmp workdir (launch.compile_cache's "auto"); subprocess runs inherit this.
os.environ.setdefault("DDJAX_CACHE", "off")

# The suite is mostly XLA compile time, and many tests compile the same programs (the tiny evaluation networks,
# the launcher's steps) from new function objects, which JAX's in-memory caches do not share. One persistent
# cache per run of the suite, made by the first process that imports this file (pytest's controller, whose
# environment its xdist workers inherit) and removed by it at the end, compiles each program once. Per run, not
# per machine: a clean clone's suite times are what a warm local rerun would see too.
_SUITE_CACHE = "DDJAX_SUITE_CACHE"
_OWN_CACHE = _SUITE_CACHE not in os.environ
if _OWN_CACHE:
    os.environ[_SUITE_CACHE] = tempfile.mkdtemp(prefix="ddjax-suite-cache-")

import jax  # noqa: E402  (after XLA_FLAGS)

jax.config.update("jax_compilation_cache_dir", os.environ[_SUITE_CACHE])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def pytest_unconfigure(config):
    if _OWN_CACHE:
        shutil.rmtree(os.environ.pop(_SUITE_CACHE), ignore_errors=True)


# The suite runs as `pytest -n 2 --dist loadfile`: one test file per worker at a time. xdist's default orders the
# files by their NUMBER of tests, so the few-but-long files (the trajectory launcher runs, DREAM+, the two-process
# runs) came last and ran alone on one worker for minutes. Instead: longest first (their measured seconds on the
# 2-core machine, 2026-12-08, a junit report with the compile switches above), the files not listed after them, so
# each worker takes the next-longest file when it frees up (longest-processing-time-first, within a few percent
# of the even split).
LONGEST_FIRST = (
    "test_algorithm_contract", "test_multiprocess", "test_trajectory", "test_decoupled", "test_gradient_matching",
    "test_dream", "test_didd", "test_data", "test_launch_trajectory", "test_staged", "test_launch", "test_m3d_iid",
    "test_models", "test_evaluate", "test_augment", "test_fidelity_matching", "test_dm", "test_losses",
    "test_satm_sharpness", "test_fidelity", "test_dg_models", "test_idm", "test_reproduce", "test_inner",
    "test_kmeans", "test_teachers", "test_conv", "test_sam", "test_samplers", "test_style_losses",
)


def pytest_configure(config):
    if hasattr(config.option, "loadscopereorder"):   # pytest-xdist >= 3.6: keep the order below
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(session, config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.stem, len(rank)))   # stable: file order kept within a rank
