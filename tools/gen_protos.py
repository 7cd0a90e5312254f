"""Generate the Python code for protos/ into gen/ (or another directory), and the
TypeScript code of the Node client (@assay/client) into clients/node/src/gen/.

Usage: python tools/gen_protos.py [OUT_DIR]
       python tools/gen_protos.py --ts [TS_OUT_DIR]

Python: messages (*_pb2.py), gRPC stubs (*_pb2_grpc.py) and mypy stubs (*.pyi), plus an
empty __init__.py in every generated package so the tree installs as ordinary packages.

TypeScript: protobuf-es messages and service descriptors (*_pb.ts, one file per proto, for
Connect's clients), for protos/ and for the google.rpc error details the services send
(status.proto and error_details.proto, copied from googleapis into clients/node/proto/ so
that the output does not move with the installed googleapis-common-protos). The plugin is the
one clients/node's lock file pins (`npm ci` there first).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
BIN = Path(sys.executable).parent  # the plugins are installed beside the interpreter
NODE_CLIENT = ROOT / "clients" / "node"
TS_PLUGIN = NODE_CLIENT / "node_modules" / ".bin" / "protoc-gen-es"
GOOGLE_RPC = NODE_CLIENT / "proto"
"""The googleapis protos the Node client decodes error details with (google/rpc/*.proto)."""


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


def generate_ts(out_dir: Path) -> None:
    """Regenerate out_dir/assay and out_dir/google (replaced whole) for the Node client."""
    if not TS_PLUGIN.exists():
        raise SystemExit(f"{TS_PLUGIN} is missing; run `npm ci` in {NODE_CLIENT}")
    for name in ("assay", "google"):
        if (out_dir / name).exists():
            shutil.rmtree(out_dir / name)
    out_dir.mkdir(parents=True, exist_ok=True)
    sources = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    googleapis = sorted(str(p.relative_to(GOOGLE_RPC)) for p in GOOGLE_RPC.rglob("*.proto"))
    include = str(Path(protoc.__file__).parent / "_proto")
    code = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{PROTOS}",
            f"-I{include}",
            f"-I{GOOGLE_RPC}",
            f"--plugin=protoc-gen-es={TS_PLUGIN}",
            f"--es_out={out_dir}",
            # TypeScript for ES modules: imports end in .js, as Node's resolution needs.
            "--es_opt=target=ts,import_extension=js",
            *sources,
            *googleapis,
        ]
    )
    if code != 0:
        raise SystemExit(f"protoc (protoc-gen-es) failed with exit code {code}")


if __name__ == "__main__":
    args = sys.argv[1:]
    if args[:1] == ["--ts"]:
        generate_ts(Path(args[1]) if len(args) > 1 else NODE_CLIENT / "src" / "gen")
    else:
        generate(Path(args[0]) if args else ROOT / "gen")
