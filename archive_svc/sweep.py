"""Finding and failing stuck jobs, in SQL batches, one sweep at a time."""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Sequence

from prometheus_client import Counter
from sqlalchemy import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from archive_svc import convert, store
from archive_svc.events import event_row, queue_row
from archive_svc.paging import PageTokens, page_limit
from archive_svc.records import Policy
from archive_svc.states import SWEEP, SWEEP_QUEUED, Transition
from assay.archive.v1 import archive_service_pb2 as pb
from assaylib.errors import FieldViolation, InvalidArgument
from assaylib.streams import StreamNames

log = logging.getLogger(__name__)

DEFAULT_BATCH = 500
SWEPT = Counter("assay_sweep_jobs_failed_total", "Stuck jobs failed (code STUCK) by sweeps")
HELD_BACK = Counter("assay_sweep_held_back_total", "Sweeps held back by the mass-failure guard")
REQUEUED = Counter(
    "assay_sweep_jobs_requeued_total", "Lost QUEUED jobs re-published to the queue by sweeps"
)


def limits_of(request: pb.SweepStuckJobsRequest | pb.ListStuckJobsRequest) -> tuple[float, float]:
    """(stuck_after, max_processing) in seconds; both required and positive."""
    stuck_after = request.stuck_after.ToTimedelta().total_seconds()
    max_processing = request.max_processing.ToTimedelta().total_seconds()
    violations = [
        FieldViolation(name, "required: a positive duration")
        for name, value in (("stuck_after", stuck_after), ("max_processing", max_processing))
        if value <= 0
    ]
    if violations:
        raise InvalidArgument(violations)
    return stuck_after, max_processing


class Sweeper:
    """Lists and sweeps stuck jobs."""

    def __init__(
        self, engine: AsyncEngine, names: StreamNames, policy: Policy, pages: PageTokens
    ) -> None:
        self.engine = engine
        self.names = names
        self.policy = policy
        self.pages = pages

    async def list_stuck(self, request: pb.ListStuckJobsRequest) -> pb.ListStuckJobsResponse:
        """A page of stuck jobs, stalest first, and how many jobs are in flight."""
        stuck_after, max_processing = limits_of(request)
        limit = page_limit(request.page_size)
        scope = f"stuck\0{stuck_after}\0{max_processing}"
        after = self.pages.decode(request.page_token, scope, (dt.datetime, uuid.UUID))
        async with self.engine.connect() as conn:
            rows = await store.stuck_page(conn, stuck_after, max_processing, after, limit + 1)
            in_flight = await store.count_processing(conn)
        response = pb.ListStuckJobsResponse(
            jobs=[convert.job_to_proto(r) for r in rows[:limit]], in_flight=in_flight
        )
        if len(rows) > limit:
            last = rows[limit - 1]
            response.next_page_token = self.pages.encode(
                scope, last["heartbeat_at"], last["job_id"]
            )
        return response

    async def sweep(self, request: pb.SweepStuckJobsRequest) -> pb.SweepStuckJobsResponse:
        """One sweep under the sweep lock: count, apply the guard, then fail stuck jobs and
        recover lost queued ones in batches."""
        stuck_after, max_processing = limits_of(request)
        if request.limit < 0 or not 0 <= request.max_fraction <= 1:
            raise InvalidArgument(
                [FieldViolation("limit", "must be ≥ 0")]
                if request.limit < 0
                else [FieldViolation("max_fraction", "must be between 0 and 1")]
            )
        async with self.engine.connect() as conn:
            if not await store.try_advisory_lock(conn, store.SWEEP_LOCK_KEY):
                await conn.commit()
                return pb.SweepStuckJobsResponse(lock_busy=True, reason="another sweep is running")
            await conn.commit()
            try:
                return await self._sweep_locked(conn, request, stuck_after, max_processing)
            finally:
                await conn.rollback()
                await store.advisory_unlock(conn, store.SWEEP_LOCK_KEY)
                await conn.commit()

    async def _sweep_locked(
        self,
        conn: AsyncConnection,
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
        await conn.commit()
        batch = request.limit or DEFAULT_BATCH
        if request.dry_run:
            rows = await store.stuck_page(conn, stuck_after, max_processing, None, batch)
            response.jobs.extend(convert.job_to_proto(r) for r in rows)
            return response
        reasons = [
            reason
            for reason in (
                hold_back(request, response.found, response.in_flight, PROCESSING_GUARD),
                hold_back(request, response.queued_found, response.queued, QUEUED_GUARD),
            )
            if reason
        ]
        if reasons:
            HELD_BACK.inc()
            response.held_back, response.reason = True, "; ".join(reasons)
        if not hold_back(request, response.found, response.in_flight, PROCESSING_GUARD):
            await self._fail_stuck(conn, stuck_after, max_processing, batch, response)
        if max_queued > 0 and not hold_back(
            request, response.queued_found, response.queued, QUEUED_GUARD
        ):
            await self._recover_lost(conn, max_queued, batch, response)
        response.refunded = response.failed
        return response

    async def _fail_stuck(
        self,
        conn: AsyncConnection,
        stuck_after: float,
        max_processing: float,
        batch: int,
        response: pb.SweepStuckJobsResponse,
    ) -> None:
        swept = 0
        for _ in range(response.found // batch + 1):
            rows = await store.sweep_batch(conn, stuck_after, max_processing, batch)
            await self._announce(conn, rows, SWEEP, response, "swept stuck job")
            swept += len(rows)
            if len(rows) < batch:
                break
        response.skipped = max(response.found - swept, 0)
        SWEPT.inc(swept)

    async def _recover_lost(
        self,
        conn: AsyncConnection,
        max_queued: float,
        batch: int,
        response: pb.SweepStuckJobsResponse,
    ) -> None:
        """Re-publish lost QUEUED jobs through the outbox (a new message id, so the stream's
        duplicate window cannot drop it); fail those re-published max_attempts times."""
        max_requeues = self.policy.max_attempts
        for _ in range(response.queued_found // batch + 1):
            rows = await store.requeue_batch(conn, max_queued, max_requeues, batch)
            await store.insert_outbox(conn, [self._queue_message(r) for r in rows])
            await conn.commit()
            response.requeued_job_ids.extend(str(r["job_id"]) for r in rows)
            for row in rows:
                log.warning(
                    "re-published lost queued job (re-publication %d of %d)",
                    row["requeues"],
                    max_requeues,
                    extra={"job_id": str(row["job_id"]), "user_id": row["user_id"]},
                )
            if len(rows) < batch:
                break
        response.requeued = len(response.requeued_job_ids)
        REQUEUED.inc(response.requeued)
        for _ in range(response.queued_found // batch + 1):
            rows = await store.fail_lost_batch(conn, max_queued, max_requeues, batch)
            await self._announce(conn, rows, SWEEP_QUEUED, response, "failed lost queued job")
            SWEPT.inc(len(rows))
            if len(rows) < batch:
                break

    async def _announce(
        self,
        conn: AsyncConnection,
        rows: Sequence[RowMapping],
        rule: Transition,
        response: pb.SweepStuckJobsResponse,
        what: str,
    ) -> None:
        """Write the events of a batch the sweep failed, commit it, and report each job."""
        await store.insert_outbox(conn, [event_row(self.names, r, rule.event) for r in rows])
        await conn.commit()
        response.jobs.extend(convert.job_to_proto(r) for r in rows)
        response.failed += len(rows)
        for row in rows:
            log.warning(what, extra={"job_id": str(row["job_id"]), "worker_id": row["worker_id"]})

    def _queue_message(self, row: RowMapping) -> store.OutboxRow:
        data, raw = convert.submission_of(row)
        return queue_row(self.names, row, data, raw)


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
