"""The assessment service's rules: who may see and act on what, and what a valid request is.

Scoping (ARCHITECTURE §6). Every caller acts as the user in its token's ``sub``:

* a ``user`` sees and acts on its own jobs, results and balance only. Someone else's job or
  result is NOT_FOUND (its existence is not revealed); naming another user where a request
  has a ``user_id`` field is PERMISSION_DENIED.
* an ``operator`` sees and acts on every user's jobs, may name any user in ``ListJobs`` and
  ``GetTokenBalance``, and lists every user's jobs when it names none.
* a ``service`` (another Assay component) has the same reach as an operator: the archive
  already trusts service tokens fully, and ``Principal.can_act_for`` says the same.
* ``SubmitAssessment`` and ``SubmitAssessments`` submit for the caller itself, or — internal
  callers and operators only — for the ``user_id`` an item names, who is charged.
* A submission for the caller itself takes the tier its token names (``ASSAY_JWT_TIER_CLAIM``);
  one for another user, or without a tier claim, the tier an operator set for that user in
  the archive, else the default tier.

Every request is validated whole before the archive is called; a bad id is
INVALID_ARGUMENT naming the field, never INTERNAL.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import prometheus_client

from assay.archive.v1 import archive_service_pb2 as archive_pb
from assay.assessment.v1 import assessment_service_pb2 as pb
from assay.common.v1 import job_pb2
from assaylib import errors, jobs, tracing
from assaylib import validation as v
from assaylib.access import reader_name
from assaylib.auth import Principal
from assaylib.errors import FieldViolation
from assessment_svc.archive_client import ArchiveClient, Budget

__all__ = [
    "BATCHES",
    "BATCH_ITEMS",
    "MAX_BATCH",
    "SUBMISSIONS",
    "SUBMIT_SECONDS",
    "Assessments",
    "batch_violations",
    "list_owner",
    "owner_scope",
    "result_request_violations",
    "submit_request_violations",
]

log = logging.getLogger(__name__)

SUBMISSIONS = prometheus_client.Counter(
    "assay_assessment_submissions",
    "SubmitAssessment calls by outcome (accepted, replayed, refused) and reason.",
    ["outcome", "reason"],
)

SUBMIT_SECONDS = prometheus_client.Histogram(
    "assay_assessment_submit_duration_seconds",
    "Time SubmitAssessment took inside the service (validation, the archive's write), by outcome.",
    ["outcome"],
    buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)

BATCHES = prometheus_client.Counter(
    "assay_assessment_batches",
    "SubmitAssessments calls by outcome (accepted, replayed, refused).",
    ["outcome"],
)

BATCH_ITEMS = prometheus_client.Counter(
    "assay_assessment_batch_items",
    "Submissions accepted or replayed through SubmitAssessments, by outcome.",
    ["outcome"],
)

JOB_STATUSES = frozenset(job_pb2.JobStatus.values())

MAX_BATCH = 1000
"""Submissions one SubmitAssessments call may carry."""

_OUTCOMES: dict[str, tuple[Any, Any]] = {}
"""The metric children of "accepted" and "replayed", bound by the first such submission
(a ``labels()`` lookup per call cost more than the increment)."""


def _outcome_metrics(outcome: str) -> tuple[Any, Any]:
    bound = _OUTCOMES.get(outcome)
    if bound is None:
        bound = _OUTCOMES[outcome] = (
            SUBMISSIONS.labels(outcome, ""),
            SUBMIT_SECONDS.labels(outcome),
        )
    return bound


def owner_scope(principal: Principal) -> str:
    """The owner filter for the archive: the caller's id, or "" (anyone) for privileged roles."""
    return "" if principal.acts_for_anyone else principal.user_id


def list_owner(principal: Principal, requested: str) -> str:
    """Whose jobs or balance a request naming ``requested`` ("" for none) reads.

    A user may name only itself; a privileged caller may name anyone.
    """
    if requested and not principal.can_act_for(requested):
        raise errors.PermissionDenied("only operators may name another user")
    return requested


def submit_request_violations(request: pb.SubmitAssessmentRequest) -> list[FieldViolation]:
    """Every violation of a submission: payload (name, scores, raw answers, 1 MiB), request_id
    and locale."""
    return (
        v.submission_violations(
            request.assessment_name,
            request.assessment_data,
            request.raw_responses,
            request.ByteSize(),
        )
        + v.id_violations(request.request_id, "request_id", required=False)
        + v.locale_violations(request.locale)
        + v.id_violations(request.user_id, "user_id", required=False)
    )


def batch_violations(request: pb.SubmitAssessmentsRequest) -> list[FieldViolation]:
    """Every violation of a batch, each item's under ``requests[i].``: the item's own, a
    missing request_id, and a request_id repeated for the same user."""
    if not request.requests:
        return [FieldViolation("requests", "at least one submission is required")]
    if len(request.requests) > MAX_BATCH:
        return [FieldViolation("requests", f"at most {MAX_BATCH} submissions")]
    violations: list[FieldViolation] = []
    seen: dict[tuple[str, str], int] = {}
    for n, item in enumerate(request.requests):
        found = submit_request_violations(item)
        if not item.request_id:
            found.append(FieldViolation("request_id", "required in a batch"))
        key = (item.user_id, item.request_id)
        if item.request_id and key in seen:
            found.append(FieldViolation("request_id", f"repeats requests[{seen[key]}]"))
        seen.setdefault(key, n)
        violations += [FieldViolation(f"requests[{n}].{f.field}", f.description) for f in found]
    return violations


def result_request_violations(request: pb.GetResultRequest) -> list[FieldViolation]:
    """A GetResult request names exactly one of result_id and job_id, as a UUID."""
    if request.result_id and request.job_id:
        return [FieldViolation("job_id", "set result_id or job_id, not both")]
    if request.job_id:
        return v.uuid_violations(request.job_id, "job_id")
    if not request.result_id:
        return [FieldViolation("result_id", "required (or job_id)")]
    return v.uuid_violations(request.result_id, "result_id")


def list_request_violations(request: pb.ListJobsRequest) -> list[FieldViolation]:
    """Violations of a ListJobs request: status, page size and user id."""
    violations = v.page_size_violations(request.page_size)
    if request.status not in JOB_STATUSES:
        violations.append(FieldViolation("status", f"unknown job status {request.status}"))
    return violations + v.id_violations(request.user_id, "user_id", required=False)


def _refusal_reason(err: Exception) -> str:
    return errors.reason_of(err) or type(err).__name__


@dataclass(frozen=True)
class Assessments:
    """The AssessmentService's operations over the archive, scoped to the caller."""

    archive: ArchiveClient
    max_inflight: int

    async def submit(
        self, principal: Principal, request: pb.SubmitAssessmentRequest, budget: Budget
    ) -> pb.SubmitAssessmentResponse:
        """Validate the whole submission, then charge, record and queue it in the archive."""
        started = time.perf_counter()
        try:
            errors_found = submit_request_violations(request)
            v.require_valid(errors_found)
            reply = await self.archive.create_submission(
                self._archive_request(principal, request), budget
            )
        except Exception as err:
            SUBMISSIONS.labels("refused", _refusal_reason(err)).inc()
            SUBMIT_SECONDS.labels("refused").observe(time.perf_counter() - started)
            log.info(
                "submission refused: %s",
                _refusal_reason(err),
                extra={"user_id": principal.user_id, "request_id": request.request_id},
            )
            raise
        outcome = "replayed" if reply.replayed else "accepted"
        count, seconds = _outcome_metrics(outcome)
        count.inc()
        seconds.observe(time.perf_counter() - started)
        log.info(
            "submission %s",
            outcome,
            extra={
                "job_id": reply.job.job_id,
                "user_id": principal.user_id,
                "request_id": request.request_id,
            },
        )
        return pb.SubmitAssessmentResponse(job=reply.job, tokens_remaining=reply.tokens_remaining)

    def _archive_request(
        self, principal: Principal, request: pb.SubmitAssessmentRequest
    ) -> archive_pb.CreateSubmissionRequest:
        """The archive's form of a validated submission, for its user (the caller, or the
        user a privileged caller names) with the caller's tier when it is the caller's own."""
        user_id = list_owner(principal, request.user_id) or principal.user_id
        return archive_pb.CreateSubmissionRequest(
            user_id=user_id,
            assessment_name=request.assessment_name or jobs.DEFAULT_ASSESSMENT,
            assessment_data=request.assessment_data,
            raw_responses=request.raw_responses,
            request_id=request.request_id,
            max_inflight=self.max_inflight,
            traceparent=tracing.traceparent(),  # batched with others: each its own
            locale=request.locale,  # empty: the archive's ASSAY_DEFAULT_LOCALE
            tier=principal.tier if user_id == principal.user_id else "",
        )

    async def submit_many(
        self, principal: Principal, request: pb.SubmitAssessmentsRequest, budget: Budget
    ) -> pb.SubmitAssessmentsResponse:
        """Validate every item, then charge, record and queue them all in one archive
        transaction, or none (the first refusal is the call's error)."""
        started = time.perf_counter()
        try:
            v.require_valid(batch_violations(request))
            items = [self._archive_request(principal, item) for item in request.requests]
            replies = await self.archive.create_submissions_atomic(items, budget)
        except Exception as err:
            BATCHES.labels("refused").inc()
            log.info(
                "batch of %d refused: %s",
                len(request.requests),
                _refusal_reason(err),
                extra={"user_id": principal.user_id},
            )
            raise
        replayed = all(reply.replayed for reply in replies)
        outcome = "replayed" if replayed else "accepted"
        BATCHES.labels(outcome).inc()
        BATCH_ITEMS.labels(outcome).inc(len(replies))
        SUBMIT_SECONDS.labels(f"batch_{outcome}").observe(time.perf_counter() - started)
        log.info("batch of %d %s", len(replies), outcome, extra={"user_id": principal.user_id})
        return pb.SubmitAssessmentsResponse(
            responses=[
                pb.SubmitAssessmentResponse(job=r.job, tokens_remaining=r.tokens_remaining)
                for r in replies
            ],
            replayed=replayed,
        )

    async def get_job(self, principal: Principal, job_id: str, budget: Budget) -> job_pb2.Job:
        """One job the caller may see; NOT_FOUND otherwise."""
        v.require_valid(v.uuid_violations(job_id, "job_id"))
        return await self.archive.get_job(job_id, owner_scope(principal), budget)

    async def list_jobs(
        self, principal: Principal, request: pb.ListJobsRequest, budget: Budget
    ) -> pb.ListJobsResponse:
        """A page of the caller's jobs (an operator's: the named user's, or everyone's)."""
        v.require_valid(list_request_violations(request))
        owner = list_owner(principal, request.user_id) or owner_scope(principal)
        reply = await self.archive.list_jobs(
            archive_pb.ListJobsRequest(
                user_id=owner,
                status=request.status,
                page_size=request.page_size,
                page_token=request.page_token,
            ),
            budget,
        )
        return pb.ListJobsResponse(jobs=reply.jobs, next_page_token=reply.next_page_token)

    async def get_result(
        self, principal: Principal, request: pb.GetResultRequest, budget: Budget
    ) -> job_pb2.AnalysisResult:
        """A result row the caller may see, by result_id or by its job's id."""
        v.require_valid(result_request_violations(request))
        owner = owner_scope(principal)
        result_id = request.result_id
        if request.job_id:
            job = await self.archive.get_job(request.job_id, owner, budget)
            if not job.result_id:
                raise errors.NotFound(f"job {request.job_id} has no result row yet")
            result_id = job.result_id
        # Someone reading another's result is named, for the archive's access record.
        reader = "" if owner else reader_name(principal.identity, principal.user_id)
        return await self.archive.get_result(result_id, owner, budget, reader=reader)

    async def cancel(self, principal: Principal, job_id: str, budget: Budget) -> job_pb2.Job:
        """Cancel one of the caller's jobs (refunded once it is CANCELLED)."""
        v.require_valid(v.uuid_violations(job_id, "job_id"))
        job = await self.archive.cancel_job(job_id, owner_scope(principal), budget)
        log.info(
            "cancel: job is %s",
            jobs.status_name(job.status),
            extra={"job_id": job.job_id, "user_id": principal.user_id},
        )
        return job

    async def retry(self, principal: Principal, job_id: str, budget: Budget) -> pb.RetryJobResponse:
        """Re-queue one of the caller's failed jobs, charging again."""
        v.require_valid(v.uuid_violations(job_id, "job_id"))
        reply = await self.archive.retry_job(
            job_id, owner_scope(principal), self.max_inflight, budget
        )
        log.info(
            "retry: job re-queued (charge %d)",
            reply.job.charge_count,
            extra={"job_id": reply.job.job_id, "user_id": principal.user_id},
        )
        return pb.RetryJobResponse(job=reply.job, tokens_remaining=reply.tokens_remaining)

    async def balance(
        self, principal: Principal, requested: str, budget: Budget
    ) -> pb.GetTokenBalanceResponse:
        """The caller's balance, or (privileged callers) the named user's."""
        v.require_valid(v.id_violations(requested, "user_id", required=False))
        user_id = list_owner(principal, requested) or principal.user_id
        balance = await self.archive.balance(user_id, budget)
        return pb.GetTokenBalanceResponse(user_id=user_id, balance=balance)
