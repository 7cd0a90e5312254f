"""Stuck jobs and the advisory locks of the sweep and the relay."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import RowMapping, text
from sqlalchemy.ext.asyncio import AsyncConnection

from archive_svc.store.jobs import JOB_COLUMNS

STUCK_WHERE = (
    "status = 'PROCESSING' AND (heartbeat_at < now() - make_interval(secs => :stuck_after)"
    " OR started_at < now() - make_interval(secs => :max_processing))"
)


async def count_processing(conn: AsyncConnection) -> int:
    """Jobs PROCESSING now."""
    value = await conn.scalar(text("SELECT count(*) FROM jobs WHERE status = 'PROCESSING'"))
    return int(value or 0)


async def count_stuck(conn: AsyncConnection, stuck_after: float, max_processing: float) -> int:
    """Jobs that are stuck now."""
    value = await conn.scalar(
        text(f"SELECT count(*) FROM jobs WHERE {STUCK_WHERE}"),
        {"stuck_after": stuck_after, "max_processing": max_processing},
    )
    return int(value or 0)


async def stuck_page(
    conn: AsyncConnection, stuck_after: float, max_processing: float,
    after: tuple[Any, Any] | None, limit: int,
) -> Sequence[RowMapping]:  # fmt: skip
    """Stuck jobs, stalest heartbeat first, keyset-paginated by (heartbeat_at, job_id)."""
    rows = await conn.execute(
        text(
            f"SELECT {JOB_COLUMNS} FROM jobs WHERE {STUCK_WHERE}"
            " AND (CAST(:hb AS timestamptz) IS NULL"
            "  OR (heartbeat_at, job_id) > (CAST(:hb AS timestamptz), CAST(:job_id AS uuid)))"
            " ORDER BY heartbeat_at, job_id LIMIT :limit"
        ),
        {
            "stuck_after": stuck_after,
            "max_processing": max_processing,
            "hb": after[0] if after else None,
            "job_id": after[1] if after else None,
            "limit": limit,
        },
    )
    return rows.mappings().all()


async def sweep_batch(
    conn: AsyncConnection, stuck_after: float, max_processing: float, limit: int
) -> Sequence[RowMapping]:
    """Fail up to `limit` stuck jobs with code STUCK and refund them, in one statement.
    Rows locked by a concurrent transition are skipped, and the lock re-checks the stuck
    condition on the latest row, so a job completed or heartbeating at the same instant is
    never swept."""
    rows = await conn.execute(
        text(
            f"WITH stuck AS (SELECT job_id FROM jobs WHERE {STUCK_WHERE}"
            " ORDER BY heartbeat_at LIMIT :limit FOR UPDATE SKIP LOCKED),"
            " swept AS (UPDATE jobs j SET status = 'FAILED', version = j.version + 1,"
            " error_code = 'STUCK', error_message = CASE"
            "  WHEN j.heartbeat_at < now() - make_interval(secs => :stuck_after)"
            "  THEN 'no heartbeat from worker ' || coalesce(j.worker_id, '?') || ' since '"
            "   || to_char(j.heartbeat_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"
            "  ELSE 'processing for longer than ' || :max_processing || ' s' END,"
            " finished_at = now(), updated_at = now()"
            f" FROM stuck WHERE j.job_id = stuck.job_id AND j.status = 'PROCESSING'"
            f" RETURNING {J_COLUMNS}),"
            " refunds AS (INSERT INTO ledger_entries (user_id, kind, amount, job_id, charge_no,"
            " reason) SELECT user_id, 'REFUND', token_cost, job_id, charge_count, 'stuck'"
            " FROM swept RETURNING user_id, amount),"
            " credited AS (UPDATE token_accounts a SET balance = a.balance + s.total,"
            " updated_at = now() FROM (SELECT user_id, sum(amount) AS total FROM refunds"
            " GROUP BY user_id) s WHERE a.user_id = s.user_id RETURNING 1)"
            " SELECT swept.*, (SELECT count(*) FROM credited) AS credited FROM swept"
        ),
        {"stuck_after": stuck_after, "max_processing": max_processing, "limit": limit},
    )
    return rows.mappings().all()


LOST_WHERE = (
    "j.status = 'QUEUED' AND j.updated_at < now() - make_interval(secs => :max_queued)"
    " AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.job_id = j.job_id AND o.kind = 'job'"
    "  AND o.sent_at IS NULL)"
)
"""A QUEUED job is lost when its queue message left the outbox longer than max_queued ago
(or it was last re-published that long ago) and no worker has started it since."""
J_COLUMNS = ", ".join("j." + c.strip() for c in JOB_COLUMNS.split(","))


async def count_queued(conn: AsyncConnection) -> int:
    """Jobs QUEUED now."""
    value = await conn.scalar(text("SELECT count(*) FROM jobs WHERE status = 'QUEUED'"))
    return int(value or 0)


async def count_lost(conn: AsyncConnection, max_queued: float) -> int:
    """QUEUED jobs that look lost now."""
    value = await conn.scalar(
        text(f"SELECT count(*) FROM jobs j WHERE {LOST_WHERE}"), {"max_queued": max_queued}
    )
    return int(value or 0)


async def requeue_batch(
    conn: AsyncConnection, max_queued: float, max_requeues: int, limit: int
) -> Sequence[RowMapping]:
    """Count one more re-publication of up to `limit` lost jobs that have some left, and
    return them with their submission (test_data, raw_responses) to queue again. Rows a
    concurrent StartJob holds are skipped; the lock re-checks that each is still lost."""
    rows = await conn.execute(
        text(
            f"WITH lost AS (SELECT j.job_id FROM jobs j WHERE {LOST_WHERE}"
            " AND j.requeues < :max_requeues AND j.result_id IS NOT NULL"
            " ORDER BY j.updated_at LIMIT :limit FOR UPDATE OF j SKIP LOCKED),"
            " requeued AS (UPDATE jobs j SET requeues = j.requeues + 1, updated_at = now()"
            f" FROM lost WHERE j.job_id = lost.job_id AND j.status = 'QUEUED'"
            f" RETURNING {J_COLUMNS})"
            " SELECT requeued.*, r.test_data, r.raw_responses FROM requeued"
            " JOIN results r ON r.result_id = requeued.result_id"
        ),
        {"max_queued": max_queued, "max_requeues": max_requeues, "limit": limit},
    )
    return rows.mappings().all()


async def fail_lost_batch(
    conn: AsyncConnection, max_queued: float, max_requeues: int, limit: int
) -> Sequence[RowMapping]:
    """Fail up to `limit` lost jobs that were re-published `max_requeues` times (or cannot
    be: no result row to rebuild the message from) with code STUCK, and refund them, in one
    statement."""
    rows = await conn.execute(
        text(
            f"WITH lost AS (SELECT j.job_id FROM jobs j WHERE {LOST_WHERE}"
            " AND (j.requeues >= :max_requeues OR j.result_id IS NULL)"
            " ORDER BY j.updated_at LIMIT :limit FOR UPDATE OF j SKIP LOCKED),"
            " failed AS (UPDATE jobs j SET status = 'FAILED', version = j.version + 1,"
            " error_code = 'STUCK', error_message = 'queued since '"
            "  || to_char(j.updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"
            "  || ', re-published ' || j.requeues || ' time(s); no worker started it',"
            " finished_at = now(), updated_at = now()"
            f" FROM lost WHERE j.job_id = lost.job_id AND j.status = 'QUEUED'"
            f" RETURNING {J_COLUMNS}),"
            " refunds AS (INSERT INTO ledger_entries (user_id, kind, amount, job_id, charge_no,"
            " reason) SELECT user_id, 'REFUND', token_cost, job_id, charge_count, 'lost in queue'"
            " FROM failed RETURNING user_id, amount),"
            " credited AS (UPDATE token_accounts a SET balance = a.balance + s.total,"
            " updated_at = now() FROM (SELECT user_id, sum(amount) AS total FROM refunds"
            " GROUP BY user_id) s WHERE a.user_id = s.user_id RETURNING 1)"
            " SELECT failed.*, (SELECT count(*) FROM credited) AS credited FROM failed"
        ),
        {"max_queued": max_queued, "max_requeues": max_requeues, "limit": limit},
    )
    return rows.mappings().all()


SWEEP_LOCK_KEY = 0x4153_5359  # "ASSY": one sweep at a time, across processes
RELAY_LOCK_KEY = 0x4153_5952  # one relay at a time keeps each job's events in order


async def try_advisory_lock(conn: AsyncConnection, key: int) -> bool:
    """Take a session-level advisory lock if free."""
    return bool(await conn.scalar(text("SELECT pg_try_advisory_lock(:key)"), {"key": key}))


async def advisory_unlock(conn: AsyncConnection, key: int) -> None:
    """Release a session-level advisory lock."""
    await conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
