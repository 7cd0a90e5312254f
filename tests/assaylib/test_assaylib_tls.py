"""create_server and open_channel with mutual TLS (certificates made by the openssl CLI)."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
from pathlib import Path

import grpc
import grpc.aio
import pytest

from assaylib.channels import open_channel
from assaylib.config import Settings
from assaylib.server import create_server
from tests.assaylib.conftest import PROBE_ACCESS
from tests.conftest import token as mint

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _issue(name: str, cwd: Path) -> None:
    _openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        f"{name}.key",
        "-out",
        f"{name}.csr",
        "-subj",
        f"/CN={name}",
        "-addext",
        "subjectAltName=IP:127.0.0.1,DNS:localhost",
        cwd=cwd,
    )
    _openssl(
        "x509",
        "-req",
        "-in",
        f"{name}.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        f"{name}.pem",
        "-days",
        "1",
        "-copy_extensions",
        "copy",
        cwd=cwd,
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A throwaway CA with a server and a client certificate."""
    cwd = tmp_path_factory.mktemp("pki")
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "1",
        "-subj",
        "/CN=assay-test-ca",
        cwd=cwd,
    )
    _issue("server", cwd)
    _issue("client", cwd)
    return cwd


async def test_mutual_tls_round_trip(
    pki: Path, probe_service: grpc.GenericRpcHandler, probe_settings: Settings
) -> None:
    server_settings = dataclasses.replace(
        probe_settings,
        tls_cert=str(pki / "server.pem"),
        tls_key=str(pki / "server.key"),
        tls_ca=str(pki / "ca.pem"),
    )
    server, port, _health = await create_server(
        "127.0.0.1:0",
        settings=server_settings,
        register=[lambda s: s.add_generic_rpc_handlers([probe_service])],
        service_names=["assaytest.Probe"],
        access=PROBE_ACCESS,
    )
    client_settings = dataclasses.replace(
        server_settings, tls_cert=str(pki / "client.pem"), tls_key=str(pki / "client.key")
    )
    token = mint("user", "tls-user")
    no_client_cert = dataclasses.replace(server_settings, tls_cert="", tls_key="")
    try:
        async with open_channel(f"127.0.0.1:{port}", client_settings, token) as channel:
            whoami = channel.unary_unary(
                "/assaytest.Probe/Whoami", request_serializer=bytes, response_deserializer=bytes
            )
            assert json.loads(await whoami(b"", timeout=10))["user_id"] == "tls-user"
        async with open_channel(f"127.0.0.1:{port}", no_client_cert, token) as channel:
            whoami = channel.unary_unary(
                "/assaytest.Probe/Whoami", request_serializer=bytes, response_deserializer=bytes
            )
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await whoami(b"", timeout=10)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await server.stop(None)
