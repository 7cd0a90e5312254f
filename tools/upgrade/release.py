"""The releases CHANGELOG.md records, and the previous release's source taken from git history.

CHANGELOG.md is the one place a release's commit is written (a ``Commit: `<hash>``` line in
its entry); everything that compares the working tree with the last release — ``make lint``'s
``buf breaking``, the compatibility tests, ``make test-upgrade`` — reads it through
``previous_release``. ``python -m tools.upgrade.release`` prints it (``--field commit``, say).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHANGELOG = ROOT / "CHANGELOG.md"

_HEADING = re.compile(r"^## \[(?P<version>[^\]]+)\](?: - (?P<date>\d{4}-\d{2}-\d{2}))?\s*$")
_COMMIT = re.compile(r"^Commit: `(?P<commit>[0-9a-f]{7,40})`\s*$")
_SEMVER = re.compile(r"^\d+\.\d+\.\d+$")


class ReleaseError(RuntimeError):
    """CHANGELOG.md or the repository's history cannot say what the previous release is."""


@dataclass(frozen=True)
class Release:
    """One released version and the commit it was cut from (as CHANGELOG.md writes it)."""

    version: str
    date: str
    commit: str


def releases(text: str) -> list[Release]:
    """Every released entry of a changelog, newest first (``[Unreleased]`` is not one).
    A released entry without exactly one ``Commit:`` line is an error, not skipped."""
    found: list[Release] = []
    current: tuple[str, str] | None = None
    commits: list[str] = []

    def close() -> None:
        if current is None:
            return
        if len(commits) != 1:
            raise ReleaseError(
                f"CHANGELOG.md: release {current[0]} names {len(commits)} commits"
                " (one `Commit: `<hash>`` line is required)"
            )
        found.append(Release(current[0], current[1], commits[0]))

    for line in text.splitlines():
        heading = _HEADING.match(line)
        if heading:
            close()
            version = heading["version"]
            commits = []
            if version.lower() == "unreleased":
                current = None
                continue
            if not _SEMVER.match(version) or not heading["date"]:
                raise ReleaseError(f"CHANGELOG.md: {line!r} is not `## [X.Y.Z] - YYYY-MM-DD`")
            current = (version, heading["date"])
            continue
        commit = _COMMIT.match(line)
        if commit and current is not None:
            commits.append(commit["commit"])
    close()
    return found


def previous_release(changelog: Path = CHANGELOG) -> Release:
    """The newest release CHANGELOG.md records: the one the working tree must stay
    compatible with."""
    found = releases(changelog.read_text(encoding="utf-8"))
    if not found:
        raise ReleaseError(f"{changelog} records no release")
    return found[0]


def git(*args: str, cwd: Path = ROOT) -> str:
    """A git command's output in the repository (stripped); ReleaseError when it fails."""
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise ReleaseError(f"git {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout.strip()


def resolve(commit: str) -> str:
    """The full hash of a commit named in CHANGELOG.md (it must be in this repository's
    history: a shallow clone needs ``git fetch --unshallow``)."""
    return git("rev-parse", "--verify", f"{commit}^{{commit}}")


def export(commit: str, dest: Path, *paths: str) -> Path:
    """The tree of ``commit`` (or only ``paths`` of it) written to ``dest`` with
    ``git archive``; returns dest."""
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="assay-release-") as tmp:
        archive = Path(tmp) / "release.tar"
        git("archive", "--format=tar", f"--output={archive}", resolve(commit), "--", *paths)
        with tarfile.open(archive) as tar:
            tar.extractall(dest, filter="data")
    return dest


def main(argv: list[str] | None = None) -> int:
    """Print the previous release (``--field`` one of version, date, commit), or with
    ``--export DIR`` write its protos and buf configuration there (for ``buf breaking``)."""
    parser = argparse.ArgumentParser(prog="python -m tools.upgrade.release")
    parser.add_argument("--field", choices=("version", "date", "commit"), default="commit")
    parser.add_argument("--export-protos", metavar="DIR", type=Path)
    args = parser.parse_args(argv)
    try:
        release = previous_release()
        if args.export_protos is not None:
            export(release.commit, args.export_protos, "protos", "buf.yaml")
            print(args.export_protos)
            return 0
        print(resolve(release.commit) if args.field == "commit" else getattr(release, args.field))
    except ReleaseError as err:
        print(f"release: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
