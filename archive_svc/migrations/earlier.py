"""A later migration reads an earlier one's SQL (to restate or undo it) through ``load``."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

VERSIONS = Path(__file__).with_name("versions")


def load(name: str) -> ModuleType:
    """The migration module ``versions/<name>`` (a file name: the modules' names start with
    digits, so they cannot be imported by name)."""
    path = VERSIONS / name
    spec = importlib.util.spec_from_file_location(f"assay_migration_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
