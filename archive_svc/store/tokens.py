"""Token accounts, the ledger, and the two debiting transitions (CREATE and RETRY), which run
as the functions of migration 0003."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import asyncpg

from archive_svc.store.jobs import Db


@dataclass(frozen=True)
class Submission:
    """Everything CreateSubmission writes."""

    user_id: str
    job_id: uuid.UUID
    result_id: uuid.UUID
    assessment_name: str
    cost: int
    request_id: str | None
    payload_hash: str
    max_inflight: int
    test_data: bytes
    raw_responses: bytes
    """The inputs as stored (``archive_svc.inputs``), sealed when a key file is set."""
    trace_context: str | None
    locale: str
    deadline: dt.datetime | None = None
    """The caller's deadline: past it, the submission is skipped and nothing is written."""
    tier: str | None = None
    """The tier the submitting token names; None: the user's tier in ``user_tiers``, else the
    default tier. ``create_submissions`` turns it into the job's priority."""


SUBMISSION_FIELDS = tuple(Submission.__dataclass_fields__)


async def create_submissions(
    db: Db, submissions: Sequence[Submission], priorities: Mapping[str, int]
) -> list[asyncpg.Record]:
    """Debit, insert the job, its result row and its two outbox rows (or replay the first
    request with that key) for each submission, set-based: one statement per table for the
    whole batch, in one transaction (``assay_create_submissions``, migration 0015; the queue
    message's row without a payload: the relay builds it from the result row). A row per
    submission with its position ``n``, its ``outcome`` (created, replayed, reused,
    insufficient, rate_limited, as if the submissions ran one after another in the order
    given) and its job's ``priority``: its tier's in ``priorities`` (the token's tier, else
    the user's in ``user_tiers``; 0 for none or an unknown one). A submission whose deadline
    has passed once the accounts are locked (PostgreSQL's clock) writes nothing and has no
    row. Accounts are locked in code-point order of user (callers sort by user the same way),
    so concurrent batches do not deadlock."""
    columns = [[getattr(s, name) for s in submissions] for name in SUBMISSION_FIELDS]
    rows: list[asyncpg.Record] = await db.fetch(
        CREATE_SUBMISSIONS, *columns, list(priorities), list(priorities.values())
    )
    return rows


CREATE_SUBMISSIONS = (
    "SELECT * FROM assay_create_submissions($1::text[], $2::uuid[], $3::uuid[], $4::text[],"
    " $5::bigint[], $6::text[], $7::text[], $8::int4[], $9::bytea[], $10::bytea[],"
    " $11::text[], $12::text[], $13::timestamptz[], $14::text[], $15::text[], $16::int2[])"
)
"""The batch, one array per field of ``Submission`` in its order, then the tiers' names and
priorities."""


async def set_user_tier(db: Db, user_id: str, tier: str) -> None:
    """Record a user's tier; an empty tier removes it."""
    if tier:
        await db.execute(
            "INSERT INTO user_tiers (user_id, tier) VALUES ($1, $2) ON CONFLICT (user_id)"
            " DO UPDATE SET tier = EXCLUDED.tier, updated_at = now()",
            user_id,
            tier,
        )
    else:
        await db.execute("DELETE FROM user_tiers WHERE user_id = $1", user_id)


async def retry_job(
    db: Db, job_id: uuid.UUID, owner: str, cost: int, max_inflight: int
) -> asyncpg.Record:
    """FAILED → QUEUED with a new debit, in one call. ``outcome``: retried, not_found,
    refused, insufficient, rate_limited."""
    row: asyncpg.Record = await db.fetchrow(
        "SELECT * FROM assay_retry_job($1, $2, $3, $4)", job_id, owner, cost, max_inflight
    )
    return row


async def grant(db: Db, user_id: str, amount: int, reason: str) -> asyncpg.Record:
    """Credit a user (creating the account) and write the GRANT entry; returns the entry
    with the new balance."""
    row: asyncpg.Record = await db.fetchrow(
        "WITH account AS ("
        " INSERT INTO token_accounts (user_id, balance) VALUES ($1, $2)"
        " ON CONFLICT (user_id) DO UPDATE"
        " SET balance = token_accounts.balance + EXCLUDED.balance, updated_at = now()"
        " RETURNING balance)"
        " INSERT INTO ledger_entries (user_id, kind, amount, reason)"
        " VALUES ($1, 'GRANT', $2, $3)"
        " RETURNING entry_id, user_id, kind, amount, job_id, charge_no, reason, created_at,"
        " (SELECT balance FROM account) AS balance",
        user_id,
        amount,
        reason,
    )
    return row


async def balance_of(db: Db, user_id: str) -> int:
    """A user's balance (0 without an account)."""
    value = await db.fetchval("SELECT balance FROM token_accounts WHERE user_id = $1", user_id)
    return int(value or 0)


async def ledger_page(
    db: Db, user_id: str, job_id: uuid.UUID | None, before: int | None, limit: int
) -> Sequence[asyncpg.Record]:
    """Ledger entries newest first, keyset-paginated by entry_id."""
    rows: list[asyncpg.Record] = await db.fetch(
        "SELECT entry_id, user_id, kind, amount, job_id, charge_no, reason, created_at"
        " FROM ledger_entries WHERE ($1 = '' OR user_id = $1)"
        " AND ($2::uuid IS NULL OR job_id = $2) AND ($3::bigint IS NULL OR entry_id < $3)"
        " ORDER BY entry_id DESC LIMIT $4",
        user_id,
        job_id,
        before,
        limit,
    )
    return rows
