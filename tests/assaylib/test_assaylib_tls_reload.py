"""A renewed certificate is used without a restart: by a server (before the next handshake)
and by a client channel (its next call after CHECK_EVERY); a half-written pair is refused."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import ipaddress
import json
import os
import socket
import ssl
from pathlib import Path

import grpc
import grpc.aio
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc

from assaylib import tls
from assaylib.channels import open_channel
from assaylib.config import Settings
from assaylib.embedded import free_port
from assaylib.server import create_server, shutdown
from tests.assaylib.conftest import PROBE_ACCESS
from tests.conftest import token as mint


def _name(text: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])


class CA:
    """A throwaway CA issuing short-lived ECDSA leaves for 127.0.0.1."""

    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(_name("reload-ca"))
            .issuer_name(_name("reload-ca"))
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(self.key, hashes.SHA256())
        )

    def issue(self, directory: Path, stem: str) -> int:
        """Write ``stem.crt``/``stem.key`` (replacing, as one rename each); the serial."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(stem))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False,
            )
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        cert_pem = cert.public_bytes(serialization.Encoding.PEM)
        for name, data in ((f"{stem}.key", key_pem), (f"{stem}.crt", cert_pem)):
            staged = directory / f".{name}.tmp"
            staged.write_bytes(data)
            os.replace(staged, directory / name)
        return int(cert.serial_number)


@pytest.fixture
def pki(tmp_path: Path) -> tuple[CA, Path]:
    ca = CA()
    (tmp_path / "ca.crt").write_bytes(ca.cert.public_bytes(serialization.Encoding.PEM))
    ca.issue(tmp_path, "server")
    ca.issue(tmp_path, "client")
    return ca, tmp_path


def served_serial(port: int, directory: Path) -> int:
    """The serial a new TLS connection to the port is served (as a client with a cert)."""
    context = ssl.create_default_context(cafile=str(directory / "ca.crt"))
    context.load_cert_chain(directory / "client.crt", directory / "client.key")
    context.set_alpn_protocols(["h2"])
    with context.wrap_socket(
        socket.create_connection(("127.0.0.1", port), timeout=5),
        server_hostname="127.0.0.1",
    ) as conn:
        der = conn.getpeercert(binary_form=True)
    assert der is not None
    return int(x509.load_der_x509_certificate(der).serial_number)


async def test_server_and_client_reload_renewed_certificates(
    pki: tuple[CA, Path],
    probe_service: grpc.GenericRpcHandler,
    probe_settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ca, directory = pki
    monkeypatch.setattr(tls, "CHECK_EVERY", 0.0)
    server_settings = dataclasses.replace(
        probe_settings,
        tls_cert=str(directory / "server.crt"),
        tls_key=str(directory / "server.key"),
        tls_ca=str(directory / "ca.crt"),
    )
    server, port, health = await create_server(
        "127.0.0.1:0",
        settings=server_settings,
        register=[lambda s: s.add_generic_rpc_handlers([probe_service])],
        service_names=["assaytest.Probe"],
        access=PROBE_ACCESS,
    )
    client_settings = dataclasses.replace(
        server_settings,
        tls_cert=str(directory / "client.crt"),
        tls_key=str(directory / "client.key"),
    )
    try:
        async with open_channel(f"127.0.0.1:{port}", client_settings, mint("user", "u")) as ch:
            whoami = ch.unary_unary(
                "/assaytest.Probe/Whoami", request_serializer=bytes, response_deserializer=bytes
            )
            assert json.loads(await whoami(b"", timeout=10))["user_id"] == "u"
            renewed = ca.issue(directory, "server")
            assert await asyncio.to_thread(served_serial, port, directory) == renewed
            # The client's own certificate renewed: its next call opens a new channel with
            # it, and the call in between (on the old one) still works.
            ca.issue(directory, "client")
            assert json.loads(await whoami(b"", timeout=10))["user_id"] == "u"
            assert json.loads(await whoami(b"", timeout=10))["user_id"] == "u"
    finally:
        await shutdown(server, health, 0)


def test_half_written_pair_keeps_the_old_certificate(pki: tuple[CA, Path]) -> None:
    ca, directory = pki
    certificates = tls.ServerCertificates(
        str(directory / "server.crt"), str(directory / "server.key"), str(directory / "ca.crt")
    )
    first = certificates.serial
    assert certificates.fetch() is None  # nothing changed
    # A new certificate whose key has not arrived yet: refused, the old one kept.
    spare = directory / "spare"
    spare.mkdir()
    ca.issue(spare, "server")
    os.replace(spare / "server.crt", directory / "server.crt")
    assert certificates.fetch() is None
    assert certificates.serial == first
    os.replace(spare / "server.key", directory / "server.key")
    assert certificates.fetch() is not None
    assert certificates.serial != first


async def test_health_only_port_is_plaintext(
    pki: tuple[CA, Path],
    probe_service: grpc.GenericRpcHandler,
    probe_settings: Settings,
) -> None:
    """With ASSAY_HEALTH_ADDR, the kubelet's plaintext gRPC probe reaches health (and only
    health) while the API port speaks TLS only."""
    _ca, directory = pki
    health_port = free_port()
    settings = dataclasses.replace(
        probe_settings,
        tls_cert=str(directory / "server.crt"),
        tls_key=str(directory / "server.key"),
        tls_ca=str(directory / "ca.crt"),
        health_addr=f"127.0.0.1:{health_port}",
    )
    server, _port, health = await create_server(
        "127.0.0.1:0",
        settings=settings,
        register=[lambda s: s.add_generic_rpc_handlers([probe_service])],
        service_names=["assaytest.Probe"],
        access=PROBE_ACCESS,
    )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{health_port}") as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="assaytest.Probe"), timeout=10
            )
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            whoami = channel.unary_unary(
                "/assaytest.Probe/Whoami", request_serializer=bytes, response_deserializer=bytes
            )
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await whoami(b"", timeout=10)
            assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        await shutdown(server, health, 0)
