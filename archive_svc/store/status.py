"""What operators look at (``assay status`` and the sampled gauges) and the sweeps' record."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from archive_svc.store.jobs import Db
from archive_svc.store.outbox import UNSENT

RECENT = 60.0  # seconds: "the last minute" of throughput and of workers seen
SWEEPS_KEPT = 10_000


async def in_flight(db: Db) -> Sequence[asyncpg.Record]:
    """QUEUED and PROCESSING jobs: (status, jobs, age), age the seconds since the oldest was
    queued or started. Only statuses with jobs come back (both are partial-index scans)."""
    rows: list[asyncpg.Record] = await db.fetch(
        "SELECT status::text AS status, count(*) AS jobs, coalesce(extract(epoch FROM now()"
        " - min(CASE status WHEN 'QUEUED' THEN updated_at ELSE started_at END)), 0) AS age"
        " FROM jobs WHERE status IN ('QUEUED', 'PROCESSING') GROUP BY status"
    )
    return rows


async def outbox_backlog(db: Db) -> asyncpg.Record:
    """(unsent, age): unpublished outbox rows and the seconds since the oldest was written."""
    row: asyncpg.Record = await db.fetchrow(
        "SELECT count(*) AS unsent, coalesce(extract(epoch FROM now() - min(o.created_at)), 0)"
        f" AS age {UNSENT}"
    )
    return row


async def jobs_per_status(db: Db) -> dict[str, int]:
    """Every job counted by status (a scan of the jobs table: an operator's command)."""
    rows = await db.fetch("SELECT status::text AS status, count(*) AS jobs FROM jobs GROUP BY 1")
    return {row["status"]: int(row["jobs"]) for row in rows}


async def last_minute(db: Db) -> asyncpg.Record:
    """(submitted, completed, failed, cancelled) over the last RECENT seconds."""
    row: asyncpg.Record = await db.fetchrow(
        "SELECT (SELECT count(*) FROM jobs WHERE created_at > now() - make_interval(secs => $1))"
        " AS submitted, count(*) FILTER (WHERE status = 'COMPLETED') AS completed,"
        " count(*) FILTER (WHERE status = 'FAILED') AS failed,"
        " count(*) FILTER (WHERE status = 'CANCELLED') AS cancelled"
        " FROM jobs WHERE finished_at > now() - make_interval(secs => $1)",
        RECENT,
    )
    return row


async def recent_workers(db: Db) -> Sequence[asyncpg.Record]:
    """Workers that hold a PROCESSING job or ended one in the last RECENT seconds:
    (worker_id, last_seen, processing, finished), most recently seen first."""
    rows: list[asyncpg.Record] = await db.fetch(
        "SELECT worker_id, max(greatest(heartbeat_at, started_at, finished_at)) AS last_seen,"
        " count(*) FILTER (WHERE status = 'PROCESSING') AS processing,"
        " count(*) FILTER (WHERE status <> 'PROCESSING') AS finished FROM ("
        "  SELECT worker_id, status, heartbeat_at, started_at, finished_at FROM jobs"
        "  WHERE status = 'PROCESSING'"
        "  UNION ALL SELECT worker_id, status, heartbeat_at, started_at, finished_at FROM jobs"
        "  WHERE finished_at > now() - make_interval(secs => $1) AND status <> 'PROCESSING'"
        ") seen WHERE worker_id IS NOT NULL GROUP BY worker_id ORDER BY last_seen DESC",
        RECENT,
    )
    return rows


async def record_sweep(
    db: Db,
    *,
    found: int,
    failed: int,
    requeued: int,
    held_back: bool,
    reason: str,
    in_flight: int,
    queued: int,
) -> None:
    """Record what a sweep did, keeping the newest SWEEPS_KEPT records."""
    await db.execute(
        "WITH kept AS (DELETE FROM sweeps WHERE sweep_id <= (SELECT max(sweep_id) FROM sweeps)"
        " - $8) INSERT INTO sweeps (found, failed, requeued, held_back, reason, in_flight, queued)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7)",
        found,
        failed,
        requeued,
        held_back,
        reason,
        in_flight,
        queued,
        SWEEPS_KEPT - 1,
    )


async def last_sweep(db: Db) -> asyncpg.Record | None:
    """The newest sweep's record, or None."""
    row: asyncpg.Record | None = await db.fetchrow(
        "SELECT ran_at, found, failed, requeued, held_back, reason, in_flight, queued"
        " FROM sweeps ORDER BY sweep_id DESC LIMIT 1"
    )
    return row
