"""The access record: result reads that record their reader in the same statement, the
records' pages, and their pruning."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from archive_svc.store.jobs import RESULT_COLUMNS, Db

__all__ = [
    "ACCESS_RECORD_COLUMNS",
    "Reader",
    "access_records_page",
    "get_result_recorded",
    "prune_access_records",
    "results_page_recorded",
    "update_result_recorded",
]

ACCESS_RECORD_COLUMNS = (
    "record_id, read_at, user_id, reader, reader_identity, via, rpc, job_id, result_id"
)
_RECORD = (
    "INSERT INTO access_records (user_id, reader, reader_identity, via, rpc, job_id, result_id)"
)


@dataclass(frozen=True)
class Reader:
    """Who reads: a token's subject and identity, and the service it reads through (if any)."""

    subject: str
    identity: str
    via: str = ""


async def get_result_recorded(
    db: Db, result_id: uuid.UUID, owner: str, reader: Reader
) -> asyncpg.Record | None:
    """One result row (None unless it exists and is ``owner``'s, any owner when empty); its
    read recorded in the same statement unless the reader is its owner."""
    row: asyncpg.Record | None = await db.fetchrow(
        f"WITH r AS (SELECT {RESULT_COLUMNS} FROM results"
        " WHERE result_id = $1 AND ($2 = '' OR user_id = $2)),"
        f" recorded AS ({_RECORD} SELECT user_id, $3, $4, $5, 'GetResult', job_id, result_id"
        " FROM r WHERE user_id <> $3)"
        f" SELECT {RESULT_COLUMNS} FROM r",
        result_id,
        owner,
        reader.subject,
        reader.identity,
        reader.via,
    )
    return row


async def update_result_recorded(
    db: Db, result_id: uuid.UUID, columns: Mapping[str, Any], reader: Reader
) -> asyncpg.Record | None:
    """Set the given columns of a kept (not erased) result row (bytes as stored —
    ``archive_svc.inputs``, ``archive_svc.profiles`` — or text) and return it, or None. The
    reply carries the whole result, so it is a read: recorded in the same statement unless the
    reader owns the row. Column names come from the field-mask table, never from a caller."""
    names = list(columns)
    sets = ", ".join(f"{name} = ${k}" for k, name in enumerate(names, 5))
    row: asyncpg.Record | None = await db.fetchrow(
        f"WITH r AS (UPDATE results SET {sets}, updated_at = now() WHERE result_id = $1"
        f" AND erased_at IS NULL RETURNING {RESULT_COLUMNS}),"
        f" recorded AS ({_RECORD} SELECT user_id, $2, $3, $4, 'UpdateResult', job_id, result_id"
        " FROM r WHERE user_id <> $2)"
        f" SELECT {RESULT_COLUMNS} FROM r",
        result_id,
        reader.subject,
        reader.identity,
        reader.via,
        *(columns[name] for name in names),
    )
    return row


async def results_page_recorded(
    db: Db,
    user_id: str,
    after: tuple[object, uuid.UUID] | None,
    limit: int,
    shown: int,
    reader: Reader,
) -> Sequence[asyncpg.Record]:
    """``results_page``, recording the read of the first ``shown`` rows (those the page
    returns; the rest only tell whether a next page exists) that are not the reader's own."""
    rows: list[asyncpg.Record] = await db.fetch(
        f"WITH page AS (SELECT {RESULT_COLUMNS} FROM results WHERE ($1 = '' OR user_id = $1)"
        " AND erased_at IS NULL"
        " AND ($2::timestamptz IS NULL OR (created_at, result_id) < ($2, $3::uuid))"
        " ORDER BY created_at DESC, result_id DESC LIMIT $4),"
        f" recorded AS ({_RECORD} SELECT user_id, $6, $7, $8, 'ListResults', job_id, result_id"
        " FROM (SELECT * FROM page ORDER BY created_at DESC, result_id DESC LIMIT $5) shown"
        " WHERE user_id <> $6)"
        f" SELECT {RESULT_COLUMNS} FROM page ORDER BY created_at DESC, result_id DESC",
        user_id,
        after[0] if after else None,
        after[1] if after else None,
        limit,
        shown,
        reader.subject,
        reader.identity,
        reader.via,
    )
    return rows


async def access_records_page(
    db: Db, user_id: str, before: int | None, limit: int
) -> Sequence[asyncpg.Record]:
    """Access records newest first (by ``record_id``), of one user or (empty) everyone's."""
    rows: list[asyncpg.Record] = await db.fetch(
        f"SELECT {ACCESS_RECORD_COLUMNS} FROM access_records WHERE ($1 = '' OR user_id = $1)"
        " AND ($2::bigint IS NULL OR record_id < $2) ORDER BY record_id DESC LIMIT $3",
        user_id,
        before,
        limit,
    )
    return rows


async def prune_access_records(db: Db, older_than: float, limit: int) -> int:
    """Delete those of the ``limit`` oldest records (by ``record_id``) read more than
    ``older_than`` seconds ago; returns how many. Records are written in ``read_at`` order,
    so the old ones are a prefix of the primary key: a batch reads ``limit`` rows at most,
    however large the table (a batch that deletes fewer than ``limit`` reached the new ones)."""
    status: str = await db.execute(
        "DELETE FROM access_records WHERE record_id IN (SELECT record_id FROM access_records"
        " ORDER BY record_id LIMIT $2) AND read_at < now() - make_interval(secs => $1)",
        float(older_than),
        limit,
    )
    return int(status.split()[-1])
