"""`python -m notifier` as a process: configuration errors, health, SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import grpc
import grpc.aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from archive_svc.app import ArchiveApp
from assaylib.config import Settings
from assaylib.embedded import free_port
from tests.notifier.watcher import Watchers


def environment(settings: Settings, archive: ArchiveApp, port: int) -> dict[str, str]:
    """The process environment for this test's servers and streams."""
    return {
        **os.environ,
        "ASSAY_NATS_URL": settings.nats_url,
        "ASSAY_JWKS_FILE": settings.jwks_file,
        "ASSAY_SERVICE_TOKEN_FILE": settings.service_token_file,
        "ASSAY_ARCHIVE_ADDR": f"127.0.0.1:{archive.port}",
        "ASSAY_NOTIFIER_ADDR": f"127.0.0.1:{port}",
        "ASSAY_STREAM_PREFIX": settings.stream_prefix,
        "ASSAY_EVENTS_MAX_AGE": str(settings.events_max_age),
        "ASSAY_SHUTDOWN_GRACE": "5",
    }


async def test_bad_configuration_exits_2_with_one_line() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASSAY_")}
    env["ASSAY_NOTIFIER_ADDR"] = "nowhere"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "notifier", env=env, stderr=asyncio.subprocess.PIPE
    )
    _, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 2
    lines = stderr.decode().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("notifier: invalid configuration")
    assert "ASSAY_NOTIFIER_ADDR" in lines[0] and "ASSAY_JWKS_FILE" in lines[0]


async def test_sigterm_ends_streams_resumably_and_exits(
    settings: Settings, archive: ArchiveApp
) -> None:
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "notifier", env=environment(settings, archive, port)
    )
    watchers = Watchers(port)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            reply = await health.Check(
                health_pb2.HealthCheckRequest(service="assay.notifier.v1.NotifierService"),
                wait_for_ready=True,
                timeout=30,
            )
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        watcher = watchers.open("user", "alice")
        await watcher.live()

        process.send_signal(signal.SIGTERM)

        err = await watcher.failure()
        assert err.code() == grpc.StatusCode.UNAVAILABLE
        assert await asyncio.wait_for(process.wait(), 10) == 0
    finally:
        await watchers.close()
        if process.returncode is None:
            process.kill()
            await process.wait()
