"""Finding and failing stuck jobs, in SQL batches, one sweep at a time."""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg

from archive_svc import convert, db, metrics, store
from archive_svc.checks import Policy
from archive_svc.erasure import expire_results
from archive_svc.paging import PageTokens, page_limit
from archive_svc.states import REQUEUE, SWEEP, SWEEP_QUEUED
from archive_svc.store.transitions import Applied, Operation, Rule
from assay.archive.v1 import archive_service_pb2 as pb
from assaylib.auth import current_principal
from assaylib.errors import FieldViolation, InvalidArgument

log = logging.getLogger(__name__)

DEFAULT_BATCH = 500
SWEEP_OP = Operation(
    "sweep",
    (Rule(SWEEP),),
    (("stuck_after", "float8"), ("max_processing", "float8")),
    scan="j.heartbeat_at",
)
QUEUED_OP = Operation(
    "sweep_queued",
    (Rule(REQUEUE), Rule(SWEEP_QUEUED)),
    (("max_queued", "float8"), ("max_requeues", "int4")),
    scan="j.updated_at",
)


MAX_AGE = 100 * 365.25 * 86400.0
"""The longest duration a sweep takes (100 years): PostgreSQL's ``now() - interval`` leaves
its timestamp range a few thousand years back, which a protobuf Duration reaches."""


def limits_of(request: pb.SweepStuckJobsRequest | pb.ListStuckJobsRequest) -> tuple[float, float]:
    """(stuck_after, max_processing) in seconds; both required, positive and at most MAX_AGE
    (as ``max_queued`` and ``result_retention`` are, when a sweep names them)."""
    stuck_after = request.stuck_after.ToTimedelta().total_seconds()
    max_processing = request.max_processing.ToTimedelta().total_seconds()
    violations = [
        FieldViolation(name, "required: a positive duration")
        for name, value in (("stuck_after", stuck_after), ("max_processing", max_processing))
        if value <= 0
    ]
    ages = [("stuck_after", stuck_after), ("max_processing", max_processing)]
    if isinstance(request, pb.SweepStuckJobsRequest):
        ages += [
            ("max_queued", request.max_queued.ToTimedelta().total_seconds()),
            ("result_retention", request.result_retention.ToTimedelta().total_seconds()),
        ]
    violations += [
        FieldViolation(name, "at most 100 years") for name, value in ages if value > MAX_AGE
    ]
    if violations:
        raise InvalidArgument(violations)
    return stuck_after, max_processing


class Sweeper:
    """Lists and sweeps stuck jobs, and recovers lost queued ones."""

    def __init__(self, pool: asyncpg.Pool, dsn: str, policy: Policy, pages: PageTokens) -> None:
        self.pool = pool
        self.dsn = dsn
        self.policy = policy
        self.pages = pages

    async def list_stuck(self, request: pb.ListStuckJobsRequest) -> pb.ListStuckJobsResponse:
        """A page of stuck jobs, stalest first, and how many jobs are in flight."""
        stuck_after, max_processing = limits_of(request)
        limit = page_limit(request.page_size)
        scope = f"stuck\0{stuck_after}\0{max_processing}"
        after = self.pages.decode(request.page_token, scope, (dt.datetime, uuid.UUID))
        rows = await store.stuck_page(self.pool, stuck_after, max_processing, after, limit + 1)
        in_flight = await store.count_processing(self.pool)
        page, token = self.pages.page(
            rows, limit, scope, lambda r: (r["heartbeat_at"], r["job_id"])
        )
        return pb.ListStuckJobsResponse(
            jobs=[convert.job_to_proto(r) for r in page], in_flight=in_flight, next_page_token=token
        )

    async def sweep(self, request: pb.SweepStuckJobsRequest) -> pb.SweepStuckJobsResponse:
        """One sweep under the sweep lock: count, apply the guard, then fail stuck jobs and
        recover lost queued ones in batches (one statement each)."""
        stuck_after, max_processing = limits_of(request)
        if request.result_retention.ToTimedelta().total_seconds() < 0:
            raise InvalidArgument([FieldViolation("result_retention", "must be ≥ 0")])
        if request.limit < 0 or not 0 <= request.max_fraction <= 1:
            raise InvalidArgument(
                [FieldViolation("limit", "must be ≥ 0")]
                if request.limit < 0
                else [FieldViolation("max_fraction", "must be between 0 and 1")]
            )
        # A connection of its own: the session lock dies with it, whatever happens.
        conn = await db.connect(self.dsn)
        try:
            if not await store.try_advisory_lock(conn, store.SWEEP_LOCK_KEY):
                return pb.SweepStuckJobsResponse(lock_busy=True, reason="another sweep is running")
            return await self._sweep_locked(conn, request, stuck_after, max_processing)
        finally:
            await conn.close()

    async def _sweep_locked(
        self,
        conn: asyncpg.Connection,
        request: pb.SweepStuckJobsRequest,
        stuck_after: float,
        max_processing: float,
    ) -> pb.SweepStuckJobsResponse:
        max_queued = request.max_queued.ToTimedelta().total_seconds()
        response = pb.SweepStuckJobsResponse(
            in_flight=await store.count_processing(conn),
            found=await store.count_stuck(conn, stuck_after, max_processing),
        )
        if max_queued > 0:
            response.queued = await store.count_queued(conn)
            response.queued_found = await store.count_lost(conn, max_queued)
        batch = request.limit or DEFAULT_BATCH
        if request.dry_run:
            rows = await store.stuck_page(conn, stuck_after, max_processing, None, batch)
            response.jobs.extend(convert.job_to_proto(r) for r in rows)
            return response
        processing = hold_back(request, response.found, response.in_flight, PROCESSING_GUARD)
        queued = hold_back(request, response.queued_found, response.queued, QUEUED_GUARD)
        if processing or queued:
            metrics.HELD_BACK.inc()
            response.held_back = True
            response.reason = "; ".join(reason for reason in (processing, queued) if reason)
        if not processing:
            params = {"stuck_after": stuck_after, "max_processing": max_processing}
            swept = await self._batches(conn, SWEEP_OP, params, batch, response)
            response.skipped = max(response.found - swept, 0)
        if max_queued > 0 and not queued:
            params = {"max_queued": max_queued, "max_requeues": self.policy.max_attempts}
            await self._batches(conn, QUEUED_OP, params, batch, response)
            response.requeued = len(response.requeued_job_ids)
            metrics.REQUEUED.inc(response.requeued)
        response.refunded = response.failed
        retention = request.result_retention.ToTimedelta().total_seconds()
        if retention > 0:
            # A pass of its own, under the same lock: erasing old profiles is independent of
            # the guard (it touches only terminal jobs).
            response.results_expired = await expire_results(
                conn, retention, batch, current_principal().user_id, f"retention-{uuid.uuid4()}"
            )
            if response.results_expired:
                log.info("retention erased %d result(s)", response.results_expired)
        await self._prune_access_records(conn, request, batch, response)
        await store.record_sweep(
            conn,
            found=response.found + response.queued_found,
            failed=response.failed,
            requeued=response.requeued,
            held_back=response.held_back,
            reason=response.reason,
            in_flight=response.in_flight,
            queued=response.queued,
        )
        return response

    async def _prune_access_records(
        self,
        conn: asyncpg.Connection,
        request: pb.SweepStuckJobsRequest,
        batch: int,
        response: pb.SweepStuckJobsResponse,
    ) -> None:
        """The access-record pass: delete records older than their retention, a batch per
        statement, until a batch comes back short (zero retention: skipped)."""
        retention = request.access_record_retention.ToTimedelta().total_seconds()
        if retention <= 0:
            return
        while True:
            pruned = await store.prune_access_records(conn, retention, batch)
            response.access_records_pruned += pruned
            metrics.ACCESS_RECORDS_PRUNED.inc(pruned)
            if pruned < batch:
                break
        if response.access_records_pruned:
            log.info("pruned %d access records", response.access_records_pruned)

    async def _batches(
        self,
        conn: asyncpg.Connection,
        operation: Operation,
        params: dict[str, Any],
        batch: int,
        response: pb.SweepStuckJobsResponse,
    ) -> int:
        """Apply a scanning operation batch after batch until a batch comes back short;
        report each job; return how many jobs were failed."""
        failed = 0
        while True:
            applied: Sequence[Applied] = await db.retrying(
                lambda: store.apply(conn, operation, [params], limit=batch)
            )
            for outcome in applied:
                job = outcome.job
                if outcome.rule is not None:
                    metrics.count_transition(outcome.rule, outcome.previous_status, job)
                extra = {"job_id": str(job["job_id"]), "worker_id": job["worker_id"]}
                if outcome.rule == REQUEUE.name:
                    response.requeued_job_ids.append(str(job["job_id"]))
                    log.warning(
                        "re-published lost queued job (re-publication %d of %d)",
                        job["requeues"],
                        self.policy.max_attempts,
                        extra=extra,
                    )
                elif outcome.rule is not None:
                    response.jobs.append(convert.job_to_proto(job))
                    failed += 1
                    log.warning(
                        "swept job (%s): %s", outcome.rule, job["error_message"], extra=extra
                    )
            if len(applied) < batch:
                break
        response.failed += failed
        metrics.SWEPT.inc(failed)
        return failed


PROCESSING_GUARD = (
    "in-flight jobs look stuck",
    "the heartbeat path is likely broken, not every worker",
)
QUEUED_GUARD = (
    "queued jobs look lost",
    "no worker is likely consuming (a backlog), not lost messages",
)


def hold_back(
    request: pb.SweepStuckJobsRequest, found: int, total: int, guard: tuple[str, str]
) -> str:
    """Why the mass-failure guard holds a pass back ("" when it does not): more than
    max_fraction of the jobs it looks at seem stale at once, and at least guard_min_count."""
    if request.force or request.max_fraction <= 0 or total == 0:
        return ""
    if found < max(request.guard_min_count, 1) or found / total <= request.max_fraction:
        return ""
    what, likely = guard
    return (
        f"{found} of {total} {what} (more than {request.max_fraction:.0%}): {likely}; "
        "fix it or sweep with --force"
    )
