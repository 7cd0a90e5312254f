"""Every SQL statement of the archive, named, in one place.

Each function runs on a connection inside the caller's transaction. Transitions are
compare-and-set UPDATEs (`WHERE status = ANY(:sources) AND …  RETURNING`), never
read-then-write: zero rows returned means the job was not in a state that allows it.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import RowMapping, text
from sqlalchemy.ext.asyncio import AsyncConnection

from archive_svc.states import Transition

JOB_COLUMNS = (
    "job_id, user_id, result_id, assessment_name, status, attempt, worker_id, version,"
    " cancel_requested, error_code, error_message, charge_count, token_cost, request_id,"
    " created_at, updated_at, started_at, heartbeat_at, finished_at, processing_time_ms"
)
RESULT_COLUMNS = (
    "result_id, job_id, user_id, assessment_name, test_data, raw_responses, test_result,"
    " created_at, updated_at"
)
STATUSES = "CAST(:sources AS job_status[])"


@dataclass(frozen=True)
class OutboxRow:
    """One message to publish after commit."""

    id: uuid.UUID
    subject: str
    kind: str
    job_id: uuid.UUID | None
    payload: bytes


@dataclass(frozen=True)
class Refund:
    """One refund of one charge."""

    user_id: str
    job_id: uuid.UUID
    charge_no: int
    amount: int
    reason: str


# --- tokens -----------------------------------------------------------------------------


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


# --- idempotency ------------------------------------------------------------------------


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


# --- jobs and results -------------------------------------------------------------------


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


# --- stuck jobs -------------------------------------------------------------------------

STUCK_WHERE = (
    "status = 'PROCESSING' AND (heartbeat_at < now() - make_interval(secs => :stuck_after)"
    " OR started_at < now() - make_interval(secs => :max_processing))"
)


async def count_processing(conn: AsyncConnection) -> int:
    """Jobs PROCESSING now."""
    value = await conn.scalar(text("SELECT count(*) FROM jobs WHERE status = 'PROCESSING'"))
    return int(value or 0)


async def count_stuck(conn: AsyncConnection, stuck_after: float, max_processing: float) -> int:
    """Jobs that are stuck now."""
    value = await conn.scalar(
        text(f"SELECT count(*) FROM jobs WHERE {STUCK_WHERE}"),
        {"stuck_after": stuck_after, "max_processing": max_processing},
    )
    return int(value or 0)


async def stuck_page(
    conn: AsyncConnection, stuck_after: float, max_processing: float,
    after: tuple[Any, Any] | None, limit: int,
) -> Sequence[RowMapping]:  # fmt: skip
    """Stuck jobs, stalest heartbeat first, keyset-paginated by (heartbeat_at, job_id)."""
    rows = await conn.execute(
        text(
            f"SELECT {JOB_COLUMNS} FROM jobs WHERE {STUCK_WHERE}"
            " AND (CAST(:hb AS timestamptz) IS NULL"
            "  OR (heartbeat_at, job_id) > (CAST(:hb AS timestamptz), CAST(:job_id AS uuid)))"
            " ORDER BY heartbeat_at, job_id LIMIT :limit"
        ),
        {
            "stuck_after": stuck_after,
            "max_processing": max_processing,
            "hb": after[0] if after else None,
            "job_id": after[1] if after else None,
            "limit": limit,
        },
    )
    return rows.mappings().all()


async def sweep_batch(
    conn: AsyncConnection, stuck_after: float, max_processing: float, limit: int
) -> Sequence[RowMapping]:
    """Fail up to `limit` stuck jobs with code STUCK and refund them, in one statement.
    Rows locked by a concurrent transition are skipped, and the lock re-checks the stuck
    condition on the latest row, so a job completed or heartbeating at the same instant is
    never swept."""
    rows = await conn.execute(
        text(
            f"WITH stuck AS (SELECT job_id FROM jobs WHERE {STUCK_WHERE}"
            " ORDER BY heartbeat_at LIMIT :limit FOR UPDATE SKIP LOCKED),"
            " swept AS (UPDATE jobs j SET status = 'FAILED', version = j.version + 1,"
            " error_code = 'STUCK', error_message = CASE"
            "  WHEN j.heartbeat_at < now() - make_interval(secs => :stuck_after)"
            "  THEN 'no heartbeat from worker ' || coalesce(j.worker_id, '?') || ' since '"
            "   || to_char(j.heartbeat_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"
            "  ELSE 'processing for longer than ' || :max_processing || ' s' END,"
            " finished_at = now(), updated_at = now()"
            f" FROM stuck WHERE j.job_id = stuck.job_id AND j.status = 'PROCESSING'"
            f" RETURNING {', '.join('j.' + c.strip() for c in JOB_COLUMNS.split(','))}),"
            " refunds AS (INSERT INTO ledger_entries (user_id, kind, amount, job_id, charge_no,"
            " reason) SELECT user_id, 'REFUND', token_cost, job_id, charge_count, 'stuck'"
            " FROM swept RETURNING user_id, amount),"
            " credited AS (UPDATE token_accounts a SET balance = a.balance + s.total,"
            " updated_at = now() FROM (SELECT user_id, sum(amount) AS total FROM refunds"
            " GROUP BY user_id) s WHERE a.user_id = s.user_id RETURNING 1)"
            " SELECT swept.*, (SELECT count(*) FROM credited) AS credited FROM swept"
        ),
        {"stuck_after": stuck_after, "max_processing": max_processing, "limit": limit},
    )
    return rows.mappings().all()


SWEEP_LOCK_KEY = 0x4153_5359  # "ASSY": one sweep at a time, across processes
RELAY_LOCK_KEY = 0x4153_5952  # one relay at a time keeps each job's events in order


async def try_advisory_lock(conn: AsyncConnection, key: int) -> bool:
    """Take a session-level advisory lock if free."""
    return bool(await conn.scalar(text("SELECT pg_try_advisory_lock(:key)"), {"key": key}))


async def advisory_unlock(conn: AsyncConnection, key: int) -> None:
    """Release a session-level advisory lock."""
    await conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})


# --- outbox relay -----------------------------------------------------------------------


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
