"""create_server and open_channel with mutual TLS (certificates made by the openssl CLI)."""

from __future__ import annotations

import dataclasses
import json
import shutil
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
