"""Fixtures for assaylib tests: a tiny bytes-in/bytes-out servicer on a real grpc.aio server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Sequence
from typing import Any, Protocol

import grpc
import grpc.aio
import pytest

from assaylib import errors
from assaylib.access import ALL, AccessTable
from assaylib.auth import current_principal
from assaylib.config import Settings
from tests.conftest import Trust

PROBE = "assaytest.Probe"
PROBE_ACCESS = AccessTable({PROBE: {"user": ALL}})
"""Users may call every probe method; no one else may."""


class ProbeServicer:
    """Methods that report the caller or raise on demand; ``release`` gates ``Slow``."""

    def __init__(self) -> None:
        self.slow_started = asyncio.Event()
        self.release = asyncio.Event()
        self.slow_finished = asyncio.Event()

    async def whoami(self, request: bytes, context: Any) -> bytes:
        principal = current_principal()
        return json.dumps({"user_id": principal.user_id, "roles": sorted(principal.roles)}).encode()

    async def fail(self, request: bytes, context: Any) -> bytes:
        raise _failure(request.decode())

    async def stream(self, request: bytes, context: Any) -> AsyncIterator[bytes]:
        for _ in range(2):
            yield current_principal().user_id.encode()
        if request:
            raise _failure(request.decode())

    async def slow(self, request: bytes, context: Any) -> bytes:
        self.slow_started.set()
        await self.release.wait()
        self.slow_finished.set()
        return b"done"


def _failure(kind: str) -> Exception:
    failures: dict[str, Exception] = {
        "invalid": errors.InvalidArgument(
            [
                errors.FieldViolation("assessment_data.riasec.realistic", "must be 0-100"),
                errors.FieldViolation("request_id", "must be a UUID"),
            ]
        ),
        "tokens": errors.InsufficientTokens("balance 0, cost 1", metadata={"balance": "0"}),
        "transition": errors.InvalidTransition("COMPLETED → PROCESSING"),
        "not_found": errors.NotFound("job j-1 not found"),
        "resume": errors.ResumeTokenExpired("cursor 3 is gone"),
        "boom": RuntimeError("password=hunter2 leaked"),
        "refused": ConnectionRefusedError("connect to 10.0.0.1:5432 refused"),
        "timeout": TimeoutError(),
    }
    return failures[kind]


def probe_handler(servicer: ProbeServicer) -> grpc.GenericRpcHandler:
    """The Probe service, with raw-bytes (de)serialization."""
    return grpc.method_handlers_generic_handler(
        PROBE,
        {
            "Whoami": grpc.unary_unary_rpc_method_handler(servicer.whoami),
            "Fail": grpc.unary_unary_rpc_method_handler(servicer.fail),
            "Stream": grpc.unary_stream_rpc_method_handler(servicer.stream),
            "Slow": grpc.unary_unary_rpc_method_handler(servicer.slow),
        },
    )


def probe_unary(
    channel: grpc.aio.Channel, method: str
) -> grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]:
    """A raw-bytes unary callable for ``method`` (a Probe method name or a full path)."""
    path = method if method.startswith("/") else f"/{PROBE}/{method}"
    return channel.unary_unary(path, request_serializer=bytes, response_deserializer=bytes)


def probe_stream(
    channel: grpc.aio.Channel, method: str
) -> grpc.aio.UnaryStreamMultiCallable[bytes, bytes]:
    """A raw-bytes server-streaming callable for a Probe method."""
    return channel.unary_stream(
        f"/{PROBE}/{method}", request_serializer=bytes, response_deserializer=bytes
    )


class ServerFactory(Protocol):
    """Starts a probe server with server interceptors; returns a channel to it."""

    def __call__(
        self,
        interceptors: Sequence[grpc.aio.ServerInterceptor],
        *,
        client_interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
    ) -> Awaitable[grpc.aio.Channel]: ...


@pytest.fixture
def probe_settings(trust: Trust) -> Settings:
    """Settings whose servers verify tokens of the suite's issuer."""
    return Settings(jwks_file=str(trust.jwks_file))


@pytest.fixture
def probe() -> ProbeServicer:
    """A fresh probe servicer."""
    return ProbeServicer()


@pytest.fixture
def probe_service(probe: ProbeServicer) -> grpc.GenericRpcHandler:
    """The probe service as a generic handler, for ``server.add_generic_rpc_handlers``."""
    return probe_handler(probe)


@pytest.fixture
async def probe_channel_for(
    probe: ProbeServicer,
) -> AsyncIterator[ServerFactory]:
    """Start a plain grpc.aio server with the given interceptors; return a channel to it."""
    servers: list[grpc.aio.Server] = []
    channels: list[grpc.aio.Channel] = []

    async def start(
        interceptors: Sequence[grpc.aio.ServerInterceptor],
        *,
        client_interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
    ) -> grpc.aio.Channel:
        server = grpc.aio.server(interceptors=list(interceptors))
        server.add_generic_rpc_handlers([probe_handler(probe)])
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        servers.append(server)
        channel = grpc.aio.insecure_channel(
            f"127.0.0.1:{port}", interceptors=list(client_interceptors) or None
        )
        channels.append(channel)
        return channel

    yield start
    for channel in channels:
        await channel.close()
    for server in servers:
        await server.stop(None)
