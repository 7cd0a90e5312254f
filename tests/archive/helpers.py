"""Builders and invariant checks shared by the archive tests (and the flow tests)."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import asyncpg
import grpc
from google.protobuf import json_format
from google.protobuf.message import Message
from sqlalchemy.engine import make_url

from archive_svc.app import ArchiveApp
from archive_svc.audit import audit
from assay.archive.v1 import archive_service_pb2 as pb
from assay.archive.v1 import archive_service_pb2_grpc as pb_grpc
from assay.common.v1 import assessment_pb2, job_pb2
from assaylib.auth import bearer_token_interceptors
from assaylib.errors import error_from_rpc
from assaylib.validation import score_fields
from tests.conftest import token


def talent_data(score: int = 60) -> assessment_pb2.AssessmentData:
    """A complete Talent Mapping payload with every score set."""
    data = assessment_pb2.AssessmentData()
    for group in ("riasec", "ocean", "via_is"):
        message = getattr(data, group)
        for index, name in enumerate(score_fields(message)):
            setattr(message, name, (score + 7 * index) % 101)
    return data


def profile() -> assessment_pb2.PersonaProfile:
    """A stand-in persona profile for lifecycle tests (the analyzer has its own tests)."""
    return assessment_pb2.PersonaProfile(archetype="The Tester", short_summary="test")


def dsn(database_url: str) -> str:
    """The asyncpg DSN of a SQLAlchemy URL."""
    return make_url(database_url).set(drivername="postgresql").render_as_string(False)


async def expect_error(call: Any, code: grpc.StatusCode, reason: str = "") -> Any:
    """Await call; assert it fails with code (and ErrorInfo reason); return the AssayError."""
    try:
        await call
    except grpc.aio.AioRpcError as err:
        assert err.code() == code, f"expected {code}, got {err.code()}: {err.details()}"
        mapped = error_from_rpc(err)
        if reason:
            assert mapped.reason == reason, f"expected reason {reason}, got {mapped.reason}"
        return mapped
    raise AssertionError(f"expected {code}, but the call succeeded")


class Client:
    """Short-hands over the archive stub for building jobs in a given state."""

    def __init__(self, stub: pb_grpc.ArchiveServiceAsyncStub) -> None:
        self.stub = stub

    async def grant(self, user: str, amount: int) -> None:
        """Fund a user."""
        await self.stub.GrantTokens(pb.GrantTokensRequest(user_id=user, amount=amount, reason="t"))

    async def submit(self, user: str = "alice", **extra: Any) -> job_pb2.Job:
        """A QUEUED job (the user must have a token)."""
        reply = await self.stub.CreateSubmission(
            pb.CreateSubmissionRequest(user_id=user, assessment_data=talent_data(), **extra)
        )
        return reply.job

    async def start(self, job: job_pb2.Job, worker: str = "w1") -> job_pb2.Job:
        """Start (or take over) job as worker."""
        reply = await self.stub.StartJob(pb.StartJobRequest(job_id=job.job_id, worker_id=worker))
        return reply.job

    async def complete(self, job: job_pb2.Job) -> job_pb2.Job:
        """Complete job as its current worker and attempt."""
        reply = await self.stub.CompleteJob(
            pb.CompleteJobRequest(
                job_id=job.job_id,
                worker_id=job.worker_id,
                attempt=job.attempt,
                test_result=profile(),
            )
        )
        return reply.job

    async def fail(self, job: job_pb2.Job, code: str = "BROKEN") -> job_pb2.Job:
        """Fail job as its current worker (or without one when QUEUED)."""
        reply = await self.stub.FailJob(
            pb.FailJobRequest(
                job_id=job.job_id,
                worker_id=job.worker_id,
                attempt=job.attempt,
                error_code=code,
                error_message="it broke",
            )
        )
        return reply.job

    async def cancel(self, job: job_pb2.Job, user: str = "") -> job_pb2.Job:
        """Cancel job as its owner (or an operator when user is empty)."""
        reply = await self.stub.CancelJob(pb.CancelJobRequest(job_id=job.job_id, user_id=user))
        return reply.job

    async def get(self, job_id: str) -> job_pb2.Job:
        """The job as stored now."""
        return (await self.stub.GetJob(pb.GetJobRequest(job_id=job_id))).job

    async def balance(self, user: str) -> int:
        """A user's balance."""
        reply = await self.stub.GetTokenBalance(pb.GetTokenBalanceRequest(user_id=user))
        return reply.balance


async def expire_lease(database_url: str, job_id: str, seconds: float = 3600) -> None:
    """Move a job's heartbeat (and start) into the past, as if its worker went silent."""
    conn = await asyncpg.connect(dsn(database_url))
    try:
        await conn.execute(
            "UPDATE jobs SET heartbeat_at = heartbeat_at - make_interval(secs => $2),"
            " started_at = started_at - make_interval(secs => $2) WHERE job_id = $1",
            uuid.UUID(job_id),
            float(seconds),
        )
    finally:
        await conn.close()


async def snapshot(database_url: str) -> dict[str, Any]:
    """Everything a refused call must leave unchanged."""
    conn = await asyncpg.connect(dsn(database_url))
    try:
        return {
            "jobs": [dict(r) for r in await conn.fetch("SELECT * FROM jobs ORDER BY job_id")],
            "ledger": await conn.fetchval("SELECT count(*) FROM ledger_entries"),
            "balances": dict(await conn.fetch("SELECT user_id, balance FROM token_accounts")),
            "outbox": await conn.fetchval("SELECT count(*) FROM outbox"),
            "results": [
                dict(r) for r in await conn.fetch("SELECT * FROM results ORDER BY result_id")
            ],
        }
    finally:
        await conn.close()


async def check_invariants(database_url: str) -> dict[str, Any]:
    """Assert I1 and I2 over the whole database (``archive_svc.audit``); return the counts
    for further asserts."""
    report = await audit(dsn(database_url))
    assert report.ok, "\n".join(report.violations)
    return {"jobs": report.jobs, "ledger": report.ledger, "events": report.events}


async def wait_until(predicate: Any, within: float = 30.0, interval: float = 0.05) -> None:
    """Wait until the async predicate holds, failing after `within` seconds: for state only
    visible by asking (a row in PostgreSQL, a stream's message count), where there is no
    event to wait on. A bounded wait on a condition, not a sleep to let things settle."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not await predicate():
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {within}s")
        await asyncio.sleep(interval)


async def all_sent(database_url: str) -> bool:
    """Whether the relay has published every outbox row."""
    return not await outbox_ids(database_url, unsent_only=True)


def stub_for(app: ArchiveApp) -> tuple[grpc.aio.Channel, pb_grpc.ArchiveServiceAsyncStub]:
    """A channel and an operator's stub to an archive started by the test itself."""
    channel = grpc.aio.insecure_channel(
        f"127.0.0.1:{app.port}", interceptors=bearer_token_interceptors(token("operator"))
    )
    return channel, pb_grpc.ArchiveServiceStub(channel)


async def outbox_ids(database_url: str, *, unsent_only: bool = False) -> set[str]:
    """The ids of outbox rows (only the unsent ones when asked)."""
    conn = await asyncpg.connect(dsn(database_url))
    try:
        where = " WHERE NOT outbox_published(txid, seq)" if unsent_only else ""
        return {str(r["id"]) for r in await conn.fetch(f"SELECT id FROM outbox{where}")}
    finally:
        await conn.close()


async def queue_message_row(database_url: str, job_id: str | uuid.UUID) -> dict[str, Any]:
    """A job's queue message in the outbox with its result row's inputs and its job's locale,
    the columns the relay builds it from (``archive_svc.events.publication``)."""
    conn = await asyncpg.connect(dsn(database_url))
    try:
        row = await conn.fetchrow(
            "SELECT o.*, r.test_data, r.raw_responses, j.locale FROM outbox o"
            " JOIN results r ON r.result_id = o.result_id JOIN jobs j ON j.job_id = o.job_id"
            " WHERE o.kind = 'job' AND o.job_id = $1",
            uuid.UUID(str(job_id)),
        )
    finally:
        await conn.close()
    assert row is not None, f"job {job_id} has no queue message in the outbox"
    return dict(row)


def to_json(message: Message) -> str:
    """The proto3 JSON text of a message (lowerCamelCase), as the JSONB columns held it
    before migrations 0010 and 0012: a legacy row for the tests that read one."""
    return json.dumps(json_format.MessageToDict(message), separators=(",", ":"))
