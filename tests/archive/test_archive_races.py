"""Concurrency: racing transitions never double-refund or complete-and-refund, and one
user's concurrent submissions never overdraw the balance."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import grpc
from google.protobuf.duration_pb2 import Duration

from assay.archive.v1 import archive_service_pb2 as pb
from assay.common.v1 import job_pb2
from tests.archive.helpers import (
    Client,
    check_invariants,
    dsn,
    expect_error,
    expire_lease,
    profile,
    talent_data,
)

JOBS = 30


async def _outcome(call: object) -> str:
    try:
        await call  # type: ignore[misc]
    except grpc.aio.AioRpcError as err:
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION, err.details()
        return "refused"
    return "ok"


async def test_complete_sweep_cancel_race(archive_stub, database: str) -> None:
    client = Client(archive_stub)
    await client.grant("alice", JOBS)
    jobs = [await client.start(await client.submit()) for _ in range(JOBS)]
    for job in jobs:  # every job looks stuck to the sweep, yet its worker is still there
        await expire_lease(database, job.job_id, seconds=600)
    sweep = pb.SweepStuckJobsRequest(
        stuck_after=Duration(seconds=60), max_processing=Duration(seconds=3600), limit=7
    )
    calls = []
    for job in jobs:
        calls.append(
            _outcome(
                archive_stub.CompleteJob(
                    pb.CompleteJobRequest(
                        job_id=job.job_id, worker_id="w1", attempt=1, test_result=profile()
                    )
                )
            )
        )
        calls.append(_outcome(client.cancel(job, "alice")))
    sweeps = [archive_stub.SweepStuckJobs(sweep) for _ in range(3)]
    results = await asyncio.gather(*calls, *sweeps)
    swept = {j.job_id for r in results[len(calls) :] for j in r.jobs}
    final = {j.job_id: await client.get(j.job_id) for j in jobs}
    completed = {i for i, j in final.items() if j.status == job_pb2.JOB_STATUS_COMPLETED}
    failed = {i for i, j in final.items() if j.status == job_pb2.JOB_STATUS_FAILED}
    assert completed | failed == set(final), "every job ends completed or swept"
    assert swept == failed and not swept & completed
    await check_invariants(database)  # no refund on a completed job, never two


async def test_concurrent_submissions_accept_exactly_the_balance(
    archive_stub, database: str
) -> None:
    client = Client(archive_stub)
    await client.grant("bob", 7)

    async def submit() -> str:
        try:
            await client.submit("bob")
        except grpc.aio.AioRpcError as err:
            assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
            return "refused"
        return "accepted"

    outcomes = await asyncio.gather(*(submit() for _ in range(20)))
    assert outcomes.count("accepted") == 7
    assert await client.balance("bob") == 0
    counts = await check_invariants(database)
    assert counts["jobs"] == 7


async def test_idempotent_submission_replays_and_charges_once(archive_stub, database: str) -> None:
    client = Client(archive_stub)
    await client.grant("carol", 5)
    request_id = str(uuid.uuid4())
    request = pb.CreateSubmissionRequest(
        user_id="carol", assessment_data=talent_data(), request_id=request_id
    )
    replies = await asyncio.gather(*(archive_stub.CreateSubmission(request) for _ in range(5)))
    assert len({r.job.job_id for r in replies}) == 1
    assert {r.tokens_remaining for r in replies} == {4}
    assert sum(not r.replayed for r in replies) == 1
    other = pb.CreateSubmissionRequest(
        user_id="carol", assessment_data=talent_data(score=10), request_id=request_id
    )
    await expect_error(archive_stub.CreateSubmission(other), grpc.StatusCode.ALREADY_EXISTS)
    assert await client.balance("carol") == 4
    counts = await check_invariants(database)
    assert counts["jobs"] == 1


async def test_insufficient_tokens_writes_nothing(archive_stub, database: str) -> None:
    client = Client(archive_stub)
    await expect_error(
        client.submit("dave"), grpc.StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_TOKENS"
    )
    conn = await asyncpg.connect(dsn(database))
    try:
        for table in ("jobs", "results", "outbox", "ledger_entries", "idempotency_keys"):
            assert await conn.fetchval(f"SELECT count(*) FROM {table}") == 0, table
    finally:
        await conn.close()


async def test_inflight_limit(archive_stub, database: str) -> None:
    client = Client(archive_stub)
    await client.grant("erin", 5)
    for _ in range(2):
        await client.submit("erin", max_inflight=2)
    await expect_error(
        client.submit("erin", max_inflight=2), grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED"
    )
    assert await client.balance("erin") == 3
    await check_invariants(database)
