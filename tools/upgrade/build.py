"""The previous release, built from git history in a venv of its own, cached by commit.

``git archive <commit>`` into ``<cache>/<commit>/src`` and a fresh venv beside it with the
release's own distributions installed (not editable: the release's code runs from the venv,
whatever the working directory). 0.1.0's main distribution does not carry ``assay_client``,
so the client is installed from ``clients/python`` too; ``[dev]`` brings the release's test
dependencies (its archive tests run against the new schema). A finished build is marked
``complete`` and reused: the cache is ``$ASSAY_UPGRADE_CACHE`` or ``.upgrade-cache/`` at the
repository root (gitignored).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from tools.upgrade.release import ROOT, Release, export, previous_release, resolve

STAMP = "complete"


def cache_root() -> Path:
    """Where built releases are kept."""
    given = os.environ.get("ASSAY_UPGRADE_CACHE", "")
    return Path(given) if given else ROOT / ".upgrade-cache"


@dataclass(frozen=True)
class Build:
    """One release's code and the interpreter that runs it."""

    label: str
    """``0.1.0`` for a release; ``tree`` for the working tree."""
    src: Path
    """Its source (the tests and tools it carries are run from here)."""
    python: Path
    """The venv's interpreter: ``python -m archive_svc`` there runs this build."""

    overlay: bool = False
    """Run from ``src`` ahead of what the venv installed (a modified copy of the tree: the
    tests that show the checks fail on an incompatible change)."""

    @property
    def bin(self) -> Path:
        """The venv's scripts directory."""
        return self.python.parent

    def env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment to run this build's code in: ``base`` (default ours) with, for an
        overlay, its source first on PYTHONPATH."""
        env = dict(os.environ if base is None else base)
        if self.overlay:
            paths = [self.src, self.src / "gen", self.src / "clients/python/src"]
            env["PYTHONPATH"] = os.pathsep.join(str(path) for path in paths)
        return env


def tree() -> Build:
    """The working tree, run from its own ``.venv`` (``make install``)."""
    python = ROOT / ".venv" / "bin" / "python"
    if not python.exists():
        python = Path(sys.executable)
    return Build("tree", ROOT, python)


def release_build(release: Release | None = None, *, log: Path | None = None) -> Build:
    """The previous release, built now unless the cache holds it."""
    release = release or previous_release()
    commit = resolve(release.commit)
    home = cache_root() / commit
    build = Build(release.version, home / "src", home / "venv" / "bin" / "python")
    if (home / STAMP).exists() and build.python.exists():
        return build
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    started = time.monotonic()
    print(f"upgrade: building release {release.version} ({commit[:12]}) in {home}", flush=True)
    export(commit, build.src)
    log_path = log or home / "build.log"
    with open(log_path, "wb") as out:
        for command in (
            [sys.executable, "-m", "venv", str(home / "venv")],
            [str(build.python), "-m", "pip", "install", "--quiet", "--upgrade", "pip"],
            [str(build.python), "-m", "pip", "install", "--quiet", "./clients/python", ".[dev]"],
        ):
            done = subprocess.run(command, cwd=build.src, stdout=out, stderr=subprocess.STDOUT)
            if done.returncode != 0:
                raise RuntimeError(f"building release {release.version} failed; see {log_path}")
    (home / STAMP).write_text(f"{release.version} {commit}\n")
    print(f"upgrade: built in {time.monotonic() - started:.0f}s", flush=True)
    return build


if __name__ == "__main__":
    built = release_build()
    print(built.python)
