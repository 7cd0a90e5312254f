"""Submissions, reads and tokens: the archive's rules outside the job lifecycle."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import asyncpg

from archive_svc import convert, db, store
from archive_svc.events import queue_message
from archive_svc.paging import PageTokens, page_limit
from assay.archive.v1 import archive_service_pb2 as pb
from assay.common.v1 import job_pb2
from assaylib import jobs
from assaylib import validation as v
from assaylib.errors import (
    AlreadyExists,
    AssayError,
    FieldViolation,
    InsufficientTokens,
    InvalidArgument,
    InvalidTransition,
    NotFound,
    RateLimited,
)


@dataclass(frozen=True)
class Policy:
    """The archive's knobs, from Settings."""

    token_cost: int = 1
    lease_timeout: float = 30.0
    max_attempts: int = 3


def parse_uuid(value: str, field: str) -> uuid.UUID:
    """value as a UUID, or INVALID_ARGUMENT naming field."""
    v.require_valid(v.uuid_violations(value, field))
    return uuid.UUID(value)


def owner_violations(owner: str) -> list[FieldViolation]:
    """Violations of an optional owner filter (``user_id``; empty means any owner)."""
    return v.id_violations(owner, "user_id", required=False)


def check_owner(row: asyncpg.Record | None, owner: str, what: str, ident: str) -> asyncpg.Record:
    """The row if it exists and belongs to owner (any owner when empty); else NOT_FOUND."""
    if row is None or (owner and row["user_id"] != owner):
        raise NotFound(f"{what} {ident} not found")
    return row


def refused(operation: str, job: asyncpg.Record, owner: str = "") -> AssayError:
    """The error for a refused operation: NOT_FOUND when the job is not the owner's (its
    existence is not revealed), else INVALID_TRANSITION naming the job's state."""
    if owner and job["user_id"] != owner:
        return NotFound(f"job {job['job_id']} not found")
    status = str(job["status"])
    return InvalidTransition(
        f"job {job['job_id']} is {status} (attempt {job['attempt']}); {operation} is not allowed",
        metadata={"status": status, "attempt": str(job["attempt"])},
    )


MAX_BATCH = 1000
"""Items one batch RPC may carry."""


def fill_item_error(item: pb.ItemError, error: AssayError) -> None:
    """A batch item's error, as the single RPC would have ended."""
    item.code = error.code.value[0]
    item.message = error.message
    item.reason = error.reason
    item.metadata.update(error.metadata)


class Records:
    """Submissions, reads, results and tokens."""

    def __init__(self, pool: asyncpg.Pool, policy: Policy, pages: PageTokens) -> None:
        self.pool = pool
        self.policy = policy
        self.pages = pages

    def _submission(self, request: pb.CreateSubmissionRequest) -> store.Submission:
        """Validate a submission (INVALID_ARGUMENT) and prepare what the archive writes."""
        v.require_valid(
            v.id_violations(request.user_id, "user_id")
            + v.id_violations(request.request_id, "request_id", required=False)
            + v.submission_violations(
                request.assessment_name,
                request.assessment_data,
                request.raw_responses,
                request.ByteSize(),
            )
        )
        name = request.assessment_name or jobs.DEFAULT_ASSESSMENT
        job_id, result_id = uuid.uuid4(), uuid.uuid4()
        job = {
            "job_id": job_id,
            "user_id": request.user_id,
            "result_id": result_id,
            "assessment_name": name,
        }
        return store.Submission(
            user_id=request.user_id,
            job_id=job_id,
            result_id=result_id,
            assessment_name=name,
            cost=self.policy.token_cost,
            request_id=request.request_id or None,
            payload_hash=convert.submission_hash(
                name, request.assessment_data, request.raw_responses
            ),
            max_inflight=request.max_inflight,
            test_data=convert.to_json(request.assessment_data),
            raw_responses=convert.to_json(request.raw_responses),
            queue_payload=queue_message(job, request.assessment_data, request.raw_responses, 1),
        )

    async def create_submission(
        self, request: pb.CreateSubmissionRequest
    ) -> pb.CreateSubmissionResponse:
        """Debit, insert the job, its result row and its two outbox messages, atomically."""
        submission = self._submission(request)
        row = await db.retrying(lambda: store.create_submission(self.pool, submission))
        return self._submitted(request, row)

    async def create_submissions(
        self, request: pb.CreateSubmissionsRequest
    ) -> pb.CreateSubmissionsResponse:
        """CreateSubmission for a batch in one statement; an outcome per submission."""
        if len(request.submissions) > MAX_BATCH:
            raise InvalidArgument([FieldViolation("submissions", f"at most {MAX_BATCH}")])
        outcomes: dict[int, pb.CreateSubmissionResponse | AssayError] = {}
        prepared: dict[int, store.Submission] = {}
        for n, item in enumerate(request.submissions):
            try:
                prepared[n] = self._submission(item)
            except AssayError as err:
                outcomes[n] = err
        order = sorted(prepared, key=lambda n: prepared[n].user_id)  # accounts lock in order
        if order:
            batch = [prepared[n] for n in order]
            rows = await db.retrying(lambda: store.create_submissions(self.pool, batch))
            for n, row in zip(order, rows, strict=True):
                try:
                    outcomes[n] = self._submitted(request.submissions[n], row)
                except AssayError as err:
                    outcomes[n] = err
        response = pb.CreateSubmissionsResponse()
        for n in range(len(request.submissions)):
            slot = response.outcomes.add()
            outcome = outcomes[n]
            if isinstance(outcome, AssayError):
                fill_item_error(slot.error, outcome)
            else:
                slot.created.CopyFrom(outcome)
        return response

    def _submitted(
        self, request: pb.CreateSubmissionRequest, row: asyncpg.Record
    ) -> pb.CreateSubmissionResponse:
        outcome, cost = row["outcome"], self.policy.token_cost
        if outcome == "created":
            job = convert.job_to_proto(row)
            return pb.CreateSubmissionResponse(job=job, tokens_remaining=row["balance"])
        if outcome == "insufficient":
            raise InsufficientTokens(
                f"an analysis costs {cost} token(s); {request.user_id} has {row['balance']}",
                metadata={"balance": str(row["balance"]), "cost": str(cost)},
            )
        if outcome == "rate_limited":
            raise RateLimited(
                f"{request.user_id} already has {request.max_inflight} job(s) in flight;"
                " wait for one to finish",
                metadata={"max_inflight": str(request.max_inflight)},
            )
        if outcome == "reused":
            raise AlreadyExists(
                f"request_id {request.request_id!r} was already used with a different payload",
                reason="REQUEST_ID_REUSED",
            )
        return replay(row)

    async def get_job(self, job_id: str, owner: str) -> job_pb2.Job:
        """One job, scoped to owner when given."""
        v.require_valid(owner_violations(owner))
        ident = parse_uuid(job_id, "job_id")
        row = await store.get_job(self.pool, ident)
        return convert.job_to_proto(check_owner(row, owner, "job", job_id))

    async def list_jobs(self, request: pb.ListJobsRequest) -> pb.ListJobsResponse:
        """A page of jobs, newest first."""
        limit = page_limit(request.page_size)
        v.require_valid(v.id_violations(request.user_id, "user_id", required=False))
        status = convert.PROTO_TO_STATUS.get(request.status)
        if request.status and status is None:
            raise InvalidArgument([FieldViolation("status", "unknown status")])
        scope = f"jobs\0{request.user_id}\0{status}"
        after = self.pages.decode(request.page_token, scope, (dt.datetime, uuid.UUID))
        rows = await store.jobs_page(self.pool, request.user_id, status, after, limit + 1)
        page, token = self.pages.page(rows, limit, scope, lambda r: (r["created_at"], r["job_id"]))
        return pb.ListJobsResponse(
            jobs=[convert.job_to_proto(r) for r in page], next_page_token=token
        )

    async def get_result(self, result_id: str, owner: str) -> job_pb2.AnalysisResult:
        """One result row, scoped to owner when given."""
        v.require_valid(owner_violations(owner))
        ident = parse_uuid(result_id, "result_id")
        row = await store.get_result(self.pool, ident)
        return convert.result_to_proto(check_owner(row, owner, "result", result_id))

    async def list_results(self, request: pb.ListResultsRequest) -> pb.ListResultsResponse:
        """A page of result rows, newest first."""
        limit = page_limit(request.page_size)
        v.require_valid(v.id_violations(request.user_id, "user_id", required=False))
        scope = f"results\0{request.user_id}"
        after = self.pages.decode(request.page_token, scope, (dt.datetime, uuid.UUID))
        rows = await store.results_page(self.pool, request.user_id, after, limit + 1)
        page, token = self.pages.page(
            rows, limit, scope, lambda r: (r["created_at"], r["result_id"])
        )
        return pb.ListResultsResponse(
            results=[convert.result_to_proto(r) for r in page], next_page_token=token
        )

    async def update_result(self, request: pb.UpdateResultRequest) -> job_pb2.AnalysisResult:
        """Update the masked fields of a result row."""
        ident = parse_uuid(request.result.result_id, "result.result_id")
        columns = result_columns(request)
        row = await store.update_result(self.pool, ident, columns)
        return convert.result_to_proto(check_owner(row, "", "result", str(ident)))

    async def create_result(self, request: pb.CreateResultRequest) -> job_pb2.AnalysisResult:
        """Create and link the result row of a job that has none (idempotent)."""
        v.require_valid(
            v.raw_responses_violations(request.raw_responses)
            + v.assessment_data_violations(request.test_data, jobs.CUSTOM)
        )
        job_id = parse_uuid(request.job_id, "job_id")
        created = await store.create_legacy_result(
            self.pool,
            job_id,
            uuid.uuid4(),
            convert.to_json(request.test_data),
            convert.to_json(request.raw_responses),
        )
        if created is not None:
            return convert.result_to_proto(created)
        job = check_owner(await store.get_job(self.pool, job_id), "", "job", request.job_id)
        existing = await store.get_result(self.pool, job["result_id"])
        return convert.result_to_proto(check_owner(existing, "", "result", str(job["result_id"])))

    async def balance(self, user_id: str) -> int:
        """A user's balance."""
        v.require_valid(v.id_violations(user_id, "user_id"))
        return await store.balance_of(self.pool, user_id)

    async def grant(self, request: pb.GrantTokensRequest) -> pb.GrantTokensResponse:
        """Credit a user's balance."""
        violations = v.id_violations(request.user_id, "user_id")
        violations += v.text_violations(request.reason, "reason")
        if request.amount <= 0:
            violations.append(FieldViolation("amount", "must be a positive number of tokens"))
        v.require_valid(violations)
        row = await store.grant(self.pool, request.user_id, request.amount, request.reason)
        return pb.GrantTokensResponse(
            balance=row["balance"], entry=convert.ledger_entry_to_proto(row)
        )

    async def ledger(self, request: pb.ListLedgerEntriesRequest) -> pb.ListLedgerEntriesResponse:
        """A page of ledger entries, newest first."""
        limit = page_limit(request.page_size)
        v.require_valid(v.id_violations(request.user_id, "user_id", required=False))
        job_id = parse_uuid(request.job_id, "job_id") if request.job_id else None
        scope = f"ledger\0{request.user_id}\0{job_id or ''}"
        after = self.pages.decode(request.page_token, scope, (int,))
        before = after[0] if after else None
        rows = await store.ledger_page(self.pool, request.user_id, job_id, before, limit + 1)
        page, token = self.pages.page(rows, limit, scope, lambda r: (r["entry_id"],))
        return pb.ListLedgerEntriesResponse(
            entries=[convert.ledger_entry_to_proto(r) for r in page], next_page_token=token
        )


def replay(row: asyncpg.Record) -> pb.CreateSubmissionResponse:
    """The first reply to a submission, for a repeat of its request: stored (keys older than
    migration 0003), or rebuilt from the job as it was created."""
    if row["first_response"] is not None:
        reply = pb.CreateSubmissionResponse.FromString(row["first_response"])
    else:
        first = convert.job_to_proto(row)
        first.status = job_pb2.JOB_STATUS_QUEUED
        first.token_cost = row["first_cost"]
        first.charge_count, first.version, first.attempt, first.requeues = 1, 1, 0, 0
        for name in FIRST_REPLY_UNSET:
            first.ClearField(name)  # type: ignore[arg-type]
        first.updated_at.CopyFrom(first.created_at)
        reply = pb.CreateSubmissionResponse(job=first, tokens_remaining=row["balance"])
    reply.replayed = True
    return reply


FIRST_REPLY_UNSET = (
    "worker_id",
    "error_code",
    "error_message",
    "processing_time_ms",
    "cancel_requested",
    "started_at",
    "heartbeat_at",
    "finished_at",
)


RESULT_MASK_PATHS: dict[str, Callable[[job_pb2.AnalysisResult], str]] = {
    "test_data": lambda r: convert.to_json(r.test_data),
    "raw_responses": lambda r: convert.to_json(r.raw_responses),
    "test_result": lambda r: convert.to_json(r.test_result),
    "assessment_name": lambda r: r.assessment_name,
}


def result_columns(request: pb.UpdateResultRequest) -> dict[str, Any]:
    """The columns an UpdateResult field mask names, with their new values."""
    paths = list(request.update_mask.paths)
    bad = [p for p in paths if p not in RESULT_MASK_PATHS]
    violations = [FieldViolation("update_mask", f"cannot update {p!r}") for p in bad]
    if not paths:
        violations.append(FieldViolation("update_mask", "name at least one field"))
    if "assessment_name" in paths:
        violations += v.assessment_name_violations(request.result.assessment_name)
    if "raw_responses" in paths:
        violations += v.raw_responses_violations(
            request.result.raw_responses, "result.raw_responses"
        )
    if "test_data" in paths:
        violations += v.assessment_data_violations(
            request.result.test_data, jobs.CUSTOM, "result.test_data"
        )
    if "test_result" in paths:
        violations += v.message_text_violations(request.result.test_result, "result.test_result")
    v.require_valid(violations)
    return {p: RESULT_MASK_PATHS[p](request.result) for p in paths}
