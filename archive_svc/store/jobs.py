"""Jobs and result rows: reads, pages, and the result-row writes outside transitions."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from typing import TypeAlias

import asyncpg

from archive_svc.store.transitions import JOB_COLUMNS

Db: TypeAlias = "asyncpg.Connection | asyncpg.Pool"
"""Where a statement runs: a connection (inside its transaction) or the pool (autocommit)."""

JOBS = ", ".join(JOB_COLUMNS)
RESULT_COLUMNS = (
    "result_id, job_id, user_id, assessment_name, test_data, raw_responses, test_result,"
    " created_at, updated_at, erased_at"
)


async def get_job(db: Db, job_id: uuid.UUID) -> asyncpg.Record | None:
    """One job, or None."""
    row: asyncpg.Record | None = await db.fetchrow(
        f"SELECT {JOBS} FROM jobs WHERE job_id = $1", job_id
    )
    return row


async def get_result(db: Db, result_id: uuid.UUID) -> asyncpg.Record | None:
    """One result row, or None."""
    row: asyncpg.Record | None = await db.fetchrow(
        f"SELECT {RESULT_COLUMNS} FROM results WHERE result_id = $1", result_id
    )
    return row


async def jobs_page(
    db: Db,
    user_id: str,
    status: str | None,
    after: tuple[dt.datetime, uuid.UUID] | None,
    limit: int,
) -> Sequence[asyncpg.Record]:
    """Jobs newest first, keyset-paginated by (created_at, job_id)."""
    rows: list[asyncpg.Record] = await db.fetch(
        f"SELECT {JOBS} FROM jobs WHERE ($1 = '' OR user_id = $1)"
        " AND ($2::job_status IS NULL OR status = $2::job_status)"
        " AND ($3::timestamptz IS NULL OR (created_at, job_id) < ($3, $4::uuid))"
        " ORDER BY created_at DESC, job_id DESC LIMIT $5",
        user_id,
        status,
        after[0] if after else None,
        after[1] if after else None,
        limit,
    )
    return rows


async def results_page(
    db: Db, user_id: str, after: tuple[dt.datetime, uuid.UUID] | None, limit: int
) -> Sequence[asyncpg.Record]:
    """Result rows newest first, keyset-paginated by (created_at, result_id)."""
    rows: list[asyncpg.Record] = await db.fetch(
        f"SELECT {RESULT_COLUMNS} FROM results WHERE ($1 = '' OR user_id = $1)"
        " AND erased_at IS NULL"
        " AND ($2::timestamptz IS NULL OR (created_at, result_id) < ($2, $3::uuid))"
        " ORDER BY created_at DESC, result_id DESC LIMIT $4",
        user_id,
        after[0] if after else None,
        after[1] if after else None,
        limit,
    )
    return rows


async def create_legacy_result(
    db: Db, job_id: uuid.UUID, result_id: uuid.UUID, test_data: bytes, raw_responses: bytes
) -> asyncpg.Record | None:
    """Create and link the result row of a job that has none (an older producer's job), in
    one statement; None when the job has one already (or does not exist)."""
    row: asyncpg.Record | None = await db.fetchrow(
        "WITH linked AS (UPDATE jobs SET result_id = $2, updated_at = now()"
        " WHERE job_id = $1 AND result_id IS NULL"
        " RETURNING job_id, user_id, assessment_name)"
        " INSERT INTO results (result_id, job_id, user_id, assessment_name, test_data,"
        " raw_responses) SELECT $2, job_id, user_id, assessment_name, $3::bytea, $4::bytea"
        f" FROM linked RETURNING {RESULT_COLUMNS}",
        job_id,
        result_id,
        test_data,
        raw_responses,
    )
    return row
