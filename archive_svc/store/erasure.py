"""Erasure: the erasure log, and the batched statements that empty result rows and remove
queue messages from the outbox. Each statement erases one batch and counts it in the log in
the same transaction, so a crash between batches leaves a log that says what is done."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import asyncpg

from archive_svc.store.jobs import Db

ERASURE_COLUMNS = (
    "request_id, user_id, trigger, requested_by, requested_at, finished_at, jobs_cancelled,"
    " results_erased, outbox_messages_erased, queue_messages_deleted"
)
TERMINAL = "('COMPLETED', 'FAILED', 'CANCELLED')"
EMPTIED = (
    "test_data = ''::bytea, raw_responses = ''::bytea, test_result = NULL,"
    " erased_at = now(), updated_at = now()"
)
"""What an erased result row holds: nothing of the user's (empty inputs read as empty
messages, ``archive_svc.inputs``)."""


async def log_retention(db: Db, request_id: str, requested_by: str) -> None:
    """Open the erasure log's record of one retention pass."""
    await db.execute(
        "INSERT INTO erasures (request_id, trigger, requested_by) VALUES ($1, 'retention', $2)",
        request_id,
        requested_by,
    )


async def begin_erasure(
    db: Db, request_id: str, user_id: str | None, trigger: str, requested_by: str
) -> asyncpg.Record:
    """The erasure logged under request_id: a new one, or the one recorded before."""
    row: asyncpg.Record = await db.fetchrow(
        "WITH added AS (INSERT INTO erasures (request_id, user_id, trigger, requested_by)"
        f" VALUES ($1, $2, $3, $4) ON CONFLICT (request_id) DO NOTHING RETURNING {ERASURE_COLUMNS})"
        f" SELECT {ERASURE_COLUMNS}, true AS added FROM added UNION ALL"
        f" SELECT {ERASURE_COLUMNS}, false FROM erasures WHERE request_id = $1",
        request_id,
        user_id,
        trigger,
        requested_by,
    )
    return row


COUNTS = frozenset(
    {"jobs_cancelled", "results_erased", "outbox_messages_erased", "queue_messages_deleted"}
)


async def count_erased(db: Db, request_id: str, column: str, amount: int) -> None:
    """Add ``amount`` to one of an erasure's ``COUNTS``."""
    if column not in COUNTS:
        raise ValueError(f"not an erasure count: {column}")
    await db.execute(
        f"UPDATE erasures SET {column} = {column} + $2 WHERE request_id = $1", request_id, amount
    )


async def finish_erasure(db: Db, request_id: str) -> asyncpg.Record:
    """Mark an erasure done; ``finished_now`` is false when a concurrent repeat did first."""
    row: asyncpg.Record = await db.fetchrow(
        "WITH done AS (UPDATE erasures SET finished_at = now() WHERE request_id = $1"
        f" AND finished_at IS NULL RETURNING {ERASURE_COLUMNS})"
        f" SELECT {ERASURE_COLUMNS}, true AS finished_now FROM done UNION ALL"
        f" SELECT {ERASURE_COLUMNS}, false FROM erasures WHERE request_id = $1"
        " AND NOT EXISTS (SELECT 1 FROM done)",
        request_id,
    )
    return row


async def erase_user_results(db: Db, user_id: str, limit: int) -> int:
    """Empty up to ``limit`` of the user's kept result rows whose job is not in flight;
    returns how many."""
    status: str = await db.execute(
        f"UPDATE results SET {EMPTIED} WHERE result_id IN (SELECT r.result_id FROM results r"
        " WHERE r.user_id = $1 AND r.erased_at IS NULL AND NOT EXISTS (SELECT 1 FROM jobs j"
        " WHERE j.result_id = r.result_id AND j.status IN ('QUEUED', 'PROCESSING'))"
        " LIMIT $2 FOR UPDATE OF r SKIP LOCKED)",
        user_id,
        limit,
    )
    return int(status.split()[-1])


async def erase_user_queue_messages(db: Db, user_id: str, limit: int) -> int:
    """Delete up to ``limit`` queue messages (sent or not) of the user's jobs that are not in
    flight from the outbox; returns how many. Events stay: they carry no content."""
    status: str = await db.execute(
        "DELETE FROM outbox WHERE id IN (SELECT o.id FROM outbox o JOIN jobs j"
        " ON j.job_id = o.job_id WHERE j.user_id = $1 AND o.kind = 'job'"
        f" AND j.status IN {TERMINAL} LIMIT $2)",
        user_id,
        limit,
    )
    return int(status.split()[-1])


async def user_remaining(db: Db, user_id: str) -> asyncpg.Record:
    """(in_flight, kept): the user's jobs still in flight and result rows still kept."""
    row: asyncpg.Record = await db.fetchrow(
        "SELECT (SELECT count(*) FROM jobs WHERE user_id = $1"
        " AND status IN ('QUEUED', 'PROCESSING')) AS in_flight,"
        " (SELECT count(*) FROM results WHERE user_id = $1 AND erased_at IS NULL) AS kept",
        user_id,
    )
    return row


async def user_job_ids(db: Db, user_id: str) -> set[uuid.UUID]:
    """Every job id of the user (to recognise their messages on the jobs stream)."""
    rows: Sequence[asyncpg.Record] = await db.fetch(
        "SELECT job_id FROM jobs WHERE user_id = $1", user_id
    )
    return {row["job_id"] for row in rows}


async def expire_results(db: Db, retention: float, limit: int) -> asyncpg.Record:
    """Empty up to ``limit`` result rows of terminal jobs that finished more than
    ``retention`` seconds ago, and delete those jobs' queue messages from the outbox:
    (results, outbox) erased. A row created after the cut cannot have finished before it,
    so the scan walks the kept rows' index up to the cut only."""
    row: asyncpg.Record = await db.fetchrow(
        "WITH picked AS (SELECT r.result_id, j.job_id FROM results r JOIN jobs j"
        " ON j.result_id = r.result_id WHERE r.erased_at IS NULL"
        " AND r.created_at < now() - make_interval(secs => $1)"
        f" AND j.status IN {TERMINAL} AND j.finished_at < now() - make_interval(secs => $1)"
        " ORDER BY r.created_at LIMIT $2 FOR UPDATE OF r, j SKIP LOCKED),"
        f" erased AS (UPDATE results r SET {EMPTIED} FROM picked p"
        " WHERE r.result_id = p.result_id RETURNING 1),"
        " dropped AS (DELETE FROM outbox o USING picked p WHERE o.kind = 'job'"
        " AND o.job_id = p.job_id RETURNING 1)"
        " SELECT (SELECT count(*) FROM erased) AS results,"
        " (SELECT count(*) FROM dropped) AS outbox",
        float(retention),
        limit,
    )
    return row


async def oldest_retained_result(db: Db) -> asyncpg.Record | None:
    """When the oldest result row still holding its content was created (an index's first
    entry), or None."""
    row: asyncpg.Record | None = await db.fetchrow(
        "SELECT created_at FROM results WHERE erased_at IS NULL ORDER BY created_at LIMIT 1"
    )
    return row
