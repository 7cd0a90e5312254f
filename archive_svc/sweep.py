"""Finding and failing stuck jobs, in SQL batches, one sweep at a time."""

from __future__ import annotations

import datetime as dt
import logging
import uuid

from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from archive_svc import convert, store
from archive_svc.events import event_row
from archive_svc.records import decode_page_token, encode_page_token, page_limit
from archive_svc.states import SWEEP
from assay.archive.v1 import archive_service_pb2 as pb
from assaylib.errors import FieldViolation, InvalidArgument
from assaylib.streams import StreamNames

log = logging.getLogger(__name__)

DEFAULT_BATCH = 500
SWEPT = Counter("assay_sweep_jobs_failed_total", "Stuck jobs failed (code STUCK) by sweeps")
HELD_BACK = Counter("assay_sweep_held_back_total", "Sweeps held back by the mass-failure guard")


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

    def __init__(self, engine: AsyncEngine, names: StreamNames) -> None:
        self.engine = engine
        self.names = names

    async def list_stuck(self, request: pb.ListStuckJobsRequest) -> pb.ListStuckJobsResponse:
        """A page of stuck jobs, stalest first, and how many jobs are in flight."""
        stuck_after, max_processing = limits_of(request)
        limit = page_limit(request.page_size)
        after = decode_page_token(request.page_token, (dt.datetime, uuid.UUID))
        async with self.engine.connect() as conn:
            rows = await store.stuck_page(conn, stuck_after, max_processing, after, limit + 1)
            in_flight = await store.count_processing(conn)
        response = pb.ListStuckJobsResponse(
            jobs=[convert.job_to_proto(r) for r in rows[:limit]], in_flight=in_flight
        )
        if len(rows) > limit:
            last = rows[limit - 1]
            response.next_page_token = encode_page_token(last["heartbeat_at"], last["job_id"])
        return response

    async def sweep(self, request: pb.SweepStuckJobsRequest) -> pb.SweepStuckJobsResponse:
        """One sweep under the sweep lock: count, apply the guard, fail in batches."""
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
        in_flight = await store.count_processing(conn)
        found = await store.count_stuck(conn, stuck_after, max_processing)
        await conn.commit()
        response = pb.SweepStuckJobsResponse(found=found, in_flight=in_flight)
        batch = request.limit or DEFAULT_BATCH
        if request.dry_run:
            rows = await store.stuck_page(conn, stuck_after, max_processing, None, batch)
            response.jobs.extend(convert.job_to_proto(r) for r in rows)
            return response
        if self._hold_back(request, response):
            HELD_BACK.inc()
            return response
        for _ in range(found // batch + 1):
            rows = await store.sweep_batch(conn, stuck_after, max_processing, batch)
            await store.insert_outbox(conn, [event_row(self.names, r, SWEEP.event) for r in rows])
            await conn.commit()
            response.jobs.extend(convert.job_to_proto(r) for r in rows)
            for row in rows:
                log.warning(
                    "swept stuck job",
                    extra={"job_id": str(row["job_id"]), "worker_id": row["worker_id"]},
                )
            if len(rows) < batch:
                break
        response.failed = response.refunded = len(response.jobs)
        response.skipped = max(found - response.failed, 0)
        SWEPT.inc(response.failed)
        return response

    @staticmethod
    def _hold_back(request: pb.SweepStuckJobsRequest, response: pb.SweepStuckJobsResponse) -> bool:
        found, in_flight = response.found, response.in_flight
        if request.force or request.max_fraction <= 0 or in_flight == 0:
            return False
        if found < max(request.guard_min_count, 1) or found / in_flight <= request.max_fraction:
            return False
        response.held_back = True
        response.reason = (
            f"{found} of {in_flight} in-flight jobs look stuck (more than "
            f"{request.max_fraction:.0%}): the heartbeat path is likely broken, not every "
            "worker; fix it or sweep with --force"
        )
        return True
