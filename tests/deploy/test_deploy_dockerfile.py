"""The Dockerfile, read statically (no container engine here), and the wheel its context makes.

`docker build` itself is not run by the suite: these checks pin what can be checked without
an engine — the stages, the user, what reaches the final image, and that the build context
the .dockerignore allowlist admits installs as a complete package (migrations, analyzer
tables and gen/ included).
"""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

from tests.deploy.conftest import MODULES, ROOT

DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
CLIENT_SOURCES = "python/src/assay_client/__init__.py"  # under clients/
COMPILERS = re.compile(r"\b(build-essential|gcc|g\+\+|clang|make|libpq-dev|python3-dev)\b")


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    pairs = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            instruction, _, arguments = line.partition(" ")
            pairs.append((instruction.upper(), arguments.strip()))
    return pairs


def _stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for instruction, arguments in _instructions():
        if instruction == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((instruction, arguments))
    return stages


def test_the_image_is_built_in_stages_from_python_3_11_slim():
    stages = _stages()
    assert len(stages) >= 2
    args = dict(a.partition("=")[::2] for i, a in _instructions() if i == "ARG" and "=" in a)
    for stage in stages:
        base = stage[0][1].split()[0]
        base = args.get(base.strip("${}"), base)
        assert base.startswith("python:3.11-slim"), base
    final = stages[-1]
    assert [a for i, a in final if i == "COPY"] == ["--from=builder /opt/venv /opt/venv"]


def test_the_final_stage_runs_as_a_numeric_non_root_user():
    users = [a for i, a in _stages()[-1] if i == "USER"]
    assert users, "no USER in the final stage"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) == 10001  # the manifests' runAsUser
    assert not gid or (gid.isdigit() and int(gid) != 0)


def test_no_compiler_reaches_the_final_stage():
    for instruction, arguments in _stages()[-1]:
        if instruction == "RUN":
            assert not COMPILERS.search(arguments), arguments
            assert "apt-get install" not in arguments


def test_the_entrypoint_runs_a_module():
    final = dict(_stages()[-1])
    assert final["ENTRYPOINT"] == '["python", "-m"]'
    assert final["CMD"].strip('[]"') in MODULES.values()


def _admitted(relative: str) -> bool:
    """Whether the .dockerignore (the subset of its syntax it uses) sends a path."""
    sent = True
    for raw in DOCKERIGNORE.read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        parts = relative.split("/")
        prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        if pattern.startswith("**/"):
            tail = pattern[3:]
            hit = any(fnmatch.fnmatch(part, tail) for part in parts)
        else:
            hit = any(fnmatch.fnmatch(prefix, pattern) for prefix in prefixes)
        if hit:
            sent = negate
    return sent


def test_the_context_admits_every_package_and_nothing_else():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = project["tool"]["setuptools"]["packages"]["find"]["include"]
    sources = {"assay": "gen/assay", "assay_client": "clients/python/src/assay_client"}
    for package in {p.rstrip("*").rstrip(".") for p in packages if not p.endswith(".*")}:
        where = sources.get(package, package)
        assert _admitted(f"{where}/__init__.py"), f"{where} is not in the build context"
    assert _admitted("pyproject.toml") and _admitted("README.md")
    for private in (
        ".venv/bin/python",
        ".git/config",
        "tests/conftest.py",
        ".assay/state",
        "archive_svc/__pycache__/x.pyc",
        "bench/run.py",
    ):
        assert not _admitted(private), private


def _context(destination: Path) -> None:
    """Copy what `docker build` would send (top-level entries pruned first: .venv is big)."""
    for top in ROOT.iterdir():
        if top.is_file() and _admitted(top.name):
            shutil.copy2(top, destination / top.name)
        elif top.is_dir() and (
            _admitted(f"{top.name}/__init__.py") or _admitted(f"{top.name}/{CLIENT_SOURCES}")
        ):
            for path in top.rglob("*"):
                relative = path.relative_to(ROOT).as_posix()
                if path.is_file() and _admitted(relative):
                    target = destination / relative
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(path, target)


def test_the_build_context_makes_a_complete_wheel(tmp_path):
    context = tmp_path / "context"
    context.mkdir()
    _context(context)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            ".",
            "--no-deps",
            "--no-build-isolation",
            "--quiet",
            "--wheel-dir",
            str(tmp_path / "dist"),
        ],
        cwd=context,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    (wheel,) = (tmp_path / "dist").glob("assay-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for module in [*MODULES.values(), "assessment_svc/sweep"]:
        assert f"{module.replace('.', '/')}/__main__.py" in names or f"{module}.py" in names
    assert "archive_svc/migrations/env.py" in names
    assert any(n.startswith("archive_svc/migrations/versions/") for n in names)
    assert any(n.startswith("worker/analyzers/tables/") and n.endswith(".json") for n in names)
    assert "assay/archive/v1/archive_service_pb2.py" in names
    assert "assay_client/watch.py" in names  # the CLI's client, carried by the one distribution
