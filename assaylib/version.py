"""The release this code is: pyproject.toml's version, as installed (the one place it is
written). ``assay --version`` prints it and every process's ``/metrics`` carries it as
``assay_build_info{version="…"} 1``."""

from __future__ import annotations

import importlib.metadata

__all__ = ["VERSION"]

DISTRIBUTION = "assay"


def installed_version() -> str:
    """The installed distribution's version; ``0+unknown`` when run from a source tree that
    was never installed (nothing Assay ships runs that way)."""
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


VERSION = installed_version()
