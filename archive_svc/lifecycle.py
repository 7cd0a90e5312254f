"""The job lifecycle: every transition of the state table, with its token movement and
its event written in the same transaction."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from archive_svc import convert, store
from archive_svc.events import event_row, queue_row
from archive_svc.records import (
    Policy,
    check_inflight,
    check_owner,
    owner_violations,
    parse_uuid,
)
from archive_svc.states import (
    CANCEL,
    CANCEL_ACK,
    COMPLETE,
    FAIL,
    RETRY,
    START,
    TAKEOVER,
    Transition,
)
from assay.archive.v1 import archive_service_pb2 as pb
from assay.common.v1 import assessment_pb2, job_pb2
from assaylib import validation as v
from assaylib.errors import FieldViolation, InsufficientTokens, InvalidTransition
from assaylib.streams import StreamNames

LEASE_EXPIRED = "heartbeat_at < now() - make_interval(secs => :lease)"
HOLDER = "worker_id = :worker_id AND attempt = :attempt"
NEW_ATTEMPT = (
    "attempt = attempt + 1, worker_id = :worker_id, heartbeat_at = now(), started_at = now()"
)
FINISH = "finished_at = now()"
ATTEMPTS_EXHAUSTED = "ATTEMPTS_EXHAUSTED"
MAX_ERROR_MESSAGE_CHARS = 4000


def refund_for(row: RowMapping, reason: str) -> store.Refund:
    """The refund of a job row's current charge."""
    return store.Refund(
        user_id=row["user_id"],
        job_id=row["job_id"],
        charge_no=row["charge_count"],
        amount=row["token_cost"],
        reason=reason,
    )


def error_text_violations(code: str, message: str) -> list[FieldViolation]:
    """Violations of a failure report's code and message (stored and sent in events)."""
    violations = v.text_violations(code, "error_code") + v.text_violations(message, "error_message")
    if len(code) > v.MAX_ID_CHARS:
        violations.append(FieldViolation("error_code", f"at most {v.MAX_ID_CHARS} characters"))
    if len(message) > MAX_ERROR_MESSAGE_CHARS:
        violations.append(
            FieldViolation("error_message", f"at most {MAX_ERROR_MESSAGE_CHARS} characters")
        )
    return violations


def attempt_violations(job_id: str, worker_id: str, attempt: int) -> list[FieldViolation]:
    """Violations in a worker's (job, worker, attempt) triple."""
    violations = v.uuid_violations(job_id, "job_id") + v.id_violations(worker_id, "worker_id")
    if attempt <= 0:
        violations.append(FieldViolation("attempt", "must be the positive attempt number"))
    return violations


class Lifecycle:
    """Every job transition, as compare-and-set SQL."""

    def __init__(self, engine: AsyncEngine, names: StreamNames, policy: Policy) -> None:
        self.engine = engine
        self.names = names
        self.policy = policy

    async def _refused(
        self, conn: AsyncConnection, rule: Transition, job_id: uuid.UUID, owner: str = ""
    ) -> InvalidTransition:
        """The error for a refused transition: NOT_FOUND when the job is not there (or not
        the owner's), else INVALID_TRANSITION naming the job's state."""
        row = check_owner(await store.get_job(conn, job_id), owner, "job", str(job_id))
        status = getattr(row["status"], "value", row["status"])
        return InvalidTransition(
            f"job {job_id} is {status} (attempt {row['attempt']}); {rule.name} is not allowed",
            metadata={"status": status, "attempt": str(row["attempt"])},
        )

    async def _commit(
        self, conn: AsyncConnection, rule: Transition, row: RowMapping, refund_reason: str = ""
    ) -> job_pb2.Job:
        """Write the refund (if the rule refunds) and the event of a committed CAS."""
        if refund_reason:
            await store.refund(conn, [refund_for(row, refund_reason)])
        await store.insert_outbox(conn, [event_row(self.names, row, rule.event)])
        return convert.job_to_proto(row)

    async def start(self, request: pb.StartJobRequest) -> pb.StartJobResponse:
        """QUEUED → PROCESSING, or take over an attempt whose lease expired. An expired
        attempt that had been asked to cancel, or that used the last attempt, is finished
        instead (CANCELLED or FAILED, refunded) and returned so the worker drops it."""
        v.require_valid(
            v.uuid_violations(request.job_id, "job_id")
            + v.id_violations(request.worker_id, "worker_id")
        )
        job_id = uuid.UUID(request.job_id)
        params = {
            "worker_id": request.worker_id,
            "lease": self.policy.lease_timeout,
            "max_attempts": self.policy.max_attempts,
        }
        async with self.engine.begin() as conn:
            job = await self._start_or_take_over(conn, job_id, params)
            if job is None:
                job = await self._finish_expired(conn, job_id, params)
            if job is None:
                raise await self._refused(conn, START, job_id)
        response = pb.StartJobResponse(job=job)
        if job.status == job_pb2.JOB_STATUS_PROCESSING:
            expires = job.heartbeat_at.ToDatetime(dt.UTC)
            response.lease_expires_at.FromDatetime(
                expires + dt.timedelta(seconds=self.policy.lease_timeout)
            )
        return response

    async def _start_or_take_over(
        self, conn: AsyncConnection, job_id: uuid.UUID, params: dict[str, Any]
    ) -> job_pb2.Job | None:
        row = await store.transition(conn, START, job_id, sets=NEW_ATTEMPT, params=params)
        if row is not None:
            return await self._commit(conn, START, row)
        row = await store.transition(
            conn,
            TAKEOVER,
            job_id,
            sets=NEW_ATTEMPT,
            where=f"AND NOT cancel_requested AND attempt < :max_attempts AND {LEASE_EXPIRED}",
            params=params,
        )
        return None if row is None else await self._commit(conn, TAKEOVER, row)

    async def _finish_expired(
        self, conn: AsyncConnection, job_id: uuid.UUID, params: dict[str, Any]
    ) -> job_pb2.Job | None:
        lease = {"lease": params["lease"]}
        row = await store.transition(
            conn,
            CANCEL_ACK,
            job_id,
            sets=FINISH,
            where=f"AND cancel_requested AND {LEASE_EXPIRED}",
            params=lease,
        )
        if row is not None:
            return await self._commit(conn, CANCEL_ACK, row, "cancelled")
        row = await store.transition(
            conn,
            FAIL,
            job_id,
            sets=f"{FINISH}, error_code = :code, error_message = :message",
            where=f"AND status = 'PROCESSING' AND attempt >= :max_attempts AND {LEASE_EXPIRED}",
            params={
                **lease,
                "max_attempts": params["max_attempts"],
                "code": ATTEMPTS_EXHAUSTED,
                "message": f"gave up after {params['max_attempts']} attempt(s)",
            },
        )
        return None if row is None else await self._commit(conn, FAIL, row, "attempts exhausted")

    async def heartbeat(self, request: pb.HeartbeatRequest) -> pb.HeartbeatResponse:
        """Extend the lease of the current attempt; lease_lost when it is not current."""
        v.require_valid(attempt_violations(request.job_id, request.worker_id, request.attempt))
        job_id = uuid.UUID(request.job_id)
        async with self.engine.begin() as conn:
            row = await store.heartbeat(conn, job_id, request.worker_id, request.attempt)
            if row is None:
                check_owner(await store.get_job(conn, job_id), "", "job", request.job_id)
                return pb.HeartbeatResponse(lease_lost=True)
        response = pb.HeartbeatResponse(cancel_requested=row["cancel_requested"])
        response.lease_expires_at.FromDatetime(
            row["heartbeat_at"] + dt.timedelta(seconds=self.policy.lease_timeout)
        )
        return response

    async def complete(self, request: pb.CompleteJobRequest) -> job_pb2.Job:
        """PROCESSING → COMPLETED for the worker holding the current attempt."""
        violations = attempt_violations(request.job_id, request.worker_id, request.attempt)
        if not request.HasField("test_result"):
            violations.append(FieldViolation("test_result", "required"))
        profile = convert.to_json(request.test_result)
        if v.JSON_NUL in profile:  # cheap test first; the walk names the fields
            violations += v.message_text_violations(request.test_result, "test_result")
        v.require_valid(violations)
        job_id = uuid.UUID(request.job_id)
        async with self.engine.begin() as conn:
            row = await store.transition(
                conn,
                COMPLETE,
                job_id,
                sets=f"{FINISH}, processing_time_ms ="
                " CAST(extract(epoch FROM now() - started_at) * 1000 AS bigint)",
                where=f"AND {HOLDER} AND result_id IS NOT NULL",
                params={"worker_id": request.worker_id, "attempt": request.attempt},
            )
            if row is None:
                raise await self._refused(conn, COMPLETE, job_id)
            await store.set_test_result(conn, row["result_id"], profile)
            return await self._commit(conn, COMPLETE, row)

    async def fail(self, request: pb.FailJobRequest) -> job_pb2.Job:
        """→ FAILED with a refund: by the worker holding the attempt, or without a worker
        for a QUEUED job or one whose lease expired (JetStream gave up on its message)."""
        violations = v.uuid_violations(request.job_id, "job_id")
        if request.worker_id:
            violations = attempt_violations(request.job_id, request.worker_id, request.attempt)
        if not request.error_code:
            violations.append(FieldViolation("error_code", "required"))
        violations += error_text_violations(request.error_code, request.error_message)
        v.require_valid(violations)
        job_id = uuid.UUID(request.job_id)
        params: dict[str, Any] = {
            "code": request.error_code,
            "message": request.error_message,
            "worker_id": request.worker_id,
            "attempt": request.attempt,
            "lease": self.policy.lease_timeout,
        }
        holder = f"AND status = 'PROCESSING' AND {HOLDER}"
        unheld = f"AND (status = 'QUEUED' OR {LEASE_EXPIRED})"
        async with self.engine.begin() as conn:
            row = await store.transition(
                conn,
                FAIL,
                job_id,
                sets=f"{FINISH}, error_code = :code, error_message = :message",
                where=holder if request.worker_id else unheld,
                params=params,
            )
            if row is None:
                raise await self._refused(conn, FAIL, job_id)
            return await self._commit(conn, FAIL, row, f"failed: {request.error_code}")

    async def cancel(self, request: pb.CancelJobRequest) -> job_pb2.Job:
        """QUEUED → CANCELLED; on PROCESSING, mark cancel_requested. With worker_id, the
        worker's report that it stopped: PROCESSING → CANCELLED."""
        if request.worker_id:
            return await self._acknowledge_cancel(request)
        v.require_valid(
            v.uuid_violations(request.job_id, "job_id") + owner_violations(request.user_id)
        )
        job_id = uuid.UUID(request.job_id)
        owner = {"owner": request.user_id}
        mine = "AND (:owner = '' OR user_id = :owner)"
        async with self.engine.begin() as conn:
            row = await store.transition(
                conn, CANCEL, job_id, sets=FINISH, where=mine, params=owner
            )
            if row is not None:
                return await self._commit(conn, CANCEL, row, "cancelled")
            row = await store.request_cancel(conn, job_id)
            if row is not None and (not request.user_id or row["user_id"] == request.user_id):
                return convert.job_to_proto(row)
            raise await self._refused(conn, CANCEL, job_id, request.user_id)

    async def _acknowledge_cancel(self, request: pb.CancelJobRequest) -> job_pb2.Job:
        v.require_valid(attempt_violations(request.job_id, request.worker_id, request.attempt))
        job_id = uuid.UUID(request.job_id)
        async with self.engine.begin() as conn:
            row = await store.transition(
                conn,
                CANCEL_ACK,
                job_id,
                sets=FINISH,
                where=f"AND cancel_requested AND {HOLDER}",
                params={"worker_id": request.worker_id, "attempt": request.attempt},
            )
            if row is None:
                raise await self._refused(conn, CANCEL_ACK, job_id)
            return await self._commit(conn, CANCEL_ACK, row, "cancelled")

    async def retry(self, request: pb.RetryJobRequest) -> pb.RetryJobResponse:
        """FAILED → QUEUED, charging again and re-queueing the analysis."""
        v.require_valid(owner_violations(request.user_id))
        job_id = parse_uuid(request.job_id, "job_id")
        cost = self.policy.token_cost
        async with self.engine.begin() as conn:
            row = await store.transition(
                conn,
                RETRY,
                job_id,
                sets="attempt = 0, worker_id = NULL, error_code = NULL, error_message = NULL,"
                " cancel_requested = false, started_at = NULL, heartbeat_at = NULL,"
                " finished_at = NULL, processing_time_ms = NULL, requeues = 0,"
                " charge_count = charge_count + 1, token_cost = :cost",
                where="AND (:owner = '' OR user_id = :owner)",
                params={"cost": cost, "owner": request.user_id},
            )
            if row is None:
                raise await self._refused(conn, RETRY, job_id, request.user_id)
            balance = await store.debit(
                conn, row["user_id"], cost, job_id, charge_no=row["charge_count"]
            )
            if balance is None:
                raise InsufficientTokens(f"a retry costs {cost} token(s); not enough left")
            await check_inflight(conn, row["user_id"], request.max_inflight)
            data, raw = await self._submission_of(conn, row)
            await store.insert_outbox(
                conn,
                [queue_row(self.names, row, data, raw), event_row(self.names, row, RETRY.event)],
            )
        return pb.RetryJobResponse(job=convert.job_to_proto(row), tokens_remaining=balance)

    async def _submission_of(
        self, conn: AsyncConnection, row: RowMapping
    ) -> tuple[assessment_pb2.AssessmentData, assessment_pb2.RawResponses]:
        data, raw = assessment_pb2.AssessmentData(), assessment_pb2.RawResponses()
        if row["result_id"] is not None:
            result = await store.get_result(conn, row["result_id"])
            if result is not None:
                stored = convert.result_to_proto(result)
                data, raw = stored.test_data, stored.raw_responses
        return data, raw
