"""Token accounts, the ledger and idempotency keys."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import RowMapping, text
from sqlalchemy.ext.asyncio import AsyncConnection


@dataclass(frozen=True)
class Refund:
    """One refund of one charge."""

    user_id: str
    job_id: uuid.UUID
    charge_no: int
    amount: int
    reason: str


async def grant(conn: AsyncConnection, user_id: str, amount: int, reason: str) -> RowMapping:
    """Credit a user (creating the account) and write the GRANT entry; returns the entry
    with the new balance."""
    row = await conn.execute(
        text(
            "WITH account AS ("
            " INSERT INTO token_accounts (user_id, balance) VALUES (:user_id, :amount)"
            " ON CONFLICT (user_id) DO UPDATE"
            " SET balance = token_accounts.balance + EXCLUDED.balance, updated_at = now()"
            " RETURNING balance)"
            " INSERT INTO ledger_entries (user_id, kind, amount, reason)"
            " VALUES (:user_id, 'GRANT', :amount, :reason)"
            " RETURNING entry_id, user_id, kind, amount, job_id, charge_no, reason, created_at,"
            " (SELECT balance FROM account) AS balance"
        ),
        {"user_id": user_id, "amount": amount, "reason": reason},
    )
    return row.mappings().one()


async def debit(
    conn: AsyncConnection, user_id: str, amount: int, job_id: uuid.UUID, charge_no: int
) -> int | None:
    """Debit a charge if the balance covers it; returns the new balance, or None (nothing
    written). The UPDATE locks the account row, serialising one user's debits."""
    balance = await conn.scalar(
        text(
            "UPDATE token_accounts SET balance = balance - :amount, updated_at = now()"
            " WHERE user_id = :user_id AND balance >= :amount RETURNING balance"
        ),
        {"user_id": user_id, "amount": amount},
    )
    if balance is None:
        return None
    await conn.execute(
        text(
            "INSERT INTO ledger_entries (user_id, kind, amount, job_id, charge_no, reason)"
            " VALUES (:user_id, 'DEBIT', :amount, :job_id, :charge_no, 'analysis')"
        ),
        {"user_id": user_id, "amount": -amount, "job_id": job_id, "charge_no": charge_no},
    )
    return int(balance)


async def refund(conn: AsyncConnection, refunds: Sequence[Refund]) -> None:
    """Write REFUND entries and credit the balances, in one statement for any number.
    The unique (job_id, charge_no, kind) constraint makes a second refund impossible."""
    if not refunds:
        return
    await conn.execute(
        text(
            "WITH r AS (SELECT * FROM unnest(CAST(:user_ids AS text[]), CAST(:job_ids AS uuid[]),"
            " CAST(:charge_nos AS int[]), CAST(:amounts AS bigint[]), CAST(:reasons AS text[]))"
            " AS t(user_id, job_id, charge_no, amount, reason)),"
            " entries AS (INSERT INTO ledger_entries (user_id, kind, amount, job_id, charge_no,"
            " reason) SELECT user_id, 'REFUND', amount, job_id, charge_no, reason FROM r"
            " RETURNING user_id, amount)"
            " UPDATE token_accounts a SET balance = a.balance + s.total, updated_at = now()"
            " FROM (SELECT user_id, sum(amount) AS total FROM entries GROUP BY user_id) s"
            " WHERE a.user_id = s.user_id"
        ),
        {
            "user_ids": [r.user_id for r in refunds],
            "job_ids": [r.job_id for r in refunds],
            "charge_nos": [r.charge_no for r in refunds],
            "amounts": [r.amount for r in refunds],
            "reasons": [r.reason for r in refunds],
        },
    )


async def balance_of(conn: AsyncConnection, user_id: str) -> int:
    """A user's balance (0 without an account)."""
    value = await conn.scalar(
        text("SELECT balance FROM token_accounts WHERE user_id = :user_id"), {"user_id": user_id}
    )
    return int(value or 0)


async def ledger_page(
    conn: AsyncConnection, user_id: str, job_id: uuid.UUID | None, before: int | None, limit: int
) -> Sequence[RowMapping]:
    """Ledger entries newest first, keyset-paginated by entry_id."""
    rows = await conn.execute(
        text(
            "SELECT entry_id, user_id, kind, amount, job_id, charge_no, reason, created_at"
            " FROM ledger_entries"
            " WHERE (:user_id = '' OR user_id = :user_id)"
            " AND (CAST(:job_id AS uuid) IS NULL OR job_id = CAST(:job_id AS uuid))"
            " AND (CAST(:before AS bigint) IS NULL OR entry_id < CAST(:before AS bigint))"
            " ORDER BY entry_id DESC LIMIT :limit"
        ),
        {"user_id": user_id, "job_id": job_id, "before": before, "limit": limit},
    )
    return rows.mappings().all()


async def claim_request(
    conn: AsyncConnection, user_id: str, request_id: str, payload_hash: str
) -> RowMapping | None:
    """Claim (user, request_id) for this transaction. Returns None when claimed, or the
    existing row (payload_hash, response) when a first request already committed. A
    concurrent first request makes this wait for its commit."""
    claimed = await conn.scalar(
        text(
            "INSERT INTO idempotency_keys (user_id, request_id, payload_hash)"
            " VALUES (:user_id, :request_id, :hash) ON CONFLICT DO NOTHING RETURNING 1"
        ),
        {"user_id": user_id, "request_id": request_id, "hash": payload_hash},
    )
    if claimed:
        return None
    row = await conn.execute(
        text(
            "SELECT payload_hash, response FROM idempotency_keys"
            " WHERE user_id = :user_id AND request_id = :request_id"
        ),
        {"user_id": user_id, "request_id": request_id},
    )
    return row.mappings().one()


async def save_reply(
    conn: AsyncConnection, user_id: str, request_id: str, job_id: uuid.UUID, response: bytes
) -> None:
    """Store the first reply for replay."""
    await conn.execute(
        text(
            "UPDATE idempotency_keys SET job_id = :job_id, response = :response"
            " WHERE user_id = :user_id AND request_id = :request_id"
        ),
        {"user_id": user_id, "request_id": request_id, "job_id": job_id, "response": response},
    )
