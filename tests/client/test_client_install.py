"""The client installs into a fresh virtualenv by itself, without the server's dependencies,
and its example runs from there against a stack started by `assay dev up`."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli.conftest import Cli, stack_down, stack_up, user_token

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "clients" / "python" / "examples" / "submit_and_wait.py"

pytestmark = pytest.mark.e2e


PROBE = (
    "import importlib.util as u, assay_client;"
    "from assay.assessment.v1 import assessment_service_pb2_grpc;"
    "print(assay_client.AssayClient.__name__,"
    " [m for m in ('sqlalchemy', 'asyncpg', 'nats', 'assaylib') if u.find_spec(m)])"
)


def install(venv: Path) -> Path:
    """A fresh virtualenv with only `pip install clients/python`; its python, checked to
    import the client and the stubs and none of the server's packages."""
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", str(ROOT / "clients" / "python")],
        check=True,
    )
    out = subprocess.run(
        [str(python), "-c", PROBE], check=True, capture_output=True, text=True, cwd=venv
    )
    assert out.stdout.split() == ["AssayClient", "[]"]
    return python


@pytest.mark.timeout(300)
async def test_client_installs_alone_and_runs_its_example(cli: Cli, tmp_path: Path) -> None:
    python = await asyncio.to_thread(install, tmp_path / "venv")
    info = await stack_up(cli)
    try:
        env = {
            "PATH": "/usr/bin:/bin",
            "ASSAY_ASSESSMENT_ADDR": info["assessment"],
            "ASSAY_NOTIFIER_ADDR": info["notifier"],
            "ASSAY_TOKEN": await user_token(cli, "ida", grant=1),
        }
        example = await asyncio.create_subprocess_exec(
            str(python), str(EXAMPLE), cwd=tmp_path, env=env, stdout=asyncio.subprocess.PIPE
        )
        stdout, _ = await asyncio.wait_for(example.communicate(), 90)
        assert example.returncode == 0
        job_id, status, archetype = stdout.decode().split(maxsplit=2)
        assert status == "3" and archetype.strip()  # JOB_STATUS_COMPLETED, and a profile
        got = await cli.run("jobs", "get", job_id, "--json")  # as the stack's operator
        assert got.json()["job"]["status"] == "JOB_STATUS_COMPLETED", got.describe()
        balance = await cli.run("tokens", "balance", "--user", "ida", "--json")
        assert balance.json() == {"userId": "ida", "balance": "0"}
    finally:
        await stack_down(cli, info)
