"""The release in one place: CHANGELOG.md's entries parse, name a commit in this repository's
history, and agree with pyproject's version, the prod overlay's image tag, `assay --version`
and every process's `assay_build_info` (offline, fast: no previous release is built)."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
import urllib.request
from pathlib import Path

import pytest
import yaml  # type: ignore[import-untyped]

from assaylib.telemetry import start_metrics_server
from assaylib.version import VERSION
from tools.upgrade.release import CHANGELOG, ReleaseError, previous_release, releases, resolve

ROOT = Path(__file__).resolve().parents[2]
PROD = ROOT / "deploy/k8s/overlays/prod/kustomization.yaml"


def pyproject_version() -> str:
    return str(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"])


def test_the_changelog_names_each_release_and_its_commit() -> None:
    found = releases(CHANGELOG.read_text())
    assert found, "CHANGELOG.md records no release"
    assert found[0].version == "0.1.0"
    assert found[-1].commit.startswith("83ff2ea")
    for release in found:
        assert re.fullmatch(r"[0-9a-f]{40}", resolve(release.commit)), release
    text = CHANGELOG.read_text()
    assert text.index("## [Unreleased]") < text.index(f"## [{found[0].version}]")


def test_a_release_without_one_commit_is_refused() -> None:
    with pytest.raises(ReleaseError, match="names 0 commits"):
        releases("## [Unreleased]\n\n## [0.2.0] - 2027-01-01\n\nnothing\n")
    with pytest.raises(ReleaseError, match="names 2 commits"):
        releases("## [0.2.0] - 2027-01-01\nCommit: `abcdef0`\nCommit: `abcdef1`\n")
    with pytest.raises(ReleaseError, match="is not"):
        releases("## [next] - 2027-01-01\nCommit: `abcdef0`\n")
    parsed = releases(
        "## [0.2.0] - 2027-01-01\nCommit: `abcdef0`\n## [0.1.0] - 2026-12-03\nCommit: `1234567`\n"
    )
    assert [(r.version, r.commit) for r in parsed] == [("0.2.0", "abcdef0"), ("0.1.0", "1234567")]


def test_the_tree_is_the_last_release_or_a_development_version_after_it() -> None:
    released = previous_release().version
    version = pyproject_version()
    assert version == VERSION, "reinstall (make install): the installed version is stale"
    if version != released:
        base = version.split(".dev")[0]
        assert ".dev" in version, f"{version} is neither {released} nor a .devN after it"
        as_tuple = tuple(int(part) for part in base.split("."))
        assert as_tuple > tuple(int(part) for part in released.split("."))


def test_the_prod_overlay_deploys_the_last_release() -> None:
    kustomization = yaml.safe_load(PROD.read_text())
    (image,) = [image for image in kustomization["images"] if image["name"] == "assay"]
    assert image["newTag"] == previous_release().version
    labels = kustomization["labels"][0]["pairs"]
    assert labels["app.kubernetes.io/version"] == image["newTag"]


def test_assay_version_prints_the_installed_release() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "assay_cli", "--version"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"assay {pyproject_version()}"


def test_metrics_carry_the_build_info() -> None:
    port = start_metrics_server("127.0.0.1:0")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        body = reply.read().decode()
    assert f'assay_build_info{{version="{pyproject_version()}"}} 1.0' in body
