"""Fixtures for the observability tests: all four services in-process against the real
PostgreSQL and NATS (the archive from the root conftest), and clients for them."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import grpc.aio
import nats
import pytest
from nats.aio.client import Client as NatsClient
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from archive_svc.app import ArchiveApp
from assay.assessment.v1 import assessment_service_pb2_grpc as assessment_grpc
from assaylib import tracing
from assaylib.auth import bearer_token_interceptors
from assaylib.config import Settings
from assaylib.streams import StreamNames
from assessment_svc.app import AssessmentApp
from notifier.app import NotifierApp
from tests.conftest import token
from tests.notifier.watcher import Watchers
from worker.app import WorkerApp


@dataclass
class Mesh:
    """The running services, their settings, and clients a test drives them with."""

    settings: Settings
    archive: ArchiveApp
    assessment: AssessmentApp
    notifier: NotifierApp
    watchers: Watchers
    nc: NatsClient
    names: StreamNames
    workers: list[WorkerApp] = dataclasses.field(default_factory=list)
    _channels: list[grpc.aio.Channel] = dataclasses.field(default_factory=list)

    def client(self, user: str) -> assessment_grpc.AssessmentServiceAsyncStub:
        """An AssessmentService stub acting as ``user``."""
        channel = grpc.aio.insecure_channel(
            f"127.0.0.1:{self.assessment.port}",
            interceptors=bearer_token_interceptors(token("user", user)),
        )
        self._channels.append(channel)
        return assessment_grpc.AssessmentServiceStub(channel)

    async def start_worker(self, name: str = "w1", **options: Any) -> WorkerApp:
        """A worker pulling this mesh's jobs (``analyze=`` replaces the analysis)."""
        app = await WorkerApp.start(self.settings, bind="127.0.0.1:0", worker_id=name, **options)
        self.workers.append(app)
        return app

    async def close(self) -> None:
        """Stop what the mesh started (the archive is the root fixture's)."""
        for app in self.workers:
            if not app.stopped:
                await app.stop(grace=1.0)
        await self.watchers.close()
        for channel in self._channels:
            await channel.close()
        await self.notifier.stop(grace=1.0)
        await self.assessment.stop(grace=1.0)
        await self.nc.close()


async def start_mesh(settings: Settings, archive: ArchiveApp) -> Mesh:
    """Assessment and notifier (and workers on demand) wired to ``archive``."""
    wired = dataclasses.replace(
        settings, archive_addr=f"127.0.0.1:{archive.port}", shutdown_grace=2.0
    )
    assessment = await AssessmentApp.start(wired, "127.0.0.1:0")
    notifier = await NotifierApp.start(wired, "127.0.0.1:0")
    return Mesh(
        settings=wired,
        archive=archive,
        assessment=assessment,
        notifier=notifier,
        watchers=Watchers(notifier.port),
        nc=await nats.connect(settings.nats_url),
        names=StreamNames(settings.stream_prefix),
    )


@pytest.fixture
async def mesh(settings: Settings, archive: ArchiveApp) -> AsyncIterator[Mesh]:
    """The mesh around this test's archive."""
    found = await start_mesh(settings, archive)
    yield found
    await found.close()


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Tracing on in this process (every span recorded in memory) for one test; services
    started afterwards are instrumented."""
    exporter = InMemorySpanExporter()
    tracing.install("test", [SimpleSpanProcessor(exporter)])
    yield exporter
    tracing.uninstall()


@pytest.fixture
async def traced_mesh(spans: InMemorySpanExporter, settings: Settings) -> AsyncIterator[Mesh]:
    """The whole mesh, archive included, started with tracing on."""
    archive = await ArchiveApp.start(settings, "127.0.0.1:0")
    found = await start_mesh(settings, archive)
    yield found
    await found.close()
    await archive.stop(grace=1.0)
