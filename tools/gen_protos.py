"""Generate the Python code for protos/ into gen/ (or another directory).

Usage: python tools/gen_protos.py [OUT_DIR]

Writes messages (*_pb2.py), gRPC stubs (*_pb2_grpc.py) and mypy stubs (*.pyi), plus an
empty __init__.py in every generated package so the tree installs as ordinary packages.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
BIN = Path(sys.executable).parent  # the plugins are installed beside the interpreter


def generate(out_dir: Path) -> None:
    """Regenerate out_dir/assay from protos/ (out_dir/assay is replaced whole)."""
    target = out_dir / "assay"
    if target.exists():
        shutil.rmtree(target)
    out_dir.mkdir(parents=True, exist_ok=True)
    sources = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    include = str(Path(protoc.__file__).parent / "_proto")
    code = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{PROTOS}",
            f"-I{include}",
            f"--plugin=protoc-gen-mypy={BIN / 'protoc-gen-mypy'}",
            f"--plugin=protoc-gen-mypy_grpc={BIN / 'protoc-gen-mypy_grpc'}",
            f"--python_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            f"--mypy_out={out_dir}",
            f"--mypy_grpc_out={out_dir}",
            *sources,
        ]
    )
    if code != 0:
        raise SystemExit(f"protoc failed with exit code {code}")
    for package in [target, *[p for p in target.rglob("*") if p.is_dir()]]:
        (package / "__init__.py").touch()
    (target / "py.typed").touch()


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "gen")
