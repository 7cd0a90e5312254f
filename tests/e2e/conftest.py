"""End to end: PostgreSQL, NATS and the four services as separate processes."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from assay.archive.v1 import archive_service_pb2_grpc
from assay.assessment.v1 import assessment_service_pb2_grpc
from assay_cli.stack import LocalStack, StackInfo
from assaylib.auth import bearer_token_interceptors
from assaylib.streams import StreamNames
from tests.archive.helpers import Client
from tests.conftest import Servers, Trust, token
from tests.notifier.watcher import Watchers

# Short timings so crash scenarios finish in seconds, consistent with the contract:
# lease = 3 × heartbeat < stuck_after.
TIMINGS = {
    "ASSAY_HEARTBEAT_INTERVAL": "0.5s",
    "ASSAY_LEASE_TIMEOUT": "1.5s",
    "ASSAY_STUCK_AFTER": "20s",
    "ASSAY_SHUTDOWN_GRACE": "2s",
    "ASSAY_WORKER_CONCURRENCY": "2",
    "ASSAY_BOOKMARK_INTERVAL": "1s",
    "ASSAY_MAX_INFLIGHT_PER_USER": "0",
}


@dataclass
class E2E:
    """A running stack and clients for it."""

    stack: LocalStack
    info: StackInfo
    archive: Client
    watchers: Watchers
    channels: list[grpc.aio.Channel]

    def assessment(
        self, user: str = "alice"
    ) -> assessment_service_pb2_grpc.AssessmentServiceAsyncStub:
        """An AssessmentService client acting as `user`."""
        channel = grpc.aio.insecure_channel(
            self.info.assessment, interceptors=bearer_token_interceptors(token("user", user))
        )
        self.channels.append(channel)
        return assessment_service_pb2_grpc.AssessmentServiceStub(channel)

    async def start_worker(self, name: str, **env: str) -> int:
        """Start another worker process; wait until it is healthy."""
        pid = self.stack.start_service("worker", as_name=name, **env)
        await asyncio.to_thread(self.stack.wait_healthy, name)
        return pid


@pytest.fixture
async def e2e(
    servers: Servers,
    database: str,
    stream_names: StreamNames,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    trust: Trust,
) -> AsyncIterator[E2E]:
    """The whole mesh as processes on this test's database and streams. A test marked
    `@pytest.mark.worker_env(KEY=value)` starts its first worker with that environment."""
    env = {
        **os.environ,
        **TIMINGS,
        "ASSAY_DATABASE_URL": database,
        "ASSAY_NATS_URL": servers.nats_url,
        "ASSAY_STREAM_PREFIX": stream_names.prefix,
        # The stack signs with the suite's key, so the suite's tokens are valid there.
        "ASSAY_SIGNING_KEY_FILE": str(trust.key_file),
    }
    marker = request.node.get_closest_marker("worker_env")
    worker_env = dict(marker.kwargs) if marker else {}
    stack = LocalStack(tmp_path / "stack", env)
    info = await asyncio.to_thread(stack.up, worker_env=worker_env)
    channel = grpc.aio.insecure_channel(
        info.archive, interceptors=bearer_token_interceptors(token("operator", "ops"))
    )
    watchers = Watchers(int(info.notifier.rsplit(":", 1)[1]))
    harness = E2E(
        stack,
        info,
        Client(archive_service_pb2_grpc.ArchiveServiceStub(channel)),
        watchers,
        [channel],
    )
    try:
        yield harness
    finally:
        await watchers.close()
        for open_channel in harness.channels:
            await open_channel.close()
        stopped = await asyncio.to_thread(stack.down)
        assert "archive" in stopped
