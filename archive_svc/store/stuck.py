"""Counts and pages for the sweep, and the advisory locks of the sweep and the relay."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence

import asyncpg

from archive_svc.states import LOST, STUCK
from archive_svc.store.jobs import JOBS, Db

_PARAMS = "(SELECT $1::float8 AS stuck_after, $2::float8 AS max_processing) i"


async def count_processing(db: Db) -> int:
    """Jobs PROCESSING now."""
    return int(await db.fetchval("SELECT count(*) FROM jobs WHERE status = 'PROCESSING'"))


async def count_queued(db: Db) -> int:
    """Jobs QUEUED now."""
    return int(await db.fetchval("SELECT count(*) FROM jobs WHERE status = 'QUEUED'"))


async def count_stuck(db: Db, stuck_after: float, max_processing: float) -> int:
    """Jobs that are stuck now (the SWEEP row's guard)."""
    return int(
        await db.fetchval(
            f"SELECT count(*) FROM jobs j, {_PARAMS} WHERE j.status = 'PROCESSING' AND {STUCK}",
            stuck_after,
            max_processing,
        )
    )


async def count_lost(db: Db, max_queued: float) -> int:
    """QUEUED jobs that look lost now (the REQUEUE and SWEEP_QUEUED rows' common guard)."""
    return int(
        await db.fetchval(
            "SELECT count(*) FROM jobs j, (SELECT $1::float8 AS max_queued) i"
            f" WHERE j.status = 'QUEUED' AND {LOST}",
            max_queued,
        )
    )


async def stuck_page(
    db: Db,
    stuck_after: float,
    max_processing: float,
    after: tuple[dt.datetime, uuid.UUID] | None,
    limit: int,
) -> Sequence[asyncpg.Record]:
    """Stuck jobs, stalest heartbeat first, keyset-paginated by (heartbeat_at, job_id)."""
    columns = ", ".join(f"j.{c.strip()}" for c in JOBS.split(","))
    rows: list[asyncpg.Record] = await db.fetch(
        f"SELECT {columns} FROM jobs j, {_PARAMS} WHERE j.status = 'PROCESSING' AND {STUCK}"
        " AND ($3::timestamptz IS NULL OR (j.heartbeat_at, j.job_id) > ($3, $4::uuid))"
        " ORDER BY j.heartbeat_at, j.job_id LIMIT $5",
        stuck_after,
        max_processing,
        after[0] if after else None,
        after[1] if after else None,
        limit,
    )
    return rows


SWEEP_LOCK_KEY = 0x4153_5359  # "ASSY": one sweep at a time, across processes
RELAY_LOCK_KEY = 0x4153_5952  # one relay at a time keeps each job's events in order


async def try_advisory_lock(conn: asyncpg.Connection, key: int) -> bool:
    """Take a session-level advisory lock if free."""
    return bool(await conn.fetchval("SELECT pg_try_advisory_lock($1)", key))


async def advisory_unlock(conn: asyncpg.Connection, key: int) -> None:
    """Release a session-level advisory lock."""
    await conn.execute("SELECT pg_advisory_unlock($1)", key)
