"""The outbox: written with each transition, read and marked by the relay."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import RowMapping, text
from sqlalchemy.ext.asyncio import AsyncConnection


@dataclass(frozen=True)
class OutboxRow:
    """One message to publish after commit."""

    id: uuid.UUID
    subject: str
    kind: str
    job_id: uuid.UUID | None
    payload: bytes


async def insert_outbox(conn: AsyncConnection, rows: Sequence[OutboxRow]) -> None:
    """Insert outbox messages in one statement; the trigger wakes the relay at commit."""
    if not rows:
        return
    await conn.execute(
        text(
            "INSERT INTO outbox (id, subject, kind, job_id, payload)"
            " SELECT * FROM unnest(CAST(:ids AS uuid[]), CAST(:subjects AS text[]),"
            " CAST(:kinds AS text[]), CAST(:job_ids AS uuid[]), CAST(:payloads AS bytea[]))"
        ),
        {
            "ids": [r.id for r in rows],
            "subjects": [r.subject for r in rows],
            "kinds": [r.kind for r in rows],
            "job_ids": [r.job_id for r in rows],
            "payloads": [r.payload for r in rows],
        },
    )


async def unsent_outbox(conn: AsyncConnection, limit: int) -> Sequence[RowMapping]:
    """The oldest unsent outbox messages, in commit order per job."""
    rows = await conn.execute(
        text(
            "SELECT id, seq, subject, kind, payload FROM outbox WHERE sent_at IS NULL"
            " ORDER BY seq LIMIT :limit"
        ),
        {"limit": limit},
    )
    return rows.mappings().all()


async def mark_sent(conn: AsyncConnection, ids: Sequence[uuid.UUID]) -> None:
    """Mark outbox messages published."""
    await conn.execute(
        text("UPDATE outbox SET sent_at = now() WHERE id = ANY(CAST(:ids AS uuid[]))"),
        {"ids": list(ids)},
    )


async def count_unsent(conn: AsyncConnection) -> int:
    """Outbox messages not yet published."""
    value = await conn.scalar(text("SELECT count(*) FROM outbox WHERE sent_at IS NULL"))
    return int(value or 0)


async def purge_sent(conn: AsyncConnection, older_than: float) -> int:
    """Delete messages published more than older_than seconds ago; returns how many."""
    result = await conn.execute(
        text(
            "DELETE FROM outbox WHERE sent_at IS NOT NULL"
            " AND sent_at < now() - make_interval(secs => :age)"
        ),
        {"age": older_than},
    )
    return int(result.rowcount or 0)
