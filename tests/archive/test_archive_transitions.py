"""Every transition of the state table, and a refusal that changes nothing for every other
(state, operation) pair — including stale attempts."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import asyncpg
import grpc
import pytest

from assay.archive.v1 import archive_service_pb2 as pb
from assay.common.v1 import job_pb2
from tests.archive.helpers import (
    Client,
    check_invariants,
    dsn,
    expect_error,
    expire_lease,
    profile,
    snapshot,
    wait_until,
)

S = job_pb2
Build = Callable[[Client], Awaitable[job_pb2.Job]]


async def queued(c: Client) -> job_pb2.Job:
    await c.grant("alice", 5)
    return await c.submit()


async def processing(c: Client) -> job_pb2.Job:
    return await c.start(await queued(c))


async def completed(c: Client) -> job_pb2.Job:
    return await c.complete(await processing(c))


async def failed(c: Client) -> job_pb2.Job:
    return await c.fail(await processing(c))


async def cancelled(c: Client) -> job_pb2.Job:
    return await c.cancel(await queued(c))


STATES: dict[str, Build] = {
    "QUEUED": queued,
    "PROCESSING": processing,
    "COMPLETED": completed,
    "FAILED": failed,
    "CANCELLED": cancelled,
}


def as_worker(job: job_pb2.Job) -> tuple[str, int]:
    return job.worker_id or "w1", job.attempt or 1


async def op_start(c: Client, job: job_pb2.Job) -> job_pb2.Job:
    return await c.start(job, "w2")


async def op_complete(c: Client, job: job_pb2.Job) -> job_pb2.Job:
    worker, attempt = as_worker(job)
    request = pb.CompleteJobRequest(
        job_id=job.job_id, worker_id=worker, attempt=attempt, test_result=profile()
    )
    return (await c.stub.CompleteJob(request)).job


async def op_fail(c: Client, job: job_pb2.Job) -> job_pb2.Job:
    worker, attempt = as_worker(job)
    request = pb.FailJobRequest(
        job_id=job.job_id, worker_id=worker, attempt=attempt, error_code="BROKEN"
    )
    return (await c.stub.FailJob(request)).job


async def op_fail_unheld(c: Client, job: job_pb2.Job) -> job_pb2.Job:
    request = pb.FailJobRequest(job_id=job.job_id, error_code="MAX_DELIVERIES")
    return (await c.stub.FailJob(request)).job


async def op_cancel(c: Client, job: job_pb2.Job) -> job_pb2.Job:
    return await c.cancel(job, "alice")


async def op_cancel_ack(c: Client, job: job_pb2.Job) -> job_pb2.Job:
    worker, attempt = as_worker(job)
    request = pb.CancelJobRequest(job_id=job.job_id, worker_id=worker, attempt=attempt)
    return (await c.stub.CancelJob(request)).job


async def op_retry(c: Client, job: job_pb2.Job) -> job_pb2.Job:
    return (await c.stub.RetryJob(pb.RetryJobRequest(job_id=job.job_id, user_id="alice"))).job


OPS = {
    "start": op_start,
    "complete": op_complete,
    "fail": op_fail,
    "fail_unheld": op_fail_unheld,
    "cancel": op_cancel,
    "cancel_ack": op_cancel_ack,
    "retry": op_retry,
}

# (state, operation) → the status it leads to; every pair not listed must be refused.
ALLOWED = {
    ("QUEUED", "start"): S.JOB_STATUS_PROCESSING,
    ("QUEUED", "fail_unheld"): S.JOB_STATUS_FAILED,
    ("QUEUED", "cancel"): S.JOB_STATUS_CANCELLED,
    ("PROCESSING", "complete"): S.JOB_STATUS_COMPLETED,
    ("PROCESSING", "fail"): S.JOB_STATUS_FAILED,
    # Not a transition: the job stays PROCESSING with cancel_requested until the worker stops.
    ("PROCESSING", "cancel"): S.JOB_STATUS_PROCESSING,
    ("FAILED", "retry"): S.JOB_STATUS_QUEUED,
}


@pytest.mark.parametrize("state", list(STATES))
@pytest.mark.parametrize("op", list(OPS))
async def test_transition_table(archive_stub, database: str, state: str, op: str) -> None:
    client = Client(archive_stub)
    job = await STATES[state](client)
    before = await snapshot(database)
    expected = ALLOWED.get((state, op))
    if expected is None:
        await expect_error(
            OPS[op](client, job), grpc.StatusCode.FAILED_PRECONDITION, "INVALID_TRANSITION"
        )
        assert await snapshot(database) == before, "a refused call changed something"
    else:
        after = await OPS[op](client, job)
        assert after.status == expected
        stored = await client.get(job.job_id)
        assert stored.status == expected
        assert stored.version == job.version + (
            0 if op == "cancel" and state == "PROCESSING" else 1
        )
    await check_invariants(database)


async def test_cancel_while_processing_then_worker_reports(archive_stub, database: str) -> None:
    client = Client(archive_stub)
    job = await processing(client)
    marked = await client.cancel(job, "alice")
    assert marked.cancel_requested and marked.status == S.JOB_STATUS_PROCESSING
    beat = await archive_stub.Heartbeat(
        pb.HeartbeatRequest(job_id=job.job_id, worker_id=job.worker_id, attempt=job.attempt)
    )
    assert beat.cancel_requested and not beat.lease_lost
    done = await op_cancel_ack(client, job)
    assert done.status == S.JOB_STATUS_CANCELLED
    assert await client.balance("alice") == 5
    counts = await check_invariants(database)
    assert counts["ledger"] == 3  # grant, debit, refund


async def test_takeover_only_after_lease_expiry(archive_stub, database: str) -> None:
    client = Client(archive_stub)
    job = await processing(client)
    await expect_error(
        client.start(job, "w2"), grpc.StatusCode.FAILED_PRECONDITION, "INVALID_TRANSITION"
    )
    await expire_lease(database, job.job_id)
    taken = await client.start(job, "w2")
    assert (taken.status, taken.attempt, taken.worker_id) == (S.JOB_STATUS_PROCESSING, 2, "w2")
    await check_invariants(database)


async def test_stale_attempt_is_refused_and_changes_nothing(archive_stub, database: str) -> None:
    client = Client(archive_stub)
    first = await processing(client)
    await expire_lease(database, first.job_id)
    second = await client.start(first, "w2")
    before = await snapshot(database)
    beat = await archive_stub.Heartbeat(
        pb.HeartbeatRequest(job_id=first.job_id, worker_id="w1", attempt=1)
    )
    assert beat.lease_lost
    for op in (op_complete, op_fail, op_cancel_ack):
        await expect_error(
            op(client, first), grpc.StatusCode.FAILED_PRECONDITION, "INVALID_TRANSITION"
        )
    assert await snapshot(database) == before
    done = await client.complete(second)
    assert done.status == S.JOB_STATUS_COMPLETED and done.attempt == 2
    await check_invariants(database)


async def test_expired_attempt_past_max_attempts_fails_with_refund(
    archive_stub, database: str
) -> None:
    client = Client(archive_stub)
    job = await processing(client)
    for worker in ("w2", "w3"):
        await expire_lease(database, job.job_id)
        job = await client.start(job, worker)
    assert job.attempt == 3
    await expire_lease(database, job.job_id)
    final = await client.start(job, "w4")
    assert final.status == S.JOB_STATUS_FAILED and final.error_code == "ATTEMPTS_EXHAUSTED"
    assert await client.balance("alice") == 5
    await check_invariants(database)


async def test_expired_attempt_with_cancel_requested_is_cancelled(
    archive_stub, database: str
) -> None:
    client = Client(archive_stub)
    job = await processing(client)
    await client.cancel(job, "alice")
    await expire_lease(database, job.job_id)
    final = await client.start(job, "w2")
    assert final.status == S.JOB_STATUS_CANCELLED
    await check_invariants(database)


async def test_retry_charges_again_and_requeues(archive_stub, database: str) -> None:
    client = Client(archive_stub)
    job = await failed(client)
    assert await client.balance("alice") == 5
    reply = await archive_stub.RetryJob(pb.RetryJobRequest(job_id=job.job_id))
    assert reply.job.status == S.JOB_STATUS_QUEUED and reply.job.charge_count == 2
    assert reply.job.attempt == 0 and reply.tokens_remaining == 4
    done = await client.complete(await client.start(reply.job))
    assert done.status == S.JOB_STATUS_COMPLETED
    counts = await check_invariants(database)
    assert counts["ledger"] == 4  # grant, debit, refund, debit


async def test_ownership_scoped_calls_hide_other_users_jobs(archive_stub, database: str) -> None:
    client = Client(archive_stub)
    job = await queued(client)
    before = await snapshot(database)
    for call in (
        archive_stub.GetJob(pb.GetJobRequest(job_id=job.job_id, user_id="mallory")),
        archive_stub.CancelJob(pb.CancelJobRequest(job_id=job.job_id, user_id="mallory")),
        archive_stub.GetResult(pb.GetResultRequest(result_id=job.result_id, user_id="mallory")),
    ):
        await expect_error(call, grpc.StatusCode.NOT_FOUND)
    assert await snapshot(database) == before


async def test_heartbeats_update_the_job_row_in_place(archive_stub, database: str) -> None:
    """A heartbeat changes no indexed column, so PostgreSQL updates the row in its page (HOT)
    and writes no index entries; with heartbeat_at indexed, none of them would be HOT."""
    client = Client(archive_stub)
    job = await processing(client)
    beats = 20
    for _ in range(beats):
        beat = await archive_stub.Heartbeat(
            pb.HeartbeatRequest(job_id=job.job_id, worker_id=job.worker_id, attempt=job.attempt)
        )
        assert not beat.lease_lost
    conn = await asyncpg.connect(dsn(database))
    try:

        async def hot_updates() -> bool:  # the archive's backends report their counts when idle
            found = await conn.fetchval(
                "SELECT n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'jobs'"
            )
            return int(found) >= beats

        await wait_until(hot_updates, within=30)
    finally:
        await conn.close()
