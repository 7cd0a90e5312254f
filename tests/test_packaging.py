"""The two distributions, as a new user installs them: wheels built from a clean copy of the
tracked files, each installed alone into a fresh virtualenv with no second command.

`pip install .` must give a CLI and services that start (the main distribution carries the
client's package), and `pip install clients/python` must still give the client without the
server's dependencies."""

from __future__ import annotations

import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SERVER_ONLY = ("sqlalchemy", "asyncpg", "nats", "assaylib", "archive_svc")

pytestmark = pytest.mark.e2e


def _checkout(destination: Path) -> Path:
    """The tracked files as they are in the work tree (links kept), as a clean clone has them."""
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.split(b"\0")
    archive = destination / "tree.tar"
    with tarfile.open(archive, "w") as tar:
        for name in filter(None, (n.decode() for n in listed)):
            if (ROOT / name).exists() or (ROOT / name).is_symlink():
                tar.add(ROOT / name, arcname=name, recursive=False)
    tree = destination / "tree"
    with tarfile.open(archive) as tar:
        tar.extractall(tree, filter="tar")
    return tree


def _wheel(source: Path, dist: Path) -> Path:
    """One wheel built from ``source`` (no dependencies fetched: only the project's own)."""
    before = set(dist.glob("*.whl"))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(source),
            "--no-deps",
            "--no-build-isolation",
            "--quiet",
            "--wheel-dir",
            str(dist),
        ],
        check=True,
        timeout=180,
    )
    (wheel,) = set(dist.glob("*.whl")) - before
    return wheel


def _venv_with(wheel: Path, venv: Path) -> Path:
    """A fresh virtualenv holding ``wheel`` and what it depends on; its bin directory."""
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", str(wheel)],
        check=True,
        timeout=600,
    )
    return venv / "bin"


def _run(*argv: str, cwd: Path) -> str:
    done = subprocess.run(
        argv, cwd=cwd, capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin"}
    )
    assert done.returncode == 0, f"{argv}: {done.stderr}"
    return done.stdout


def _present(python: Path, cwd: Path) -> list[str]:
    probe = f"import importlib.util as u; print(*[m for m in {SERVER_ONLY!r} if u.find_spec(m)])"
    return _run(str(python), "-c", probe, cwd=cwd).split()


@pytest.mark.timeout(900)
def test_each_wheel_installs_alone_and_starts(tmp_path: Path) -> None:
    tree = _checkout(tmp_path)
    dist = tmp_path / "dist"
    dist.mkdir()
    main = _wheel(tree, dist)
    client = _wheel(tree / "clients" / "python", dist)
    away = tmp_path / "elsewhere"  # never the checkout: its folders would shadow the install
    away.mkdir()

    server = _venv_with(main, tmp_path / "server")
    assert "assay submit" in _run(str(server / "assay"), "--help", cwd=away)
    version = _run(str(server / "assay"), "--version", cwd=away)
    assert version.split()[-1] == main.name.split("-")[1], version  # the wheel's own version
    for module in ("assessment_svc", "archive_svc", "worker", "notifier"):
        assert "usage:" in _run(str(server / "python"), "-m", module, "--help", cwd=away)
    _run(str(server / "python"), "-c", "import assay_client, assay_client.watch", cwd=away)

    alone = _venv_with(client, tmp_path / "client")
    _run(str(alone / "python"), "-c", "import assay_client, assay.events.v1.events_pb2", cwd=away)
    assert _present(alone / "python", away) == []
