"""The stuck-job sweep: what it fails, what it never touches, its guard and its lock."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import grpc
from google.protobuf.duration_pb2 import Duration

from archive_svc import store
from assay.archive.v1 import archive_service_pb2 as pb
from assay.common.v1 import job_pb2
from tests.archive.helpers import Client, check_invariants, dsn, expect_error, expire_lease


def sweep_request(**extra: Any) -> pb.SweepStuckJobsRequest:
    return pb.SweepStuckJobsRequest(
        stuck_after=Duration(seconds=120), max_processing=Duration(seconds=600), **extra
    )


async def test_sweep_fails_only_stuck_jobs(archive_stub, database: str) -> None:
    client = Client(archive_stub)
    await client.grant("alice", 10)
    stale = await client.start(await client.submit())
    fresh = await client.start(await client.submit())
    queued = await client.submit()
    done = await client.complete(await client.start(await client.submit()))
    await expire_lease(database, stale.job_id, seconds=300)
    await expire_lease(database, done.job_id, seconds=300)  # terminal: never touched

    listed = await archive_stub.ListStuckJobs(
        pb.ListStuckJobsRequest(
            stuck_after=Duration(seconds=120), max_processing=Duration(seconds=600)
        )
    )
    assert [j.job_id for j in listed.jobs] == [stale.job_id] and listed.in_flight == 2
    dry = await archive_stub.SweepStuckJobs(sweep_request(dry_run=True))
    assert [j.job_id for j in dry.jobs] == [stale.job_id] and dry.failed == 0
    assert (await client.get(stale.job_id)).status == job_pb2.JOB_STATUS_PROCESSING

    swept = await archive_stub.SweepStuckJobs(sweep_request())
    assert [j.job_id for j in swept.jobs] == [stale.job_id]
    assert (swept.found, swept.failed, swept.refunded) == (1, 1, 1)
    stored = await client.get(stale.job_id)
    assert stored.status == job_pb2.JOB_STATUS_FAILED and stored.error_code == "STUCK"
    assert "no heartbeat" in stored.error_message
    for job, status in (
        (fresh, job_pb2.JOB_STATUS_PROCESSING),
        (queued, job_pb2.JOB_STATUS_QUEUED),
        (done, job_pb2.JOB_STATUS_COMPLETED),
    ):
        assert (await client.get(job.job_id)).status == status
    again = await archive_stub.SweepStuckJobs(sweep_request())
    assert again.found == 0 and not again.jobs  # refunded exactly once
    await check_invariants(database)


async def test_sweep_fails_wedged_job_over_processing_limit(archive_stub, database: str) -> None:
    client = Client(archive_stub)
    await client.grant("alice", 1)
    job = await client.start(await client.submit())
    conn = await asyncpg.connect(dsn(database))
    try:  # heartbeating, but started long ago
        await conn.execute(
            "UPDATE jobs SET started_at = now() - interval '1 hour', heartbeat_at = now()"
        )
    finally:
        await conn.close()
    swept = await archive_stub.SweepStuckJobs(sweep_request())
    assert [j.job_id for j in swept.jobs] == [job.job_id]
    assert "longer than" in (await client.get(job.job_id)).error_message
    await check_invariants(database)


async def test_sweep_in_batches(archive_stub, database: str) -> None:
    client = Client(archive_stub)
    await client.grant("alice", 12)
    jobs = [await client.start(await client.submit()) for _ in range(12)]
    for job in jobs:
        await expire_lease(database, job.job_id, seconds=300)
    swept = await archive_stub.SweepStuckJobs(sweep_request(limit=5))
    assert swept.failed == 12 and len({j.job_id for j in swept.jobs}) == 12
    assert await client.balance("alice") == 12
    await check_invariants(database)


async def test_guard_holds_back_when_most_jobs_look_stuck(archive_stub, database: str) -> None:
    client = Client(archive_stub)
    await client.grant("alice", 10)
    jobs = [await client.start(await client.submit()) for _ in range(10)]
    for job in jobs[:8]:
        await expire_lease(database, job.job_id, seconds=300)
    guarded = sweep_request(max_fraction=0.5, guard_min_count=3)
    held = await archive_stub.SweepStuckJobs(guarded)
    assert held.held_back and held.failed == 0 and "8 of 10" in held.reason
    statuses = [(await client.get(j.job_id)).status for j in jobs]
    assert statuses == [job_pb2.JOB_STATUS_PROCESSING] * 10
    forced = await archive_stub.SweepStuckJobs(sweep_request(max_fraction=0.5, force=True))
    assert not forced.held_back and forced.failed == 8
    await check_invariants(database)


async def test_guard_lets_a_single_dead_worker_be_swept(archive_stub, database: str) -> None:
    client = Client(archive_stub)
    await client.grant("alice", 1)
    job = await client.start(await client.submit())
    await expire_lease(database, job.job_id, seconds=300)
    swept = await archive_stub.SweepStuckJobs(sweep_request(max_fraction=0.5, guard_min_count=5))
    assert not swept.held_back and swept.failed == 1


async def test_second_concurrent_sweep_finds_the_lock_taken(archive, archive_stub) -> None:
    async with archive.pool.acquire() as conn:
        assert await store.try_advisory_lock(conn, store.SWEEP_LOCK_KEY)
        busy = await archive_stub.SweepStuckJobs(sweep_request())
        assert busy.lock_busy and "another sweep" in busy.reason
        await store.advisory_unlock(conn, store.SWEEP_LOCK_KEY)
    free = await archive_stub.SweepStuckJobs(sweep_request())
    assert not free.lock_busy


async def test_parallel_sweeps_never_double_refund(archive_stub, database: str) -> None:
    client = Client(archive_stub)
    await client.grant("alice", 20)
    jobs = [await client.start(await client.submit()) for _ in range(20)]
    for job in jobs:
        await expire_lease(database, job.job_id, seconds=300)
    results = await asyncio.gather(
        *(archive_stub.SweepStuckJobs(sweep_request(limit=3)) for _ in range(4))
    )
    assert sum(r.failed for r in results) == 20  # each job swept by exactly one sweep
    assert all(r.failed == 0 for r in results if r.lock_busy)
    await check_invariants(database)


async def test_a_duration_beyond_postgresql_s_timestamps_is_invalid_not_internal(
    archive_stub,
) -> None:
    ages = 10_000 * 365 * 86400  # a valid Duration; now() minus it is before 4713 BC
    for field in ("stuck_after", "max_processing", "max_queued", "result_retention"):
        request = pb.SweepStuckJobsRequest(
            stuck_after=Duration(seconds=60), max_processing=Duration(seconds=60)
        )
        getattr(request, field).CopyFrom(Duration(seconds=ages))
        err = await expect_error(
            archive_stub.SweepStuckJobs(request), grpc.StatusCode.INVALID_ARGUMENT
        )
        assert field in str(err.details())
