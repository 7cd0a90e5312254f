"""The previous release's SQL against the new schema: its own archive tests (the archive's
RPCs, the outbox relay, the sweep and retention) run in its venv, with every database they use
migrated by the working tree's migrations (``probe/upgrade_schema_plugin.py``). A contracting
migration — a dropped function, column or table the release uses, a NOT NULL column without a
default — fails them, as it would fail the release's pods during a roll."""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tools.upgrade.build import Build

PLUGIN_DIR = Path(__file__).parent / "probe"
SUITES = ("tests/archive", "tests/sweep")
"""The release's tests of the code that runs SQL: the archive, its relay, the sweep."""
NOT_COMPATIBILITY = (
    "tests/archive/test_archive_migrate.py",  # the release's own migrations, up and down
    "test_migrated_schema_matches_the_models",  # the release's models = its own schema
    "test_generated_code_is_fresh",  # gen/ against protos/: nothing to do with the schema
)
"""Tests of the release's own schema history, not of its statements: deselected."""
SCHEMA_SOURCES = ("archive_svc/migrations", "archive_svc/migrate.py")
"""What the new schema is made from (its fingerprint keys the cached result)."""


def fingerprint(new: Build) -> str:
    """A hash of the files that make ``new``'s schema."""
    digest = hashlib.sha256()
    for source in SCHEMA_SOURCES:
        root = new.src / source
        files = sorted(root.rglob("*.py")) if root.is_dir() else [root]
        for path in files:
            digest.update(str(path.relative_to(new.src)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def passed_before(release: Build, new: Build) -> Path:
    """The file that records a pass of the release's tests against this very schema (the
    release's build directory, so it goes with the cached venv)."""
    return release.src.parent / f"schema-passed-{fingerprint(new)}"


@dataclass(frozen=True)
class SchemaCheck:
    """The outcome: pytest's exit status, its summary line, and where its output is."""

    returncode: int
    summary: str
    log: Path
    seconds: float

    @property
    def ok(self) -> bool:
        """The release's tests passed against the new schema."""
        return self.returncode == 0


def run(release: Build, new: Build, log: Path, *, extra: tuple[str, ...] = ()) -> SchemaCheck:
    """Run the release's archive and sweep tests against ``new``'s schema; output to ``log``."""
    migrate = {
        "argv": [str(new.python), "-m", "archive_svc", "migrate"],
        "cwd": str(new.src),
        "env": new.env({}),
    }
    env = release.env()
    env.update(
        {
            "PYTHONPATH": str(PLUGIN_DIR),
            "ASSAY_UPGRADE_MIGRATE": json.dumps(migrate),
        }
    )
    env.pop("ASSAY_TEST_DATABASE_URL", None)  # the release's suite starts its own servers
    env.pop("ASSAY_TEST_NATS_URL", None)
    deselect = [f"--ignore={name}" for name in NOT_COMPATIBILITY if name.endswith(".py")]
    keyword = " and ".join(f"not {name}" for name in NOT_COMPATIBILITY if "/" not in name)
    argv = [
        str(release.python),
        "-m",
        "pytest",
        "-q",
        "-p",
        "upgrade_schema_plugin",
        "-p",
        "no:cacheprovider",
        "-o",
        "addopts=",
        "--durations=30",
        *deselect,
        "-k",
        keyword,
        *extra,
        *SUITES,
    ]
    started = time.monotonic()
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w", encoding="utf-8") as out:
        done = subprocess.run(argv, cwd=release.src, env=env, stdout=out, stderr=subprocess.STDOUT)
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    return SchemaCheck(done.returncode, lines[-1] if lines else "", log, time.monotonic() - started)
