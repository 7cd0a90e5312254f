"""The client over TLS: ``tls_credentials`` from PEM files, mutual TLS when it has a
certificate (the server here requires one)."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import grpc
import pytest
from assay_client import AssayClient, AssayError, tls_credentials

from assaylib.config import Settings
from assaylib.server import create_server
from tests.conftest import token

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")


async def test_mutual_tls(pki: Path, settings: Settings) -> None:
    server_settings = dataclasses.replace(
        settings,
        tls_cert=str(pki / "server.pem"),
        tls_key=str(pki / "server.key"),
        tls_ca=str(pki / "ca.pem"),
    )
    server, port, _ = await create_server(
        "127.0.0.1:0", settings=server_settings, register=[], service_names=[]
    )
    addr = f"127.0.0.1:{port}"
    mutual = tls_credentials(pki / "ca.pem", pki / "client.pem", pki / "client.key")
    try:
        async with AssayClient(addr, token=token("user", "u"), credentials=mutual) as assay:
            assert await assay.reachable()
            with pytest.raises(AssayError) as refused:  # TLS held: the server answered
                await assay.balance()
            assert refused.value.code == grpc.StatusCode.UNIMPLEMENTED
        anonymous = tls_credentials(pki / "ca.pem")  # no client certificate: refused
        async with AssayClient(addr, token="t", credentials=anonymous) as assay:
            assert not await assay.reachable(within=10)
        async with AssayClient(addr, token="t") as assay:  # plain text to a TLS port
            assert not await assay.reachable(within=10)
    finally:
        await server.stop(None)
