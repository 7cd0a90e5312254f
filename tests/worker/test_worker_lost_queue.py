"""I5 when JetStream lost a job's message: the sweep's queued-too-long pass re-publishes it
through the outbox (a new message id), a worker then runs it; after ASSAY_MAX_ATTEMPTS
re-publications the job fails (code STUCK), refunded once and announced."""

from __future__ import annotations

import uuid

import asyncpg
from google.protobuf.duration_pb2 import Duration
from nats.aio.client import Client as NatsClient

from assay.archive.v1 import archive_service_pb2 as pb
from assay.common.v1 import job_pb2
from assaylib.config import Settings
from assaylib.streams import StreamNames
from tests.archive.helpers import check_invariants, dsn, wait_until
from tests.worker.conftest import (
    EventLog,
    Outcomes,
    StartWorker,
    get_job,
    ledger_kinds,
    submit,
)
from worker.job_runner import Outcome

MAX_QUEUED = 60.0


def sweep_request(**extra: object) -> pb.SweepStuckJobsRequest:
    """A sweep with the queued-too-long pass on (and the processing pass's limits)."""
    request = pb.SweepStuckJobsRequest(**extra)  # type: ignore[arg-type]
    request.stuck_after.FromSeconds(120)
    request.max_processing.FromSeconds(600)
    request.max_queued.CopyFrom(Duration(seconds=int(MAX_QUEUED)))
    return request


async def queue_messages(database_url: str, job_id: str) -> list[tuple[str, bool]]:
    """The job's queue messages in the outbox: (id, sent), oldest first."""
    conn = await asyncpg.connect(dsn(database_url))
    try:
        rows = await conn.fetch(
            "SELECT id, outbox_published(txid, seq) AS sent FROM outbox"
            " WHERE job_id = $1 AND kind = 'job' ORDER BY seq",
            uuid.UUID(job_id),
        )
    finally:
        await conn.close()
    return [(str(r["id"]), r["sent"]) for r in rows]


async def lose_message(database_url: str, nc: NatsClient, settings: Settings, job_id: str) -> None:
    """Wait until the job's queue messages were published, then lose them all (purge the
    jobs stream) and age the job past max_queued, as if JetStream had given up on it."""

    async def all_sent() -> bool:
        messages = await queue_messages(database_url, job_id)
        return bool(messages) and all(sent for _, sent in messages)

    await wait_until(all_sent)
    await nc.jetstream().purge_stream(StreamNames(settings.stream_prefix).jobs_stream)
    conn = await asyncpg.connect(dsn(database_url))
    try:
        await conn.execute(
            "UPDATE jobs SET updated_at = now() - make_interval(secs => $2) WHERE job_id = $1",
            uuid.UUID(job_id),
            MAX_QUEUED * 2,
        )
    finally:
        await conn.close()


async def test_a_lost_queued_job_is_republished_and_then_completes(
    archive_stub,
    start_worker: StartWorker,
    outcomes: Outcomes,
    events: EventLog,
    nc: NatsClient,
    settings: Settings,
) -> None:
    job = await submit(archive_stub)
    fresh = await submit(archive_stub, user="bob")  # queued just now: not lost
    await lose_message(settings.database_url, nc, settings, job.job_id)
    first = await queue_messages(settings.database_url, job.job_id)

    swept = await archive_stub.SweepStuckJobs(sweep_request())

    assert (swept.queued, swept.queued_found, swept.requeued) == (2, 1, 1)
    assert list(swept.requeued_job_ids) == [job.job_id]
    assert swept.failed == 0 and not swept.held_back
    messages = await queue_messages(settings.database_url, job.job_id)
    assert len(messages) == 2 and messages[0] == first[0]
    assert messages[1][0] != first[0][0], "a re-publication has a new Nats-Msg-Id"
    stored = await get_job(archive_stub, job.job_id)
    assert stored.status == job_pb2.JOB_STATUS_QUEUED and stored.requeues == 1
    assert stored.version == job.version, "a re-publication is not a transition: no event"
    assert (await get_job(archive_stub, fresh.job_id)).requeues == 0

    await start_worker()
    await outcomes.wait(job.job_id, Outcome.COMPLETED)
    await events.wait_for(job.job_id, "analysis.completed")
    assert events.types(job.job_id) == ["analysis.queued", "analysis.started", "analysis.completed"]
    assert await ledger_kinds(archive_stub, job.job_id) == ["DEBIT"]
    await check_invariants(settings.database_url)


async def test_a_job_lost_after_every_republication_fails_refunded_once(
    archive_stub, events: EventLog, nc: NatsClient, settings: Settings
) -> None:
    job = await submit(archive_stub)
    for republication in range(1, settings.max_attempts + 1):
        await lose_message(settings.database_url, nc, settings, job.job_id)
        swept = await archive_stub.SweepStuckJobs(sweep_request())
        assert (swept.requeued, swept.failed) == (1, 0)
        assert (await get_job(archive_stub, job.job_id)).requeues == republication

    await lose_message(settings.database_url, nc, settings, job.job_id)
    swept = await archive_stub.SweepStuckJobs(sweep_request())

    assert (swept.queued_found, swept.requeued, swept.failed, swept.refunded) == (1, 0, 1, 1)
    assert [j.job_id for j in swept.jobs] == [job.job_id]
    stored = await get_job(archive_stub, job.job_id)
    assert stored.status == job_pb2.JOB_STATUS_FAILED and stored.error_code == "STUCK"
    assert f"re-published {settings.max_attempts} time(s)" in stored.error_message
    assert await ledger_kinds(archive_stub, job.job_id) == ["DEBIT", "REFUND"]
    await events.wait_for(job.job_id, "analysis.stuck")
    assert events.types(job.job_id) == ["analysis.queued", "analysis.stuck"]

    again = await archive_stub.SweepStuckJobs(sweep_request())
    assert (again.queued_found, again.requeued, again.failed) == (0, 0, 0)
    assert await ledger_kinds(archive_stub, job.job_id) == ["DEBIT", "REFUND"]
    await check_invariants(settings.database_url)


async def test_most_queued_jobs_lost_at_once_holds_the_pass_back(
    archive_stub, nc: NatsClient, settings: Settings
) -> None:
    jobs = [await submit(archive_stub, user=f"u{i}") for i in range(4)]
    for job in jobs:
        await lose_message(settings.database_url, nc, settings, job.job_id)

    guarded = await archive_stub.SweepStuckJobs(sweep_request(max_fraction=0.5, guard_min_count=3))
    assert guarded.held_back and guarded.requeued == 0
    assert "4 of 4 queued jobs look lost" in guarded.reason
    assert [(await get_job(archive_stub, j.job_id)).requeues for j in jobs] == [0, 0, 0, 0]

    forced = await archive_stub.SweepStuckJobs(
        sweep_request(max_fraction=0.5, guard_min_count=3, force=True)
    )
    assert not forced.held_back and forced.requeued == 4
    await check_invariants(settings.database_url)


async def test_dry_run_and_a_zero_max_queued_republish_nothing(
    archive_stub, nc: NatsClient, settings: Settings
) -> None:
    job = await submit(archive_stub)
    await lose_message(settings.database_url, nc, settings, job.job_id)

    dry = await archive_stub.SweepStuckJobs(sweep_request(dry_run=True))
    assert (dry.queued_found, dry.requeued) == (1, 0)
    off = sweep_request()
    off.ClearField("max_queued")
    skipped = await archive_stub.SweepStuckJobs(off)
    assert (skipped.queued_found, skipped.requeued) == (0, 0)
    assert len(await queue_messages(settings.database_url, job.job_id)) == 1
