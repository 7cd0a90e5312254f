"""Fixtures for the worker tests: WorkerApps in-process against the real archive (real
PostgreSQL and NATS), a log of the job events the archive relays, and submission helpers."""

from __future__ import annotations

import asyncio
import dataclasses
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import nats
import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from archive_svc.app import ArchiveApp
from assay.archive.v1 import archive_service_pb2 as pb
from assay.archive.v1 import archive_service_pb2_grpc as pb_grpc
from assay.common.v1 import job_pb2
from assay.events.v1 import events_pb2
from assaylib.config import Settings
from assaylib.streams import StreamNames, ensure_streams
from tests.archive.helpers import talent_data
from worker.app import WorkerApp
from worker.job_runner import AnalyzeFn, Outcome

WAIT = 30.0  # seconds any single condition may take before a test fails


class Outcomes:
    """What each started worker did with each message, as its observer reports it."""

    def __init__(self) -> None:
        self.seen: dict[str, list[tuple[str, Outcome]]] = defaultdict(list)
        self._changed = asyncio.Condition()

    def observer(self, worker: str) -> Callable[[str, Outcome], None]:
        """The observer callback for the worker named ``worker``."""

        def observe(job_id: str, outcome: Outcome) -> None:
            self.seen[job_id].append((worker, outcome))
            asyncio.get_running_loop().create_task(self._notify())

        return observe

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def wait(self, job_id: str, outcome: Outcome, within: float = WAIT) -> str:
        """Wait until some worker reports ``outcome`` for ``job_id``; return that worker."""

        def found() -> str | None:
            return next((w for w, o in self.seen[job_id] if o is outcome), None)

        async with asyncio.timeout(within):
            async with self._changed:
                await self._changed.wait_for(lambda: found() is not None)
        worker = found()
        assert worker is not None
        return worker


class EventLog:
    """Every JobEvent the archive relays to this test's events stream, in stream order."""

    def __init__(self) -> None:
        self.events: list[events_pb2.JobEvent] = []
        self._changed = asyncio.Condition()

    async def on_message(self, msg: Msg) -> None:
        """Subscription callback: record the event with its stream sequence as cursor."""
        event = events_pb2.JobEvent.FromString(msg.data)
        event.cursor = msg.metadata.sequence.stream
        self.events.append(event)
        async with self._changed:
            self._changed.notify_all()

    def of(self, job_id: str) -> list[events_pb2.JobEvent]:
        """The events of one job."""
        return [e for e in self.events if e.job_id == job_id]

    def types(self, job_id: str) -> list[str]:
        """The event types of one job, in order."""
        return [e.event_type for e in self.of(job_id)]

    async def wait_for(self, job_id: str, event_type: str, within: float = WAIT) -> None:
        """Wait until ``job_id`` has an event of ``event_type``."""
        async with asyncio.timeout(within):
            async with self._changed:
                await self._changed.wait_for(lambda: event_type in self.types(job_id))


@pytest.fixture
def worker_settings(settings: Settings, archive: ArchiveApp) -> Settings:
    """The test settings pointed at the in-process archive."""
    return dataclasses.replace(
        settings, archive_addr=f"127.0.0.1:{archive.port}", shutdown_grace=2.0
    )


@pytest.fixture
async def nc(settings: Settings) -> AsyncIterator[NatsClient]:
    """A NATS connection for the test itself."""
    client = await nats.connect(settings.nats_url)
    yield client
    await client.close()


@pytest.fixture
async def events(nc: NatsClient, settings: Settings) -> AsyncIterator[EventLog]:
    """The events stream, followed from its start by an ordered consumer."""
    names = StreamNames(settings.stream_prefix)
    js = nc.jetstream()
    await ensure_streams(js, names, events_max_age=settings.events_max_age)
    log = EventLog()
    subscription = await js.subscribe(
        names.events_filter(), cb=log.on_message, ordered_consumer=True
    )
    yield log
    await subscription.unsubscribe()


@pytest.fixture
def outcomes() -> Outcomes:
    """The outcome log every worker started by ``start_worker`` reports to."""
    return Outcomes()


StartWorker = Callable[..., Awaitable[WorkerApp]]


@pytest.fixture
async def start_worker(worker_settings: Settings, outcomes: Outcomes) -> AsyncIterator[StartWorker]:
    """start_worker(name, analyze=..., **settings changes) → a running WorkerApp (health on a
    free port) reporting to ``outcomes``; every one still running is stopped afterwards."""
    apps: list[WorkerApp] = []

    async def start(
        name: str = "w1", *, analyze: AnalyzeFn | None = None, **changes: Any
    ) -> WorkerApp:
        settings = dataclasses.replace(worker_settings, **changes)
        extra: dict[str, Any] = {} if analyze is None else {"analyze": analyze}
        app = await WorkerApp.start(
            settings,
            bind="127.0.0.1:0",
            observer=outcomes.observer(name),
            worker_id=name,
            **extra,
        )
        apps.append(app)
        return app

    yield start
    for app in apps:
        if not app.stopped:
            await app.stop(grace=1.0)


async def submit(
    stub: pb_grpc.ArchiveServiceAsyncStub,
    user: str = "alice",
    assessment_name: str = "AI-Driven Talent Mapping",
    tokens: int = 5,
    locale: str = "",
) -> job_pb2.Job:
    """Fund ``user`` with ``tokens`` (0: not at all) and submit a complete Talent Mapping
    payload (in ``locale``; empty: the archive's default); the QUEUED job."""
    if tokens:
        await stub.GrantTokens(pb.GrantTokensRequest(user_id=user, amount=tokens, reason="test"))
    reply = await stub.CreateSubmission(
        pb.CreateSubmissionRequest(
            user_id=user,
            assessment_name=assessment_name,
            assessment_data=talent_data(),
            locale=locale,
        )
    )
    return reply.job


async def get_job(stub: pb_grpc.ArchiveServiceAsyncStub, job_id: str) -> job_pb2.Job:
    """The job as stored now."""
    return (await stub.GetJob(pb.GetJobRequest(job_id=job_id))).job


async def ledger_kinds(stub: pb_grpc.ArchiveServiceAsyncStub, job_id: str) -> list[str]:
    """The kinds of one job's ledger entries (DEBIT, REFUND), oldest first."""
    reply = await stub.ListLedgerEntries(pb.ListLedgerEntriesRequest(job_id=job_id))
    return [
        pb.LedgerEntryKind.Name(e.kind).removeprefix("LEDGER_ENTRY_KIND_")
        for e in reversed(reply.entries)
    ]
