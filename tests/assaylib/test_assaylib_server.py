"""create_server: layering of interceptors, health, reflection, metrics, graceful shutdown."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client import REGISTRY

from assaylib import errors
from assaylib.channels import open_channel
from assaylib.config import Settings
from assaylib.process import serve_until_stopped
from assaylib.server import create_server, shutdown
from tests.assaylib.conftest import PROBE, PROBE_ACCESS, probe_unary
from tests.conftest import token

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@dataclass
class Stack:
    """A server from create_server and a user-token channel to it."""

    server: grpc.aio.Server
    health: Any
    channel: grpc.aio.Channel
    anonymous: grpc.aio.Channel


@pytest.fixture
async def stack(
    probe_service: grpc.GenericRpcHandler, probe_settings: Settings
) -> AsyncIterator[Stack]:
    """The probe service behind create_server, allowing the ``user`` role."""
    settings = probe_settings
    server, port, health = await create_server(
        "127.0.0.1:0",
        settings=settings,
        register=[lambda s: s.add_generic_rpc_handlers([probe_service])],
        service_names=[PROBE],
        access=PROBE_ACCESS,
    )
    addr = f"127.0.0.1:{port}"
    channel = open_channel(addr, settings, token("user", "user-1"))
    anonymous = open_channel(addr, settings)
    yield Stack(server, health, channel, anonymous)
    await channel.close()
    await anonymous.close()
    await server.stop(None)


def _count(method: str, code: str) -> float:
    labels = {"service": PROBE, "method": method, "code": code}
    return REGISTRY.get_sample_value("assay_rpc_requests_total", labels) or 0.0


async def test_health_is_exempt_and_serving(stack: Stack) -> None:
    health = health_pb2_grpc.HealthStub(stack.anonymous)
    for service in ("", PROBE):
        reply = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
        assert reply.status == SERVING


async def test_reflection_is_exempt_and_lists_services(stack: Stack) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(stack.anonymous)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    replies = [reply async for reply in stub.ServerReflectionInfo(iter([request]), timeout=10)]
    names = {s.name for s in replies[0].list_services_response.service}
    assert {PROBE, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= names


async def test_reflection_off_is_not_served(
    probe_service: grpc.GenericRpcHandler, probe_settings: Settings
) -> None:
    settings = dataclasses.replace(probe_settings, reflection=False)
    server, port, _health = await create_server(
        "127.0.0.1:0",
        settings=settings,
        register=[lambda s: s.add_generic_rpc_handlers([probe_service])],
        service_names=[PROBE],
        access=PROBE_ACCESS,
    )
    try:
        async with open_channel(f"127.0.0.1:{port}", settings) as channel:
            stub = reflection_pb2_grpc.ServerReflectionStub(channel)
            request = reflection_pb2.ServerReflectionRequest(list_services="")
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                async for _ in stub.ServerReflectionInfo(iter([request]), timeout=10):
                    pass
        assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        await server.stop(None)


async def test_layering_auth_then_domain_errors(stack: Stack) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await probe_unary(stack.anonymous, "Fail")(b"invalid", timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await probe_unary(stack.channel, "Fail")(b"invalid", timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert len(errors.field_violations_of(caught.value)) == 2
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await probe_unary(stack.channel, "Fail")(b"boom", timeout=10)
    assert caught.value.code() == grpc.StatusCode.INTERNAL
    assert "hunter2" not in (caught.value.details() or "")


async def test_metrics_count_by_code(stack: Stack) -> None:
    ok, denied, bad = (
        _count("Whoami", "OK"),
        _count("Whoami", "UNAUTHENTICATED"),
        _count("Fail", "FAILED_PRECONDITION"),
    )
    await probe_unary(stack.channel, "Whoami")(b"", timeout=10)
    with pytest.raises(grpc.aio.AioRpcError):
        await probe_unary(stack.anonymous, "Whoami")(b"", timeout=10)
    with pytest.raises(grpc.aio.AioRpcError):
        await probe_unary(stack.channel, "Fail")(b"tokens", timeout=10)
    assert _count("Whoami", "OK") == ok + 1
    assert _count("Whoami", "UNAUTHENTICATED") == denied + 1
    assert _count("Fail", "FAILED_PRECONDITION") == bad + 1
    labels = {"service": PROBE, "method": "Whoami"}
    assert (REGISTRY.get_sample_value("assay_rpc_duration_seconds_count", labels) or 0) >= 2


async def _watch_until(
    stub: health_pb2_grpc.HealthStub, status: int, watching: asyncio.Event | None = None
) -> None:
    """Watch the probe's health until ``status``; ``watching`` is set at the first reply
    (the stream is established: a server that stops accepting cannot refuse it any more)."""
    call = stub.Watch(health_pb2.HealthCheckRequest(service=PROBE), timeout=10)
    try:
        async for reply in call:
            if watching is not None:
                watching.set()
            if reply.status == status:
                return
    finally:
        call.cancel()


async def test_graceful_shutdown_drains_in_flight_call(stack: Stack, probe: Any) -> None:
    health = health_pb2_grpc.HealthStub(stack.anonymous)
    watching = asyncio.Event()
    watch = asyncio.create_task(_watch_until(health, NOT_SERVING, watching))
    await asyncio.wait_for(watching.wait(), 10)  # on its own connection, before it stops
    in_flight = asyncio.ensure_future(probe_unary(stack.channel, "Slow")(b"", timeout=30))
    await asyncio.wait_for(probe.slow_started.wait(), 10)
    order: list[str] = []

    async def on_stop() -> None:
        order.append("on_stop after the call" if probe.slow_finished.is_set() else "on_stop early")

    stopping = asyncio.create_task(shutdown(stack.server, stack.health, 20, [on_stop]))
    await asyncio.wait_for(watch, 10)  # health flipped while the call is still running
    assert not in_flight.done()
    with pytest.raises(grpc.aio.AioRpcError):  # no new calls once stopping
        await probe_unary(stack.channel, "Whoami")(b"", timeout=10)
    probe.release.set()
    assert await asyncio.wait_for(in_flight, 10) == b"done"
    await asyncio.wait_for(stopping, 10)
    assert order == ["on_stop after the call"]


class FakeService:
    """A service that records how it was stopped."""

    def __init__(self) -> None:
        self.stopped_with: list[float] = []

    async def stop(self, grace: float) -> None:
        self.stopped_with.append(grace)


async def test_serve_until_stopped_stops_the_service_within_the_grace() -> None:
    service, stop = FakeService(), asyncio.Event()

    async def start(settings: Settings) -> FakeService:
        return service

    serving = asyncio.create_task(
        serve_until_stopped("probe", Settings(shutdown_grace=3.0), start, stop)
    )
    await asyncio.sleep(0)
    stop.set()
    assert await asyncio.wait_for(serving, 10) == 0
    assert service.stopped_with == [3.0]


async def test_serve_until_stopped_exits_at_once_when_stopped_while_starting() -> None:
    stop, never = asyncio.Event(), asyncio.Event()

    async def start(settings: Settings) -> FakeService:
        await never.wait()  # waiting for a dependency that does not come
        return FakeService()

    serving = asyncio.create_task(serve_until_stopped("probe", Settings(), start, stop))
    stop.set()
    assert await asyncio.wait_for(serving, 10) == 0


async def test_serve_until_stopped_says_why_a_start_failed(caplog) -> None:
    async def start(settings: Settings) -> FakeService:
        raise OSError("port 50052 is taken")

    assert await serve_until_stopped("probe", Settings(), start, asyncio.Event()) == 1
    assert "could not start: port 50052 is taken" in caplog.text
