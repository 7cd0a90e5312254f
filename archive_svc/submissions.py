"""Submissions: the charge, the job, its result row and its queue message, written set-based
for a whole batch (migration 0015) — and the replay of a repeated request.

The queue message's outbox row has no payload: the relay builds the message from the job and
the result row's inputs, stored once as protobuf (``archive_svc.inputs``, migration 0012)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence

import asyncpg
from opentelemetry.trace import Span

from archive_svc import convert, db, inputs, metrics, store
from archive_svc.checks import MAX_BATCH, ArchivePart, fill_item_error
from assay.archive.v1 import archive_service_pb2 as pb
from assay.common.v1 import job_pb2
from assaylib import jobs, tracing
from assaylib import validation as v
from assaylib.errors import (
    AlreadyExists,
    AssayError,
    DeadlineExceeded,
    FieldViolation,
    InsufficientTokens,
    InvalidArgument,
    RateLimited,
)

SPAN = "archive.create_submission"  # one per submission, in the submitter's trace


class Submissions(ArchivePart):
    """CreateSubmission and CreateSubmissions."""

    def _submission(
        self, request: pb.CreateSubmissionRequest, trace_context: str
    ) -> store.Submission:
        """Validate a submission (INVALID_ARGUMENT) and prepare what the archive writes;
        ``trace_context`` is the traceparent the job keeps."""
        v.require_valid(
            v.id_violations(request.user_id, "user_id")
            + v.id_violations(request.request_id, "request_id", required=False)
            + v.submission_violations(
                request.assessment_name,
                request.assessment_data,
                request.raw_responses,
                request.ByteSize(),
            )
            + v.locale_violations(request.locale)
        )
        name = request.assessment_name or jobs.DEFAULT_ASSESSMENT
        locale = request.locale or self.policy.default_locale
        job_id, result_id = uuid.uuid4(), uuid.uuid4()
        keys = self.policy.data_keys
        return store.Submission(
            user_id=request.user_id,
            job_id=job_id,
            result_id=result_id,
            assessment_name=name,
            cost=self.policy.token_cost,
            request_id=request.request_id or None,
            payload_hash=convert.submission_hash(
                name, request.assessment_data, request.raw_responses, request.locale
            ),
            max_inflight=request.max_inflight,
            test_data=keys.seal_column(inputs.encode(request.assessment_data), "test_data", job_id),
            raw_responses=keys.seal_column(
                inputs.encode(request.raw_responses), "raw_responses", job_id
            ),
            trace_context=trace_context or None,
            locale=locale,
            deadline=request.deadline.ToDatetime(dt.UTC) if request.HasField("deadline") else None,
            tier=request.tier or None,
        )

    async def create_submission(
        self, request: pb.CreateSubmissionRequest
    ) -> pb.CreateSubmissionResponse:
        """Debit, insert the job, its result row and its two outbox messages, atomically."""
        (outcome,) = await self._create([request])
        if isinstance(outcome, AssayError):
            raise outcome
        return outcome

    async def create_submissions(
        self, request: pb.CreateSubmissionsRequest
    ) -> pb.CreateSubmissionsResponse:
        """CreateSubmission for a batch in one statement; an outcome per submission (or, with
        ``atomic``, all created or replayed, or the first error and nothing written)."""
        if len(request.submissions) > MAX_BATCH:
            raise InvalidArgument([FieldViolation("submissions", f"at most {MAX_BATCH}")])
        if request.atomic:
            return await self._create_atomic(request.submissions)
        response = pb.CreateSubmissionsResponse()
        for outcome in await self._create(request.submissions):
            slot = response.outcomes.add()
            if isinstance(outcome, AssayError):
                fill_item_error(slot.error, outcome)
            else:
                slot.created.CopyFrom(outcome)
        return response

    async def _create(
        self, items: Sequence[pb.CreateSubmissionRequest]
    ) -> list[pb.CreateSubmissionResponse | AssayError]:
        """The outcome of each submission, in order, all written in one transaction. One whose
        deadline had passed once the accounts were locked wrote nothing and ends with
        DEADLINE_EXCEEDED."""
        outcomes: dict[int, pb.CreateSubmissionResponse | AssayError] = {}
        prepared: dict[int, store.Submission] = {}
        spans: list[Span] = []
        for n, item in enumerate(items):
            span, trace_context = tracing.item_span(SPAN, __name__, item.traceparent)
            spans.append(span)
            try:
                prepared[n] = self._submission(item, trace_context)
            except AssayError as err:
                outcomes[n] = err
        # by code point, the order the statement locks the accounts in (and 0.1.0's archives)
        order = sorted(prepared, key=lambda n: prepared[n].user_id)
        try:
            if order:
                batch = [prepared[position] for position in order]
                rows = await db.retrying(
                    lambda: store.create_submissions(self.pool, batch, self._priorities)
                )
                for row in rows:
                    n = order[row["n"] - 1]
                    _describe(spans[n], row)
                    try:
                        outcomes[n] = self._submitted(items[n], row)
                    except AssayError as err:
                        outcomes[n] = err
        finally:
            for span in spans:
                span.end()
        return [outcomes[n] if n in outcomes else _too_late(items[n]) for n in range(len(items))]

    @property
    def _priorities(self) -> dict[str, int]:
        return {lane.tier: lane.priority for lane in self.policy.tiers.lanes}

    async def _create_atomic(
        self, items: Sequence[pb.CreateSubmissionRequest]
    ) -> pb.CreateSubmissionsResponse:
        """Every submission created or replayed in one transaction, or none: the first
        item's error (its position as metadata ``index``) rolls the whole batch back."""
        prepared: list[store.Submission] = []
        for n, item in enumerate(items):
            try:
                prepared.append(self._submission(item, item.traceparent))
            except AssayError as err:
                raise _at(err, n) from None
        order = sorted(range(len(prepared)), key=lambda n: prepared[n].user_id)
        batch = [prepared[n] for n in order]

        async def write() -> list[pb.CreateSubmissionResponse]:
            async with self.pool.acquire() as conn, conn.transaction():
                rows = await store.create_submissions(conn, batch, self._priorities)
                if len(rows) < len(batch):
                    raise _too_late(items[0])  # rolled back: nothing charged
                replies: dict[int, pb.CreateSubmissionResponse] = {}
                for row in rows:
                    n = order[row["n"] - 1]
                    try:
                        replies[n] = self._submitted(items[n], row)
                    except AssayError as err:
                        raise _at(err, n) from None
                return [replies[n] for n in range(len(items))]

        with tracing.span("archive.create_submissions", __name__) as span:
            span.set_attribute("assay.batch_size", len(items))
            replies = await db.retrying(write)
        _balances_after(items, replies)
        response = pb.CreateSubmissionsResponse()
        for reply in replies:
            response.outcomes.add().created.CopyFrom(reply)
        return response

    def _submitted(
        self, request: pb.CreateSubmissionRequest, row: asyncpg.Record
    ) -> pb.CreateSubmissionResponse:
        outcome, cost = row["outcome"], self.policy.token_cost
        if outcome == "created":
            metrics.count_transition("create", "NONE", row)
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


def _balances_after(
    items: Sequence[pb.CreateSubmissionRequest], replies: Sequence[pb.CreateSubmissionResponse]
) -> None:
    """Give each created item its user's balance after the whole batch (the last of that
    user's items, which run in request order, saw it)."""
    after = {items[n].user_id: r.tokens_remaining for n, r in enumerate(replies) if not r.replayed}
    for n, reply in enumerate(replies):
        if not reply.replayed:
            reply.tokens_remaining = after[items[n].user_id]


def _at(err: AssayError, n: int) -> AssayError:
    """A batch item's error as the whole call's: violations' paths and the metadata name
    the item's position."""
    if isinstance(err, InvalidArgument):
        return InvalidArgument(
            [
                FieldViolation(f"submissions[{n}].{fv.field}", fv.description)
                for fv in err.violations
            ]
        )
    err.metadata["index"] = str(n)
    return err


def _too_late(request: pb.CreateSubmissionRequest) -> DeadlineExceeded:
    metrics.SUBMISSIONS_TOO_LATE.inc()
    return DeadlineExceeded(
        "the caller's deadline passed before the submission was recorded; nothing was charged"
    )


def _describe(span: Span, row: asyncpg.Record) -> None:
    """Name the job and the outcome on a submission's span."""
    span.set_attribute("assay.outcome", row["outcome"])
    if row["job_id"] is not None:
        span.set_attribute("assay.job_id", str(row["job_id"]))


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
