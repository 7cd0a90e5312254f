"""The job lifecycle: each RPC is an operation of the state table, applied to one job or a
batch in one statement (``store.transitions``). This module validates requests, names the
operations and turns outcomes into replies and refusals."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from archive_svc import convert, db, metrics, profiles, store
from archive_svc.checks import MAX_BATCH, Policy, fill_item_error, owner_violations, refused
from archive_svc.states import (
    CANCEL,
    CANCEL_ACK,
    CANCEL_EXPIRED,
    COMPLETE,
    EXHAUSTED,
    FAIL,
    FAIL_UNHELD,
    HEARTBEAT,
    REQUEST_CANCEL,
    START,
    TAKEOVER,
)
from archive_svc.store.transitions import Applied, Operation, Rule
from assay.archive.v1 import archive_service_pb2 as pb
from assay.common.v1 import job_pb2
from assaylib import validation as v
from assaylib.errors import (
    AssayError,
    FieldViolation,
    InsufficientTokens,
    InvalidArgument,
    InvalidTransition,
    NotFound,
    RateLimited,
)

MAX_ERROR_MESSAGE_CHARS = 4000

WORKER = (("worker_id", "text"), ("attempt", "int4"))
START_OP = Operation(
    "start",
    (Rule(START), Rule(TAKEOVER), Rule(CANCEL_EXPIRED), Rule(EXHAUSTED)),
    (("job_id", "uuid"), ("worker_id", "text"), ("lease", "float8"), ("max_attempts", "int4")),
)
HEARTBEAT_OP = Operation("heartbeat", (Rule(HEARTBEAT),), (("job_id", "uuid"), *WORKER))
REPORT_OP = Operation(
    "report",
    (
        Rule(COMPLETE, "i.report = 'complete'"),
        Rule(FAIL, "i.report = 'fail'"),
        Rule(FAIL_UNHELD, "i.report = 'fail_unheld'"),
        Rule(CANCEL_ACK, "i.report = 'cancelled'"),
    ),
    (
        ("job_id", "uuid"),
        ("report", "text"),
        *WORKER,
        ("test_result", "bytea"),
        ("error_code", "text"),
        ("error_message", "text"),
        ("lease", "float8"),
    ),
    writes_result=True,
)
CANCEL_OP = Operation(
    "cancel", (Rule(CANCEL), Rule(REQUEST_CANCEL)), (("job_id", "uuid"), ("owner", "text"))
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


def report_of(report: pb.JobReport) -> pb.CompleteJobRequest | pb.FailJobRequest | Any:
    """The request inside a JobReport."""
    kind = report.WhichOneof("report")
    if kind is None:
        raise InvalidArgument([FieldViolation("report", "complete, fail or cancelled")])
    return getattr(report, kind)


@dataclass(frozen=True)
class Outcome:
    """One job's outcome in a batch: the job row, or the error."""

    job: asyncpg.Record | None = None
    error: AssayError | None = None

    def unwrap(self) -> asyncpg.Record:
        """The job, or raise the error."""
        if self.error is not None:
            raise self.error
        assert self.job is not None
        return self.job


class Lifecycle:
    """Every job transition, as one statement per call (one per batch)."""

    def __init__(self, pool: asyncpg.Pool, policy: Policy) -> None:
        self.pool = pool
        self.policy = policy

    async def _apply(
        self, operation: Operation, requests: Sequence[dict[str, Any] | AssayError]
    ) -> list[Outcome]:
        """Apply an operation to the valid requests of a batch in one statement; an invalid
        request keeps its error, in place."""
        valid = {n: r for n, r in enumerate(requests) if not isinstance(r, AssayError)}
        if not store.unique_jobs([str(r["job_id"]) for r in valid.values()]):
            raise InvalidArgument([FieldViolation("job_id", "a batch names each job once")])
        applied: dict[int, Applied] = {}
        if valid:
            positions = list(valid)
            rows = list(valid.values())
            done = await db.retrying(lambda: store.apply(self.pool, operation, rows))
            applied = {positions[a.position - 1]: a for a in done}
        outcomes = []
        for n, request in enumerate(requests):
            if isinstance(request, AssayError):
                outcomes.append(Outcome(error=request))
                continue
            found = applied.get(n)
            if found is None:
                outcomes.append(Outcome(error=NotFound(f"job {request['job_id']} not found")))
            elif found.rule is None:
                error = refused(operation.name, found.job, request.get("owner", ""))
                outcomes.append(Outcome(job=found.job, error=error))
            else:
                metrics.count_transition(found.rule, found.previous_status, found.job)
                outcomes.append(Outcome(job=found.job))
        return outcomes

    # ---- start ---------------------------------------------------------------------------

    def _start_request(self, request: pb.StartJobRequest) -> dict[str, Any] | AssayError:
        violations = v.uuid_violations(request.job_id, "job_id") + v.id_violations(
            request.worker_id, "worker_id"
        )
        if violations:
            return InvalidArgument(violations)
        return {
            "job_id": uuid.UUID(request.job_id),
            "worker_id": request.worker_id,
            "lease": self.policy.lease_timeout,
            "max_attempts": self.policy.max_attempts,
        }

    def _started(self, job: asyncpg.Record) -> pb.StartJobResponse:
        response = pb.StartJobResponse(job=convert.job_to_proto(job))
        if job["status"] == "PROCESSING":
            expires = job["heartbeat_at"] + dt.timedelta(seconds=self.policy.lease_timeout)
            response.lease_expires_at.CopyFrom(convert.stamp(expires))
        return response

    async def start(self, request: pb.StartJobRequest) -> pb.StartJobResponse:
        """QUEUED → PROCESSING, or take over an attempt whose lease expired. An expired
        attempt that had been asked to cancel, or that used the last attempt, is finished
        instead (CANCELLED or FAILED, refunded) and returned so the worker drops it."""
        (outcome,) = await self._apply(START_OP, [self._start_request(request)])
        return self._started(outcome.unwrap())

    async def start_many(self, request: pb.StartJobsRequest) -> pb.StartJobsResponse:
        """StartJob for a batch, in one statement; an outcome per start."""
        _check_batch(len(request.starts), "starts")
        outcomes = await self._apply(START_OP, [self._start_request(s) for s in request.starts])
        response = pb.StartJobsResponse()
        for outcome in outcomes:
            item = response.outcomes.add()
            if outcome.error is not None:
                fill_item_error(item.error, outcome.error)
            else:
                assert outcome.job is not None
                item.started.CopyFrom(self._started(outcome.job))
        return response

    # ---- heartbeat -----------------------------------------------------------------------

    def _heartbeat_request(self, request: pb.HeartbeatRequest) -> dict[str, Any] | AssayError:
        violations = attempt_violations(request.job_id, request.worker_id, request.attempt)
        if violations:
            return InvalidArgument(violations)
        return {
            "job_id": uuid.UUID(request.job_id),
            "worker_id": request.worker_id,
            "attempt": request.attempt,
        }

    def _beat(self, outcome: Outcome) -> pb.HeartbeatResponse:
        if outcome.error is not None or outcome.job is None:
            return pb.HeartbeatResponse(lease_lost=True)
        job = outcome.job
        response = pb.HeartbeatResponse(cancel_requested=job["cancel_requested"])
        expires = job["heartbeat_at"] + dt.timedelta(seconds=self.policy.lease_timeout)
        response.lease_expires_at.CopyFrom(convert.stamp(expires))
        return response

    async def heartbeat(self, request: pb.HeartbeatRequest) -> pb.HeartbeatResponse:
        """Extend the lease of the current attempt; lease_lost when it is not current."""
        (outcome,) = await self._apply(HEARTBEAT_OP, [self._heartbeat_request(request)])
        if isinstance(outcome.error, NotFound | InvalidArgument):
            raise outcome.error
        return self._beat(outcome)

    async def heartbeat_many(self, request: pb.HeartbeatsRequest) -> pb.HeartbeatsResponse:
        """Heartbeat for a batch; an unknown or superseded attempt is lease_lost."""
        _check_batch(len(request.heartbeats), "heartbeats")
        outcomes = await self._apply(
            HEARTBEAT_OP, [self._heartbeat_request(h) for h in request.heartbeats]
        )
        return pb.HeartbeatsResponse(replies=[self._beat(o) for o in outcomes])

    # ---- reports: complete, fail, a worker's cancel --------------------------------------

    def _report_request(self, report: Any) -> dict[str, Any] | AssayError:
        try:
            return self._report_values(report)
        except InvalidArgument as err:
            return err

    def _report_values(self, report: Any) -> dict[str, Any]:
        values: dict[str, Any] = {
            "test_result": None,
            "error_code": None,
            "error_message": None,
            "lease": self.policy.lease_timeout,
            "worker_id": report.worker_id,
            "attempt": report.attempt,
        }
        if isinstance(report, pb.CompleteJobRequest):
            profile = self.policy.data_keys.seal_profile(self._profile(report), report.job_id)
            values.update(report="complete", test_result=profile)
        elif isinstance(report, pb.FailJobRequest):
            self._check_failure(report)
            values.update(
                report="fail" if report.worker_id else "fail_unheld",
                error_code=report.error_code,
                error_message=report.error_message,
            )
            if not report.worker_id:
                values.update(worker_id="", attempt=0)
        else:
            v.require_valid(attempt_violations(report.job_id, report.worker_id, report.attempt))
            values["report"] = "cancelled"
        values["job_id"] = uuid.UUID(report.job_id)
        return values

    @staticmethod
    def _profile(report: pb.CompleteJobRequest) -> bytes:
        """The report's profile as stored, before sealing (``archive_svc.profiles``)."""
        violations = attempt_violations(report.job_id, report.worker_id, report.attempt)
        if not report.HasField("test_result"):
            violations.append(FieldViolation("test_result", "required"))
        serialized = report.test_result.SerializeToString()
        if b"\0" in serialized:  # only NUL or an empty entry writes a 0 byte; the walk tells
            violations += v.message_text_violations(report.test_result, "test_result")
        v.require_valid(violations)
        return profiles.compress(serialized, report.test_result.analyzer.locale)

    @staticmethod
    def _check_failure(report: pb.FailJobRequest) -> None:
        violations = v.uuid_violations(report.job_id, "job_id")
        if report.worker_id:
            violations = attempt_violations(report.job_id, report.worker_id, report.attempt)
        if not report.error_code:
            violations.append(FieldViolation("error_code", "required"))
        violations += error_text_violations(report.error_code, report.error_message)
        v.require_valid(violations)

    async def report(self, report: Any) -> job_pb2.Job:
        """Apply one report (CompleteJob, FailJob, or a worker's CancelJob)."""
        (outcome,) = await self._apply(REPORT_OP, [self._report_request(report)])
        return convert.job_to_proto(outcome.unwrap())

    async def report_many(self, request: pb.ReportJobsRequest) -> pb.ReportJobsResponse:
        """Reports for a batch, in one statement; an outcome per report."""
        _check_batch(len(request.reports), "reports")
        requests: list[dict[str, Any] | AssayError] = []
        for report in request.reports:
            try:
                requests.append(self._report_request(report_of(report)))
            except InvalidArgument as err:
                requests.append(err)
        response = pb.ReportJobsResponse()
        for outcome in await self._apply(REPORT_OP, requests):
            item = response.outcomes.add()
            if outcome.error is not None:
                fill_item_error(item.error, outcome.error)
            else:
                assert outcome.job is not None
                item.job.CopyFrom(convert.job_to_proto(outcome.job))
        return response

    # ---- cancel and retry ----------------------------------------------------------------

    async def cancel(self, request: pb.CancelJobRequest) -> job_pb2.Job:
        """QUEUED → CANCELLED; on PROCESSING, mark cancel_requested. With worker_id, the
        worker's report that it stopped: PROCESSING → CANCELLED."""
        if request.worker_id:
            return await self.report(request)
        v.require_valid(
            v.uuid_violations(request.job_id, "job_id") + owner_violations(request.user_id)
        )
        requests: list[dict[str, Any] | AssayError] = [
            {"job_id": uuid.UUID(request.job_id), "owner": request.user_id}
        ]
        (outcome,) = await self._apply(CANCEL_OP, requests)
        return convert.job_to_proto(outcome.unwrap())

    async def retry(self, request: pb.RetryJobRequest) -> pb.RetryJobResponse:
        """FAILED → QUEUED, charging again and re-queueing the analysis."""
        v.require_valid(
            v.uuid_violations(request.job_id, "job_id") + owner_violations(request.user_id)
        )
        cost = self.policy.token_cost
        row = await db.retrying(
            lambda: store.retry_job(
                self.pool, uuid.UUID(request.job_id), request.user_id, cost, request.max_inflight
            )
        )
        outcome = row["outcome"]
        if outcome == "not_found":
            raise NotFound(f"job {request.job_id} not found")
        if outcome == "refused":
            raise refused("retry", row)
        if outcome == "erased":
            raise InvalidTransition(
                f"job {request.job_id} cannot be retried: its data was erased, nothing is left"
                " to analyse",
                metadata={"status": "FAILED", "attempt": str(row["attempt"]), "erased": "true"},
            )
        if outcome == "insufficient":
            raise InsufficientTokens(f"a retry costs {cost} token(s); not enough left")
        if outcome == "rate_limited":
            raise RateLimited(
                f"the owner already has {request.max_inflight} job(s) in flight; wait for one",
                metadata={"max_inflight": str(request.max_inflight)},
            )
        metrics.count_transition("retry", "FAILED", row)
        return pb.RetryJobResponse(job=convert.job_to_proto(row), tokens_remaining=row["balance"])


def _check_batch(size: int, field: str) -> None:
    if size > MAX_BATCH:
        raise InvalidArgument([FieldViolation(field, f"at most {MAX_BATCH} per call")])
