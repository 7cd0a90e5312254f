"""The consumer's edges: at most ASSAY_WORKER_CONCURRENCY jobs held, malformed messages
terminated, the max-deliveries advisory failing the job, and the health endpoint."""

from __future__ import annotations

import asyncio
import json

import grpc.aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from nats.aio.client import Client as NatsClient
from nats.errors import TimeoutError as NatsTimeout

from assay.common.v1 import job_pb2
from assay.events.v1 import events_pb2
from assaylib.streams import StreamNames, ensure_worker_consumer
from tests.archive.helpers import check_invariants, wait_until
from tests.worker.conftest import (
    EventLog,
    Outcomes,
    StartWorker,
    get_job,
    ledger_kinds,
    submit,
)
from worker.advisories import MAX_DELIVERIES_CODE, MaxDeliveriesWatcher
from worker.app import SERVICE_NAME, max_deliver_for
from worker.archive_client import ArchiveClient
from worker.job_runner import Outcome


async def test_a_worker_holds_at_most_its_concurrency(
    archive_stub, start_worker: StartWorker, outcomes: Outcomes, events: EventLog, nc, settings
) -> None:
    names = StreamNames(settings.stream_prefix)
    app = await start_worker(worker_concurrency=2, analyzer_delay=1.0)
    # One grant in all: tests.archive.helpers.check_invariants counts grants as duplicates.
    jobs = [await submit(archive_stub, tokens=5 if i == 0 else 0) for i in range(5)]
    js = nc.jetstream()

    async def two_started() -> bool:
        return sum("analysis.started" in events.types(j.job_id) for j in jobs) >= 2

    await wait_until(two_started)
    info = await js.consumer_info(names.jobs_stream, names.worker_consumer)
    assert info.num_ack_pending <= 2, "only as many messages fetched as there are slots"
    assert app.consumer.held <= 2
    for job in jobs:
        await events.wait_for(job.job_id, "analysis.completed")
    # Replay the transitions in commit order: never more than two attempts at once.
    changes = sorted(
        (e.occurred_at.ToDatetime(), e.event_type == "analysis.started")
        for j in jobs
        for e in events.of(j.job_id)
        if e.event_type in ("analysis.started", "analysis.completed")
    )
    running = peak = 0
    for _at, starting in changes:
        running += 1 if starting else -1
        peak = max(peak, running)
    assert peak == 2
    await check_invariants(settings.database_url)


async def test_an_unparseable_message_is_terminated(
    start_worker: StartWorker, outcomes: Outcomes, nc: NatsClient, settings
) -> None:
    names = StreamNames(settings.stream_prefix)
    await start_worker()
    js = nc.jetstream()
    await js.publish(names.analysis_subject, b"\xff\x00 not a job message")
    await outcomes.wait("", Outcome.MALFORMED)

    async def gone() -> bool:
        info = await js.stream_info(names.jobs_stream)
        return info.state.messages == 0

    await wait_until(gone)


async def test_max_deliveries_advisory_fails_the_queued_job_and_refunds(
    archive_stub, nc: NatsClient, events: EventLog, settings
) -> None:
    """JetStream gives up on a message nobody could handle (here: one naked until its
    deliveries ran out, by a consumer the test drives): the watcher fails its job."""
    names = StreamNames(settings.stream_prefix)
    js = nc.jetstream()
    await ensure_worker_consumer(js, names, ack_wait=30.0, max_deliver=2)
    subscription = await js.pull_subscribe_bind(
        durable=names.worker_consumer, stream=names.jobs_stream
    )
    watcher = MaxDeliveriesWatcher(
        nc, js, names, ArchiveClient(archive_stub, timeout=5.0), retry_for=5.0
    )
    await watcher.start()
    try:
        job = await submit(archive_stub)

        async def failed() -> bool:
            try:
                for msg in await subscription.fetch(1, timeout=0.2):
                    await msg.nak()
            except NatsTimeout:
                pass
            return (await get_job(archive_stub, job.job_id)).status == job_pb2.JOB_STATUS_FAILED

        await wait_until(failed)
    finally:
        await watcher.stop()
        await subscription.unsubscribe()
    stored = await get_job(archive_stub, job.job_id)
    assert stored.error_code == MAX_DELIVERIES_CODE
    assert await ledger_kinds(archive_stub, job.job_id) == ["DEBIT", "REFUND"]
    await events.wait_for(job.job_id, "analysis.failed")
    assert events.types(job.job_id) == ["analysis.queued", "analysis.failed"]

    async def deleted() -> bool:
        return (await js.stream_info(names.jobs_stream)).state.messages == 0

    await wait_until(deleted)
    # A repeat (or an advisory for a message already gone) changes nothing.
    assert await watcher.handle(json.dumps({"stream_seq": 1}).encode()) == "unreadable"
    assert await watcher.handle(b"not json") == "unreadable"
    await check_invariants(settings.database_url)


async def test_advisory_for_a_job_already_finished_is_a_harmless_refusal(
    archive_stub, start_worker: StartWorker, outcomes: Outcomes, nc: NatsClient, settings
) -> None:
    names = StreamNames(settings.stream_prefix)
    js = nc.jetstream()
    job = await submit(archive_stub)
    app = await start_worker()
    await outcomes.wait(job.job_id, Outcome.COMPLETED)
    await app.stop(grace=1.0)
    # An old copy of the job's message that JetStream gave up on.
    copy = events_pb2.AnalysisJobMessage(job_id=job.job_id, user_id="alice")
    ack = await js.publish(names.analysis_subject, copy.SerializeToString())
    watcher = MaxDeliveriesWatcher(
        nc, js, names, ArchiveClient(archive_stub, timeout=5.0), retry_for=5.0
    )
    assert await watcher.handle(json.dumps({"stream_seq": ack.seq}).encode()) == "settled"
    assert (await get_job(archive_stub, job.job_id)).status == job_pb2.JOB_STATUS_COMPLETED
    assert await ledger_kinds(archive_stub, job.job_id) == ["DEBIT"]
    assert (await js.stream_info(names.jobs_stream)).state.messages == 0
    await check_invariants(settings.database_url)


async def test_health_serves_while_running(start_worker: StartWorker) -> None:
    app = await start_worker()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", SERVICE_NAME):
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=service))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
    await asyncio.wait_for(app.stop(grace=1.0), timeout=10)


def test_max_deliver_leaves_room_for_every_attempt_and_the_exhaustion_check() -> None:
    for attempts in (1, 3, 5):
        assert max_deliver_for(attempts) >= attempts + 1
