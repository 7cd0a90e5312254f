"""The client installs into a fresh virtualenv by itself, without the server's dependencies."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(300)
def test_client_installs_alone(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", str(ROOT / "clients" / "python")],
        check=True,
    )
    probe = (
        "import importlib.util as u, assay_client;"
        "from assay.assessment.v1 import assessment_service_pb2_grpc;"
        "print(assay_client.AssayClient.__name__,"
        " [m for m in ('sqlalchemy', 'asyncpg', 'nats', 'assaylib') if u.find_spec(m)])"
    )
    out = subprocess.run(
        [str(python), "-c", probe], check=True, capture_output=True, text=True, cwd=tmp_path
    )
    assert out.stdout.split() == ["AssayClient", "[]"]
