"""GetSystemStatus (what `assay status` shows) agrees with the database it reads."""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg
import grpc
import grpc.aio
import pytest
from google.protobuf.duration_pb2 import Duration

from assay.archive.v1 import archive_service_pb2 as pb
from assay.archive.v1 import archive_service_pb2_grpc as pb_grpc
from assay.common.v1 import job_pb2
from assaylib.auth import bearer_token_interceptors
from tests.archive.helpers import Client, dsn, expire_lease
from tests.conftest import token

EVERY_STATUS = [v for v in job_pb2.JobStatus.values() if v]


async def database_counts(database: str) -> dict[int, int]:
    """Jobs per status, as the database has them (every status, zero included)."""
    conn = await asyncpg.connect(dsn(database))
    try:
        rows = await conn.fetch("SELECT status::text, count(*) FROM jobs GROUP BY 1")
    finally:
        await conn.close()
    found = {job_pb2.JobStatus.Value(f"JOB_STATUS_{s}"): n for s, n in rows}
    return {status: found.get(status, 0) for status in EVERY_STATUS}


async def test_status_of_an_empty_system(archive_stub) -> None:
    status = await archive_stub.GetSystemStatus(pb.GetSystemStatusRequest())
    assert [c.status for c in status.jobs] == EVERY_STATUS
    assert all(c.count == 0 for c in status.jobs)
    assert status.oldest_queued_age.ToTimedelta().total_seconds() == 0
    assert status.HasField("consumer") and status.consumer.pending == 0
    assert not status.workers and not status.HasField("last_sweep")


async def test_status_matches_the_jobs_workers_and_sweeps(archive_stub, database: str) -> None:
    client = Client(archive_stub)
    await client.grant("alice", 10)
    await client.submit()
    await client.start(await client.submit(), worker="w-busy")
    await client.complete(await client.start(await client.submit(), worker="w-done"))
    await client.fail(await client.start(await client.submit(), worker="w-done"))
    await client.cancel(await client.submit())
    stale = await client.start(await client.submit(), worker="w-dead")
    await expire_lease(database, stale.job_id, seconds=300)

    status = await archive_stub.GetSystemStatus(pb.GetSystemStatusRequest())
    counts = {c.status: c.count for c in status.jobs}
    assert counts == await database_counts(database)
    assert counts[job_pb2.JOB_STATUS_PROCESSING] == 2 and counts[job_pb2.JOB_STATUS_QUEUED] == 1
    minute = status.last_minute
    assert (minute.submitted, minute.completed, minute.failed, minute.cancelled) == (6, 1, 1, 1)
    assert status.oldest_queued_age.ToTimedelta().total_seconds() > 0
    # The stale job started 300 s before the others.
    assert status.oldest_processing_age.ToTimedelta().total_seconds() >= 300
    workers = {w.worker_id: (w.processing, w.finished_last_minute) for w in status.workers}
    assert workers == {"w-busy": (1, 0), "w-done": (0, 2), "w-dead": (1, 0)}
    assert status.workers[-1].worker_id == "w-dead"  # seen longest ago: listed last
    assert status.consumer.pending == 0  # no worker has declared the consumer

    request = pb.SweepStuckJobsRequest(
        stuck_after=Duration(seconds=120), max_processing=Duration(seconds=600)
    )
    swept = await archive_stub.SweepStuckJobs(request)
    assert swept.failed == 1
    dry = await archive_stub.SweepStuckJobs(
        pb.SweepStuckJobsRequest(
            stuck_after=Duration(seconds=120), max_processing=Duration(seconds=600), dry_run=True
        )
    )
    assert dry.found == 0
    after = await archive_stub.GetSystemStatus(pb.GetSystemStatusRequest())
    sweep = after.last_sweep  # the real sweep: a dry run is not recorded
    assert (sweep.found, sweep.failed, sweep.in_flight, sweep.held_back) == (1, 1, 2, False)
    assert sweep.ran_at.ToDatetime() <= after.observed_at.ToDatetime()
    assert {c.status: c.count for c in after.jobs} == await database_counts(database)


async def test_status_is_for_services_and_operators_only(archive) -> None:
    channel = grpc.aio.insecure_channel(
        f"127.0.0.1:{archive.port}", interceptors=bearer_token_interceptors(token("user"))
    )
    try:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await pb_grpc.ArchiveServiceStub(channel).GetSystemStatus(pb.GetSystemStatusRequest())
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    finally:
        await channel.close()


async def test_sampling_stops_even_when_a_sample_swallows_its_cancellation(archive) -> None:
    # nats-py swallows a cancellation that lands while it flushes a request; the sampler
    # must still end when the archive closes it, or the archive's shutdown would hang.
    status = archive.archive.status
    await status.close()
    entered = asyncio.Event()

    async def stubborn_sample() -> None:
        entered.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.Event().wait()  # until cancelled, then carry on as nats-py does

    status.sample = stubborn_sample
    status._closing.clear()
    status.start_sampling(seconds=0.01)
    await asyncio.wait_for(entered.wait(), 5)
    await asyncio.wait_for(status.close(), 5)
    assert status._sampling is not None and status._sampling.done()
