"""The outbox: written by every transition's statement, read and marked by the relay."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import asyncpg

from archive_svc.store.jobs import Db

OUTBOX_COLUMNS = (
    "o.id, o.seq, o.kind, o.subject, o.payload, o.job_id, o.event_type, o.user_id, o.result_id,"
    " o.status, o.job_version, o.attempt, o.error_code, o.error_message, o.processing_time_ms,"
    " o.assessment_name, o.charge_count, o.occurred_at"
)


async def next_unsent(db: Db, sent: Sequence[uuid.UUID], limit: int) -> Sequence[asyncpg.Record]:
    """Mark the ``sent`` rows published and fetch the next unsent ones in commit order per
    job, in one statement. A queue message without a payload comes with its result row's
    test_data and raw_responses, to build it from; every row with its job's trace_context
    and locale."""
    rows: list[asyncpg.Record] = await db.fetch(
        "WITH marked AS (UPDATE outbox SET sent_at = now() WHERE id = ANY($1::uuid[]))"
        f" SELECT {OUTBOX_COLUMNS}, r.test_data, r.raw_responses, j.trace_context, j.locale"
        " FROM outbox o"
        " LEFT JOIN results r ON o.kind = 'job' AND o.payload IS NULL"
        " AND r.result_id = o.result_id LEFT JOIN jobs j ON j.job_id = o.job_id"
        " WHERE o.sent_at IS NULL AND NOT o.id = ANY($1::uuid[]) ORDER BY o.seq LIMIT $2",
        list(sent),
        limit,
    )
    return rows


async def count_unsent(db: Db) -> int:
    """Outbox messages not yet published."""
    return int(await db.fetchval("SELECT count(*) FROM outbox WHERE sent_at IS NULL"))


async def purge_sent(db: Db, older_than: float) -> int:
    """Delete messages published more than older_than seconds ago; returns how many."""
    status: str = await db.execute(
        "DELETE FROM outbox WHERE sent_at IS NOT NULL"
        " AND sent_at < now() - make_interval(secs => $1)",
        float(older_than),
    )
    return int(status.split()[-1])
