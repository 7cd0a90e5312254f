"""Every row of the state table, applied through the archive's RPCs against PostgreSQL: the
job ends in the row's target, its version moves iff the row is a transition, the row's event,
token movement and queue message are written — exactly those, in the same statement."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest
from google.protobuf.duration_pb2 import Duration

from archive_svc import erasure, lifecycle, states, store, sweep
from archive_svc.states import TABLE, Token, Transition
from assay.archive.v1 import archive_service_pb2 as pb
from assay.common.v1 import job_pb2
from tests.archive.helpers import (
    Client,
    check_invariants,
    dsn,
    expire_lease,
    profile,
    wait_until,
)


@dataclass
class Facts:
    """What the database holds about one job."""

    status: str
    version: int
    events: list[str]
    debits: int
    refunds: int
    queue_messages: int


async def facts(database: str, job_id: str) -> Facts:
    conn = await asyncpg.connect(dsn(database))
    try:
        ident = uuid.UUID(job_id)
        job = await conn.fetchrow("SELECT status, version FROM jobs WHERE job_id = $1", ident)
        events = await conn.fetch(
            "SELECT event_type FROM outbox WHERE job_id = $1 AND kind = 'event' ORDER BY seq",
            ident,
        )
        kinds = dict(
            await conn.fetch(
                "SELECT kind::text, count(*) FROM ledger_entries WHERE job_id = $1 GROUP BY 1",
                ident,
            )
        )
        queued = await conn.fetchval(
            "SELECT count(*) FROM outbox WHERE job_id = $1 AND kind = 'job'", ident
        )
    finally:
        await conn.close()
    return Facts(
        str(job["status"]),
        job["version"],
        [e["event_type"] for e in events],
        kinds.get("DEBIT", 0),
        kinds.get("REFUND", 0),
        queued,
    )


async def all_published(database: str, job_id: str) -> bool:
    """Whether the relay published every outbox row of the job."""
    conn = await asyncpg.connect(dsn(database))
    try:
        return bool(
            await conn.fetchval(
                "SELECT bool_and(outbox_published(txid, seq)) FROM outbox WHERE job_id = $1",
                uuid.UUID(job_id),
            )
        )
    finally:
        await conn.close()


async def sql(database: str, statement: str, job_id: str) -> None:
    conn = await asyncpg.connect(dsn(database))
    try:
        await conn.execute(statement, uuid.UUID(job_id))
    finally:
        await conn.close()


def sweep_request() -> pb.SweepStuckJobsRequest:
    request = pb.SweepStuckJobsRequest(force=True)
    request.stuck_after.FromSeconds(120)
    request.max_processing.FromSeconds(600)
    request.max_queued.CopyFrom(Duration(seconds=60))
    return request


Setup = Callable[[Client, str], Awaitable[job_pb2.Job]]
Act = Callable[[Client, job_pb2.Job], Awaitable[Any]]


async def queued(c: Client, database: str) -> job_pb2.Job:
    await c.grant("alice", 5)
    return await c.submit()


async def processing(c: Client, database: str) -> job_pb2.Job:
    return await c.start(await queued(c, database))


async def failed(c: Client, database: str) -> job_pb2.Job:
    return await c.fail(await processing(c, database))


async def expired(c: Client, database: str) -> job_pb2.Job:
    job = await processing(c, database)
    await expire_lease(database, job.job_id)
    return job


async def expired_cancelling(c: Client, database: str) -> job_pb2.Job:
    job = await processing(c, database)
    await c.cancel(job)
    await expire_lease(database, job.job_id)
    return job


async def expired_last_attempt(c: Client, database: str) -> job_pb2.Job:
    job = await processing(c, database)
    await sql(database, "UPDATE jobs SET attempt = 3 WHERE job_id = $1", job.job_id)
    await expire_lease(database, job.job_id)
    return job


async def cancelling(c: Client, database: str) -> job_pb2.Job:
    job = await processing(c, database)
    await c.cancel(job)
    return await c.get(job.job_id)


async def lost(c: Client, database: str, requeues: int = 0) -> job_pb2.Job:
    job = await queued(c, database)
    await wait_until(lambda: all_published(database, job.job_id))
    await sql(
        database,
        f"UPDATE jobs SET updated_at = now() - interval '1 hour', requeues = {requeues}"
        " WHERE job_id = $1",
        job.job_id,
    )
    return job


async def lost_for_good(c: Client, database: str) -> job_pb2.Job:
    return await lost(c, database, requeues=3)


async def start_as_w2(c: Client, job: job_pb2.Job) -> Any:
    return await c.stub.StartJob(pb.StartJobRequest(job_id=job.job_id, worker_id="w2"))


async def heartbeat(c: Client, job: job_pb2.Job) -> Any:
    return await c.stub.Heartbeat(
        pb.HeartbeatRequest(job_id=job.job_id, worker_id=job.worker_id, attempt=job.attempt)
    )


async def fail_unheld(c: Client, job: job_pb2.Job) -> Any:
    return await c.stub.FailJob(pb.FailJobRequest(job_id=job.job_id, error_code="GIVEN_UP"))


async def cancel_ack(c: Client, job: job_pb2.Job) -> Any:
    return await c.stub.CancelJob(
        pb.CancelJobRequest(job_id=job.job_id, worker_id=job.worker_id, attempt=job.attempt)
    )


async def retry(c: Client, job: job_pb2.Job) -> Any:
    return await c.stub.RetryJob(pb.RetryJobRequest(job_id=job.job_id))


async def sweep_all(c: Client, job: job_pb2.Job) -> Any:
    return await c.stub.SweepStuckJobs(sweep_request())


def erase_row(database: str) -> Act:
    """The erase row alone, as EraseUserData's first step applies it (the RPC's later steps
    also delete the job's queue message from the outbox: tests/archive/test_archive_erasure)."""

    async def act(c: Client, job: job_pb2.Job) -> Any:
        conn = await asyncpg.connect(dsn(database))
        try:
            return await store.apply(conn, erasure.ERASE_OP, [{"user_id": "alice"}], limit=10)
        finally:
            await conn.close()

    return act


async def submit_nothing(c: Client, job: job_pb2.Job) -> Any:
    return job  # CREATE is applied by the setup itself (the first fact read is after it)


CASES: dict[str, tuple[Setup, Act | None]] = {
    "create": (queued, submit_nothing),
    "start": (queued, lambda c, j: c.start(j)),
    "takeover": (expired, start_as_w2),
    "cancel_expired": (expired_cancelling, start_as_w2),
    "exhausted": (expired_last_attempt, start_as_w2),
    "heartbeat": (processing, heartbeat),
    "complete": (processing, lambda c, j: c.complete(j)),
    "fail": (processing, lambda c, j: c.fail(j)),
    "fail_unheld": (queued, fail_unheld),
    "cancel": (queued, lambda c, j: c.cancel(j)),
    "request_cancel": (processing, lambda c, j: c.cancel(j)),
    "cancel_ack": (cancelling, cancel_ack),
    "retry": (failed, retry),
    "sweep": (expired, sweep_all),
    "requeue": (lost, sweep_all),
    "sweep_queued": (lost_for_good, sweep_all),
    "erase": (processing, None),  # the act needs the database: erase_row
}


def test_every_row_has_a_case_and_every_operation_applies_rows_of_the_table() -> None:
    assert set(CASES) == {row.name for row in TABLE}
    operations = [
        lifecycle.START_OP,
        lifecycle.HEARTBEAT_OP,
        lifecycle.REPORT_OP,
        lifecycle.CANCEL_OP,
        sweep.SWEEP_OP,
        sweep.QUEUED_OP,
        erasure.ERASE_OP,
    ]
    applied = {rule.name for operation in operations for rule in operation.rules}
    debiting = {row.name for row in TABLE if row.token is Token.DEBIT}  # the two functions
    assert applied | debiting == {row.name for row in TABLE}
    assert debiting == {states.CREATE.name, states.RETRY.name}
    for operation in operations:
        for rule in operation.rules:
            assert f"THEN '{rule.name}'" in operation.sql  # each is classified by its guard


@pytest.mark.parametrize("row", TABLE, ids=lambda row: row.name)
async def test_row_applies_exactly_what_it_says(
    row: Transition, archive_stub, database: str
) -> None:
    client = Client(archive_stub)
    setup, act = CASES[row.name]
    act = act or erase_row(database)
    job = await setup(client, database)
    before = await facts(database, job.job_id)
    if row is states.CREATE:
        before = Facts("", 0, [], 0, 0, 0)
    await act(client, job)
    after = await facts(database, job.job_id)

    assert after.status == row.target.value
    assert after.version == before.version + int(row.is_transition)
    new_events = after.events[len(before.events) :]
    assert new_events == ([str(row.event)] if row.event else [])
    assert after.debits - before.debits == int(row.token is Token.DEBIT)
    assert after.refunds - before.refunds == int(row.token is Token.REFUND)
    assert after.queue_messages - before.queue_messages == int(row.queues)
    if row is states.COMPLETE:
        result = await archive_stub.GetResult(pb.GetResultRequest(result_id=job.result_id))
        assert result.result.test_result == profile()
    await check_invariants(database)
