"""Shared test helper: a file of the repository (a config, a benchmark script) loaded as a module from its path,
as the launcher loads ``--config`` files (``configs/`` and ``benchmarks/`` are not packages)."""
from __future__ import annotations

import importlib.util
import os
from types import ModuleType

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_module(path: str, name: str | None = None) -> ModuleType:
    """The module in ``path`` (relative to the repository root, or absolute), named ``name`` or its file stem."""
    path = os.path.join(REPO, path)
    spec = importlib.util.spec_from_file_location(name or os.path.splitext(os.path.basename(path))[0], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
