"""Jobs and result rows: inserts, reads, pages and compare-and-set transitions."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import RowMapping, text
from sqlalchemy.ext.asyncio import AsyncConnection

from archive_svc.states import Transition

JOB_COLUMNS = (
    "job_id, user_id, result_id, assessment_name, status, attempt, worker_id, version,"
    " cancel_requested, error_code, error_message, charge_count, token_cost, request_id,"
    " created_at, updated_at, started_at, heartbeat_at, finished_at, processing_time_ms,"
    " requeues"
)
RESULT_COLUMNS = (
    "result_id, job_id, user_id, assessment_name, test_data, raw_responses, test_result,"
    " created_at, updated_at"
)
STATUSES = "CAST(:sources AS job_status[])"


async def count_inflight(conn: AsyncConnection, user_id: str) -> int:
    """The user's jobs that are QUEUED or PROCESSING."""
    value = await conn.scalar(
        text(
            "SELECT count(*) FROM jobs WHERE user_id = :user_id"
            " AND status IN ('QUEUED', 'PROCESSING')"
        ),
        {"user_id": user_id},
    )
    return int(value or 0)


async def insert_job(conn: AsyncConnection, values: Mapping[str, Any]) -> RowMapping:
    """Insert a QUEUED job; returns it."""
    row = await conn.execute(
        text(
            "INSERT INTO jobs (job_id, user_id, result_id, assessment_name, status, token_cost,"
            " request_id) VALUES (:job_id, :user_id, :result_id, :assessment_name, 'QUEUED',"
            f" :token_cost, :request_id) RETURNING {JOB_COLUMNS}"
        ),
        dict(values),
    )
    return row.mappings().one()


async def insert_result(conn: AsyncConnection, values: Mapping[str, Any]) -> RowMapping:
    """Insert a result row; returns it."""
    row = await conn.execute(
        text(
            "INSERT INTO results (result_id, job_id, user_id, assessment_name, test_data,"
            " raw_responses) VALUES (:result_id, :job_id, :user_id, :assessment_name,"
            f" CAST(:test_data AS jsonb), CAST(:raw_responses AS jsonb)) RETURNING {RESULT_COLUMNS}"
        ),
        dict(values),
    )
    return row.mappings().one()


async def get_job(conn: AsyncConnection, job_id: uuid.UUID) -> RowMapping | None:
    """One job, or None."""
    row = await conn.execute(
        text(f"SELECT {JOB_COLUMNS} FROM jobs WHERE job_id = :job_id"), {"job_id": job_id}
    )
    return row.mappings().one_or_none()


async def get_result(conn: AsyncConnection, result_id: uuid.UUID) -> RowMapping | None:
    """One result row, or None."""
    row = await conn.execute(
        text(f"SELECT {RESULT_COLUMNS} FROM results WHERE result_id = :result_id"),
        {"result_id": result_id},
    )
    return row.mappings().one_or_none()


async def jobs_page(
    conn: AsyncConnection, user_id: str, status: str | None, after: tuple[Any, Any] | None,
    limit: int,
) -> Sequence[RowMapping]:  # fmt: skip
    """Jobs newest first, keyset-paginated by (created_at, job_id)."""
    rows = await conn.execute(
        text(
            f"SELECT {JOB_COLUMNS} FROM jobs"
            " WHERE (:user_id = '' OR user_id = :user_id)"
            " AND (CAST(:status AS job_status) IS NULL OR status = CAST(:status AS job_status))"
            " AND (CAST(:created AS timestamptz) IS NULL"
            "  OR (created_at, job_id) < (CAST(:created AS timestamptz), CAST(:job_id AS uuid)))"
            " ORDER BY created_at DESC, job_id DESC LIMIT :limit"
        ),
        {
            "user_id": user_id,
            "status": status,
            "created": after[0] if after else None,
            "job_id": after[1] if after else None,
            "limit": limit,
        },
    )
    return rows.mappings().all()


async def results_page(
    conn: AsyncConnection, user_id: str, after: tuple[Any, Any] | None, limit: int
) -> Sequence[RowMapping]:
    """Result rows newest first, keyset-paginated by (created_at, result_id)."""
    rows = await conn.execute(
        text(
            f"SELECT {RESULT_COLUMNS} FROM results WHERE (:user_id = '' OR user_id = :user_id)"
            " AND (CAST(:created AS timestamptz) IS NULL OR (created_at, result_id)"
            "  < (CAST(:created AS timestamptz), CAST(:result_id AS uuid)))"
            " ORDER BY created_at DESC, result_id DESC LIMIT :limit"
        ),
        {
            "user_id": user_id,
            "created": after[0] if after else None,
            "result_id": after[1] if after else None,
            "limit": limit,
        },
    )
    return rows.mappings().all()


async def update_result(
    conn: AsyncConnection, result_id: uuid.UUID, columns: Mapping[str, Any]
) -> RowMapping | None:
    """Set the given JSON or text columns of a result row; returns it, or None."""
    sets = ", ".join(
        f"{name} = CAST(:{name} AS jsonb)" if name != "assessment_name" else f"{name} = :{name}"
        for name in columns
    )
    row = await conn.execute(
        text(
            f"UPDATE results SET {sets}, updated_at = now() WHERE result_id = :result_id"
            f" RETURNING {RESULT_COLUMNS}"
        ),
        {"result_id": result_id, **columns},
    )
    return row.mappings().one_or_none()


async def link_result(
    conn: AsyncConnection, job_id: uuid.UUID, result_id: uuid.UUID
) -> RowMapping | None:
    """Link a result row to a job that has none; None when it already has one."""
    row = await conn.execute(
        text(
            "UPDATE jobs SET result_id = :result_id, updated_at = now()"
            f" WHERE job_id = :job_id AND result_id IS NULL RETURNING {JOB_COLUMNS}"
        ),
        {"job_id": job_id, "result_id": result_id},
    )
    return row.mappings().one_or_none()


async def transition(
    conn: AsyncConnection,
    rule: Transition,
    job_id: uuid.UUID,
    *,
    sets: str = "",
    where: str = "",
    params: Mapping[str, Any] | None = None,
) -> RowMapping | None:
    """Compare-and-set one job from rule.sources to rule.target; None when refused.
    `sets` and `where` add SQL fragments from this module's callers, never user text."""
    row = await conn.execute(
        text(
            "UPDATE jobs SET status = :target, version = version + 1, updated_at = now()"
            f"{', ' + sets if sets else ''}"
            f" WHERE job_id = :job_id AND status = ANY({STATUSES}) {where}"
            f" RETURNING {JOB_COLUMNS}"
        ),
        {
            "target": rule.target.value,
            "sources": rule.source_names,
            "job_id": job_id,
            **(params or {}),
        },
    )
    return row.mappings().one_or_none()


async def heartbeat(
    conn: AsyncConnection, job_id: uuid.UUID, worker_id: str, attempt: int
) -> RowMapping | None:
    """Extend the current attempt's lease; None when the attempt is not current."""
    row = await conn.execute(
        text(
            "UPDATE jobs SET heartbeat_at = now() WHERE job_id = :job_id"
            " AND status = 'PROCESSING' AND worker_id = :worker_id AND attempt = :attempt"
            " RETURNING cancel_requested, heartbeat_at"
        ),
        {"job_id": job_id, "worker_id": worker_id, "attempt": attempt},
    )
    return row.mappings().one_or_none()


async def request_cancel(conn: AsyncConnection, job_id: uuid.UUID) -> RowMapping | None:
    """Mark a PROCESSING job for cancellation (not a transition: no version bump)."""
    row = await conn.execute(
        text(
            "UPDATE jobs SET cancel_requested = true, updated_at = now()"
            f" WHERE job_id = :job_id AND status = 'PROCESSING' RETURNING {JOB_COLUMNS}"
        ),
        {"job_id": job_id},
    )
    return row.mappings().one_or_none()


async def set_test_result(conn: AsyncConnection, result_id: uuid.UUID, test_result: str) -> None:
    """Store the persona profile in the job's result row."""
    await conn.execute(
        text(
            "UPDATE results SET test_result = CAST(:test_result AS jsonb), updated_at = now()"
            " WHERE result_id = :result_id"
        ),
        {"result_id": result_id, "test_result": test_result},
    )
