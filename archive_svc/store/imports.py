"""The import from the original system (migration 0014): what is already imported, and one
batch written by a few statements on one connection, inside the caller's transaction."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, fields

import asyncpg

from archive_svc.store.jobs import JOBS

__all__ = [
    "IMPORT_LOCK",
    "Batch",
    "EntryRow",
    "JobRow",
    "OutboxRow",
    "RecordRow",
    "ResultRow",
    "imported_balances",
    "imported_ids",
    "imported_jobs",
    "lock_balances",
    "taken_ids",
    "write_batch",
]

IMPORT_LOCK = 0x617373_6179_01
"""The advisory lock one import batch holds for its transaction: batches never interleave."""


@dataclass(frozen=True)
class JobRow:
    """One imported job as written to ``jobs`` (None times: the transaction's now())."""

    job_id: uuid.UUID
    user_id: str
    result_id: uuid.UUID | None
    assessment_name: str
    status: str
    attempt: int
    version: int
    error_code: str | None
    error_message: str | None
    charge_count: int
    token_cost: int
    created_at: dt.datetime
    updated_at: dt.datetime | None
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    processing_time_ms: int | None
    locale: str
    priority: int = 0
    """The original's ``priority`` as the job's lane (``jobs.priority``, migration 0013)."""


@dataclass(frozen=True)
class ResultRow:
    """One imported result row, its columns as stored (sealed when a key is set)."""

    result_id: uuid.UUID
    job_id: uuid.UUID
    user_id: str
    assessment_name: str
    test_data: bytes
    raw_responses: bytes
    test_result: bytes | None
    created_at: dt.datetime
    updated_at: dt.datetime


@dataclass(frozen=True)
class RecordRow:
    """One row of ``imported_jobs``."""

    original_job_id: str
    job_id: uuid.UUID
    result_id: uuid.UUID | None
    user_id: str
    original_status: str
    original_priority: int
    original_retry_count: int
    in_flight: str | None


@dataclass(frozen=True)
class EntryRow:
    """One ledger entry."""

    user_id: str
    kind: str
    amount: int
    job_id: uuid.UUID | None
    charge_no: int | None
    reason: str


@dataclass(frozen=True)
class OutboxRow:
    """An in-flight job's queue message (``event_type`` None) or event."""

    kind: str
    job_id: uuid.UUID
    event_type: str | None
    user_id: str
    result_id: uuid.UUID | None
    status: str | None
    job_version: int | None
    error_code: str | None
    error_message: str | None
    assessment_name: str


@dataclass
class Batch:
    """Everything one batch writes."""

    jobs: list[JobRow]
    results: list[ResultRow]
    records: list[RecordRow]
    entries: list[EntryRow]
    outbox: list[OutboxRow]
    account_deltas: dict[str, int]
    """Per user, the change of their balance (0: the account is only created)."""
    balances: dict[str, int]
    """Per user, the original balance now imported (``imported_balances``)."""


def _columns(rows: Sequence[object], kind: type) -> list[list[object]]:
    names = [f.name for f in fields(kind)]
    return [[getattr(row, name) for row in rows] for name in names]


async def imported_ids(conn: asyncpg.Connection, original_ids: Sequence[str]) -> set[str]:
    """The original job ids already imported."""
    rows = await conn.fetch(
        "SELECT original_job_id FROM imported_jobs WHERE original_job_id = ANY($1::text[])",
        list(original_ids),
    )
    return {row["original_job_id"] for row in rows}


async def taken_ids(
    conn: asyncpg.Connection, job_ids: Sequence[uuid.UUID], result_ids: Sequence[uuid.UUID]
) -> tuple[set[uuid.UUID], set[uuid.UUID]]:
    """Of these job and result ids, those Assay already uses."""
    jobs = await conn.fetch("SELECT job_id FROM jobs WHERE job_id = ANY($1::uuid[])", job_ids)
    results = await conn.fetch(
        "SELECT result_id FROM results WHERE result_id = ANY($1::uuid[])", result_ids
    )
    return {r["job_id"] for r in jobs}, {r["result_id"] for r in results}


async def lock_balances(
    conn: asyncpg.Connection, user_ids: Sequence[str]
) -> tuple[dict[str, int], dict[str, int]]:
    """The original balances already imported, and the Assay balances (accounts locked, in
    user order, as the submissions lock them)."""
    imported = await conn.fetch(
        "SELECT user_id, original_balance FROM imported_balances WHERE user_id = ANY($1::text[])",
        list(user_ids),
    )
    accounts = await conn.fetch(
        "SELECT user_id, balance FROM token_accounts WHERE user_id = ANY($1::text[])"
        " ORDER BY user_id FOR UPDATE",
        list(user_ids),
    )
    return (
        {r["user_id"]: int(r["original_balance"]) for r in imported},
        {r["user_id"]: int(r["balance"]) for r in accounts},
    )


async def write_batch(conn: asyncpg.Connection, batch: Batch) -> dict[str, int]:
    """Write one batch (accounts, ledger, jobs, results, records, outbox); returns the
    balances of the accounts it touched."""
    users = sorted(batch.account_deltas)
    deltas = [batch.account_deltas[user] for user in users]
    # Created at 0, then moved: a correction may be negative, which an INSERT's row may not.
    await conn.execute(
        "INSERT INTO token_accounts (user_id, balance) SELECT u, 0 FROM unnest($1::text[]) u"
        " ON CONFLICT (user_id) DO NOTHING",
        users,
    )
    # Locked in user order, as submissions lock them, so the two never deadlock.
    await conn.execute(
        "SELECT 1 FROM token_accounts WHERE user_id = ANY($1::text[]) ORDER BY user_id FOR UPDATE",
        users,
    )
    accounts = await conn.fetch(
        "UPDATE token_accounts a SET balance = a.balance + s.d, updated_at = now()"
        " FROM unnest($1::text[], $2::bigint[]) AS s(u, d) WHERE a.user_id = s.u AND s.d <> 0"
        " RETURNING a.user_id, a.balance",
        users,
        deltas,
    )
    if batch.entries:
        await conn.execute(
            "INSERT INTO ledger_entries (user_id, kind, amount, job_id, charge_no, reason)"
            " SELECT u, k::ledger_kind, a, j, c, r FROM unnest($1::text[], $2::text[],"
            " $3::bigint[], $4::uuid[], $5::int4[], $6::text[]) AS s(u, k, a, j, c, r)",
            *_columns(batch.entries, EntryRow),
        )
    if batch.jobs:
        await conn.execute(
            "INSERT INTO jobs (job_id, user_id, result_id, assessment_name, status, attempt,"
            " version, error_code, error_message, charge_count, token_cost, created_at,"
            " updated_at, started_at, finished_at, processing_time_ms, locale, priority)"
            " SELECT j, u, r, n, s::job_status, a, v, ec, em, cc, tc, ca, coalesce(ua, now()),"
            " sa, CASE WHEN s = 'FAILED' THEN coalesce(fa, now()) ELSE fa END, pt, l, p"
            " FROM unnest($1::uuid[], $2::text[], $3::uuid[], $4::text[], $5::text[],"
            " $6::int4[], $7::bigint[], $8::text[], $9::text[], $10::int4[], $11::bigint[],"
            " $12::timestamptz[], $13::timestamptz[], $14::timestamptz[], $15::timestamptz[],"
            " $16::bigint[], $17::text[], $18::int2[])"
            " AS x(j, u, r, n, s, a, v, ec, em, cc, tc, ca, ua, sa, fa, pt, l, p)",
            *_columns(batch.jobs, JobRow),
        )
    if batch.results:
        await conn.execute(
            "INSERT INTO results (result_id, job_id, user_id, assessment_name, test_data,"
            " raw_responses, test_result, created_at, updated_at)"
            " SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[],"
            " $5::bytea[], $6::bytea[], $7::bytea[], $8::timestamptz[], $9::timestamptz[])",
            *_columns(batch.results, ResultRow),
        )
    if batch.records:
        await conn.execute(
            "INSERT INTO imported_jobs (original_job_id, job_id, result_id, user_id,"
            " original_status, original_priority, original_retry_count, in_flight)"
            " SELECT * FROM unnest($1::text[], $2::uuid[], $3::uuid[], $4::text[], $5::text[],"
            " $6::int4[], $7::int4[], $8::text[])",
            *_columns(batch.records, RecordRow),
        )
    if batch.balances:
        await conn.execute(
            "INSERT INTO imported_balances (user_id, original_balance)"
            " SELECT * FROM unnest($1::text[], $2::bigint[])"
            " ON CONFLICT (user_id) DO UPDATE"
            " SET original_balance = EXCLUDED.original_balance, updated_at = now()",
            list(batch.balances),
            list(batch.balances.values()),
        )
    if batch.outbox:
        # The queue message has no payload: the relay builds it from the job's result row.
        await conn.execute(
            "INSERT INTO outbox (id, kind, job_id, event_type, user_id, result_id, status,"
            " job_version, attempt, error_code, error_message, assessment_name, charge_count,"
            " occurred_at)"
            " SELECT gen_random_uuid(), k, j, e, u, r, s::job_status, v,"
            " CASE WHEN k = 'event' THEN 0 END, ec, em, n, 1, now()"
            " FROM unnest($1::text[], $2::uuid[], $3::text[], $4::text[], $5::uuid[],"
            " $6::text[], $7::bigint[], $8::text[], $9::text[], $10::text[])"
            " AS x(k, j, e, u, r, s, v, ec, em, n) ORDER BY j, k DESC",
            *_columns(batch.outbox, OutboxRow),
        )
    return {row["user_id"]: int(row["balance"]) for row in accounts}


async def imported_jobs(
    db: asyncpg.Connection | asyncpg.Pool, original_ids: Sequence[str]
) -> list[asyncpg.Record]:
    """The import records of these original ids, each with its job and its result row's
    stored inputs and profile."""
    columns = ", ".join(f"j.{name.strip()}" for name in JOBS.split(","))
    rows: list[asyncpg.Record] = await db.fetch(
        "SELECT i.original_job_id, i.original_status, i.original_priority,"
        f" i.original_retry_count, {columns}, r.test_data, r.test_result"
        " FROM imported_jobs i JOIN jobs j ON j.job_id = i.job_id"
        " LEFT JOIN results r ON r.result_id = j.result_id"
        " WHERE i.original_job_id = ANY($1::text[])",
        list(original_ids),
    )
    return rows


async def imported_balances(
    db: asyncpg.Connection | asyncpg.Pool, user_ids: Sequence[str]
) -> list[asyncpg.Record]:
    """The imported balances of these users, with their Assay balances."""
    rows: list[asyncpg.Record] = await db.fetch(
        "SELECT b.user_id, b.original_balance, coalesce(a.balance, 0) AS balance"
        " FROM imported_balances b LEFT JOIN token_accounts a ON a.user_id = b.user_id"
        " WHERE b.user_id = ANY($1::text[])",
        list(user_ids),
    )
    return rows
