"""The outbox: written by every transition's statement, read by the relay, whose position is
one cursor row (migration 0009)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import asyncpg

from archive_svc.store.jobs import Db

OUTBOX_COLUMNS = (
    "o.id, o.seq, o.kind, o.subject, o.payload, o.job_id, o.event_type, o.user_id, o.result_id,"
    " o.status, o.job_version, o.attempt, o.error_code, o.error_message, o.processing_time_ms,"
    " o.assessment_name, o.charge_count, o.occurred_at"
)


NOT_PUBLISHED = (
    "o.txid >= (SELECT pg_snapshot_xmin(c.done) FROM outbox_cursor c)"
    " AND NOT outbox_published(o.txid, o.seq)"
)
"""An outbox row ``o`` not yet published. The range on ``txid`` is an index condition: the
cursor's xmin is read first, once. (Joined to ``outbox_cursor`` instead, the planner, which
keeps no statistics of the one-row cursor and guessed 800 rows, scanned the whole outbox and
called ``outbox_published`` on every row: 150 ms with 100,000 rows, and up to 25 s a call
under the bench's load, every 0.1 s behind a backlog.)"""
IN_STREAM = (
    "SELECT count(*) FROM (SELECT 1 FROM jobs q WHERE q.user_id = {user}"
    " AND q.status = 'QUEUED' AND q.queue_held_by IS NULL LIMIT {limit}) AS queued"
)
"""A user's QUEUED jobs whose queue message is not held (in the stream, or on its way there),
counted up to ``limit``. Found through the user's jobs in flight (``ix_jobs_inflight_user``):
no index names ``queue_held_by``, so a hold is a HOT update that leaves no index entry
behind (an index of the jobs not held filled with entries of held ones, and every count
walked them: 100 ms a page behind a bulk on the bench)."""
HELD = "j.user_id = {user} AND j.status = 'QUEUED' AND j.queue_held_by IS NOT NULL"
"""A user's held jobs (``j``), found the same way."""
BUDGET = (
    "coalesce((SELECT b.budget FROM unnest({priorities}::int2[], {budgets}::int4[])"
    " AS b(priority, budget) WHERE b.priority = {priority}), {otherwise})"
)
"""The budget of a lane's ``priority`` from the relay's arrays of priorities and budgets
(``OutboxRelay._budgets``), ``otherwise`` for a priority not there."""

RESULT_OF_ROW = (
    "SELECT r.test_data, r.raw_responses FROM results r WHERE o.kind = 'job'"
    " AND o.payload IS NULL AND r.result_id = o.result_id OFFSET 0"
)
JOB_OF_ROW = (
    "SELECT j.trace_context, j.locale, j.priority, j.queue_held_by"
    " FROM jobs j WHERE j.job_id = o.job_id OFFSET 0"
)
"""A page's row's result inputs and job columns, each looked up by its key after the page
is chosen (``OFFSET 0`` keeps them lookups: joined, PostgreSQL hashed the whole jobs table
for every page while the table was small, 1–2 ms a round on the bench), with whether its
job's queue message is held."""


@dataclass
class RelayPosition:
    """Where the relay is (migration 0009 explains the cursor): every row of a transaction
    visible in ``done`` is published; of the rows visible in ``batch`` and not in ``done``,
    those with ``seq <= batch_seq``. ``batch`` is None when the next round takes a new
    snapshot."""

    done: str
    batch: str | None = None
    batch_seq: int = 0

    def advanced(self, rows: Sequence[asyncpg.Record], limit: int) -> RelayPosition:
        """The position once ``rows``, the page fetched at this position, are published: on
        in the same batch when the page was full, else the batch is done."""
        if len(rows) == limit and rows:
            return RelayPosition(self.done, self.batch, int(rows[-1]["seq"]))
        assert self.batch is not None
        return RelayPosition(self.batch)


async def relay_position(db: Db) -> RelayPosition:
    """The position the last relay saved."""
    row = await db.fetchrow(
        "SELECT done::text AS done, batch::text AS batch, batch_seq FROM outbox_cursor"
    )
    assert row is not None, "migration 0009 writes the cursor's row"
    return RelayPosition(row["done"], row["batch"], int(row["batch_seq"]))


async def next_unsent(
    db: Db, position: RelayPosition, limit: int
) -> tuple[RelayPosition, Sequence[asyncpg.Record]]:
    """Save ``position`` (what is published so far; a new snapshot as its batch when it has
    none) and fetch the next page of its batch in ``seq`` order, in one statement. Returns
    the position with its batch, and the rows. A queue message without a payload comes with
    its result row's test_data and raw_responses, to build it from; every row with its job's
    trace_context, locale, priority (its lane) and ``queue_held_by`` (``JOB_OF_ROW``)."""
    rows: list[asyncpg.Record] = await db.fetch(
        "WITH c AS (UPDATE outbox_cursor SET done = $1::text::pg_snapshot,"
        " batch = coalesce($2::text::pg_snapshot, pg_current_snapshot()), batch_seq = $3"
        " RETURNING done, batch, batch_seq)"
        f" SELECT c.batch::text AS batch, p.* FROM c LEFT JOIN LATERAL (SELECT {OUTBOX_COLUMNS},"
        " r.test_data, r.raw_responses, j.trace_context, j.locale, j.priority,"
        " j.queue_held_by FROM (SELECT *"
        " FROM outbox o WHERE o.txid >= pg_snapshot_xmin(c.done)"
        " AND NOT pg_visible_in_snapshot(o.txid, c.done)"
        " AND pg_visible_in_snapshot(o.txid, c.batch) AND o.seq > c.batch_seq"
        " ORDER BY o.seq LIMIT $4) o"
        f" LEFT JOIN LATERAL ({RESULT_OF_ROW}) r ON true LEFT JOIN LATERAL ({JOB_OF_ROW}) j ON true"
        " ORDER BY o.seq) p ON true",
        position.done,
        position.batch,
        position.batch_seq,
        limit,
    )
    at = RelayPosition(position.done, rows[0]["batch"], position.batch_seq)
    return at, [row for row in rows if row["id"] is not None]


async def in_stream(db: Db, users: Sequence[str], most: int) -> dict[str, int]:
    """Each user's jobs queued in the stream (``IN_STREAM``), counted up to ``most``."""
    rows = await db.fetch(
        "SELECT u.user_id, ("
        + IN_STREAM.format(user="u.user_id", limit="$2")
        + ") AS queued FROM unnest($1::text[]) AS u(user_id)",
        list(users),
        most,
    )
    return {row["user_id"]: int(row["queued"]) for row in rows}


async def hold(db: Db, rows: Sequence[asyncpg.Record]) -> set[str]:
    """Hold back the queue messages of ``rows`` (outbox rows of QUEUED jobs not held yet):
    each job records the row it was held from. The ids of the jobs held (a job that has
    moved on since is not). Each job is found by its key (joined to the arrays, PostgreSQL
    hashed the whole jobs table for every page)."""
    held = await db.fetch(
        "UPDATE jobs j SET queue_held_by = ($1::uuid[])[array_position($2::uuid[], j.job_id)]"
        " WHERE j.job_id = ANY($2::uuid[]) AND j.status = 'QUEUED'"
        " AND j.queue_held_by IS NULL RETURNING j.job_id::text",
        [row["id"] for row in rows],
        [row["job_id"] for row in rows],
    )
    return {row["job_id"] for row in held}


async def release_held(
    db: Db,
    users: Sequence[str],
    queued_per_user: int,
    budgets: Mapping[int, int],
    limit: int,
) -> int:
    """Release held jobs of ``users``, up to ``limit``: each user's in the order submitted,
    no more than the user's room under its budget (``budgets`` by priority, of the user's
    highest held job; ``queued_per_user`` for a priority not there), round robin across
    users (every user's first turn, then every second…). Each job's hold is cleared and its
    queue message written to the outbox in one statement, and its ``updated_at`` set, as a
    re-publication sets it (the sweep counts a queued job lost from its message's leaving).
    The relay releases only once it has caught up, its position saved past every page it
    read, so every hold released is on a row it has passed (a relay that restarts before
    passing a page reads the page, and its holds, again first). Returns how many."""
    status: str = await db.execute(
        # MATERIALIZED: each user's budget and room are computed once. Inlined, every
        # reference to them walked the user's jobs again (six to eight walks a call, not three).
        "WITH waiting AS MATERIALIZED (SELECT u.user_id, "
        + BUDGET.format(
            priorities="$3",
            budgets="$4",
            priority=f"(SELECT max(j.priority) FROM jobs j WHERE {HELD.format(user='u.user_id')})",
            otherwise="$1",
        )
        + " AS budget FROM unnest($5::text[]) AS u(user_id)),"
        " room AS MATERIALIZED (SELECT u.user_id, u.budget - ("
        + IN_STREAM.format(user="u.user_id", limit="u.budget")
        + ") AS room FROM waiting u),"
        " pick AS (SELECT h.job_id, h.turn, h.created_at FROM room, LATERAL ("
        " SELECT j.job_id, j.created_at, row_number() OVER (ORDER BY j.created_at, o.seq)"
        " AS turn FROM jobs j LEFT JOIN outbox o ON o.id = j.queue_held_by"
        f" WHERE {HELD.format(user='room.user_id')}"
        " ORDER BY j.created_at, o.seq LIMIT room.room) h WHERE room.room > 0"
        " ORDER BY h.turn, h.created_at LIMIT $2),"
        " released AS (UPDATE jobs j SET queue_held_by = NULL, updated_at = now() FROM pick"
        " WHERE j.job_id = pick.job_id AND j.status = 'QUEUED'"
        " RETURNING j.job_id, j.user_id, j.result_id, j.assessment_name, j.charge_count,"
        " pick.turn, pick.created_at)"
        " INSERT INTO outbox (id, kind, job_id, user_id, result_id, assessment_name,"
        " charge_count, occurred_at) SELECT gen_random_uuid(), 'job', r.job_id, r.user_id,"
        " r.result_id, r.assessment_name, r.charge_count, now() FROM released r"
        " ORDER BY r.turn, r.created_at",
        queued_per_user,
        limit,
        list(budgets),
        list(budgets.values()),
        list(users),
    )
    return int(status.split()[-1])


async def held_users(db: Db, among: Sequence[str] | None = None) -> set[str]:
    """The users with a held job (of ``among``, when given: found through each one's jobs
    in flight; else all, a scan of the queued jobs the relay makes once as it starts)."""
    if among is None:
        rows = await db.fetch(
            "SELECT DISTINCT user_id FROM jobs WHERE status = 'QUEUED'"
            " AND queue_held_by IS NOT NULL"
        )
    else:
        rows = await db.fetch(
            "SELECT u.user_id FROM unnest($1::text[]) AS u(user_id)"
            f" WHERE EXISTS (SELECT 1 FROM jobs j WHERE {HELD.format(user='u.user_id')})",
            list(among),
        )
    return {row["user_id"] for row in rows}


async def ahead_unsent(
    db: Db,
    after_seq: int,
    limit: int,
    queued_per_user: int = 0,
    budgets: Mapping[int, int] | None = None,
) -> Sequence[asyncpg.Record]:
    """Unpublished queue messages that should not wait behind an outbox backlog, with
    ``seq`` after ``after_seq``, committed, in ``seq`` order, built as ``next_unsent``'s rows:
    the relay publishes these ahead of the backlog and skips them in their turn (a relay
    restarted in between sends them again, a copy the stream's duplicate window drops: the
    same ``Nats-Msg-Id``). Without ``queued_per_user``,
    the jobs above the default lane (``jobs.priority > 0``); with it, the jobs of every user
    within the budget of their lane (``budgets`` by priority, else ``queued_per_user``): a
    pupil's one job does not wait while the relay holds back a school's thousands. The
    backlog looked at is its first 10,000 queue messages, each job looked up by its key (a
    join let PostgreSQL hash the whole jobs table); each user is counted once."""
    budgets = budgets or {}
    rows: list[asyncpg.Record] = await db.fetch(
        "WITH backlog AS MATERIALIZED (SELECT o.id, o.seq, j.user_id, j.priority"
        " FROM (SELECT o.id, o.seq, o.job_id FROM outbox o"
        f" WHERE o.kind = 'job' AND o.seq > $1 AND {NOT_PUBLISHED} ORDER BY o.seq LIMIT 10000) o,"
        " LATERAL (SELECT j.user_id, j.priority FROM jobs j WHERE j.job_id = o.job_id"
        " AND j.queue_held_by IS NULL AND ($3 > 0 OR j.priority > 0) OFFSET 0) j),"
        " users AS (SELECT user_id, "
        + BUDGET.format(priorities="$4", budgets="$5", priority="max(k.priority)", otherwise="$3")
        + " AS budget FROM backlog k GROUP BY user_id),"
        # MATERIALIZED: inlined, PostgreSQL counted a user's queue once per backlog row
        # (872 counts, 126 ms, behind one user's 2,000 jobs on the bench), not once a user.
        " within AS MATERIALIZED (SELECT u.user_id FROM users u WHERE $3 = 0 OR ("
        + IN_STREAM.format(user="u.user_id", limit="u.budget + 1")
        + ") <= u.budget)"
        f" SELECT {OUTBOX_COLUMNS}, r.test_data, r.raw_responses, j.trace_context, j.locale,"
        " j.priority FROM backlog k JOIN within w ON w.user_id = k.user_id"
        " JOIN outbox o ON o.id = k.id JOIN jobs j ON j.job_id = o.job_id"
        " LEFT JOIN results r ON o.payload IS NULL AND r.result_id = o.result_id"
        " ORDER BY o.seq LIMIT $2",
        after_seq,
        limit,
        queued_per_user,
        list(budgets),
        list(budgets.values()),
    )
    return rows


async def save_position(db: Db, position: RelayPosition) -> None:
    """Save what is published (a relay stopping)."""
    await db.execute(
        "UPDATE outbox_cursor SET done = $1::text::pg_snapshot,"
        " batch = coalesce($2::text::pg_snapshot, $1::text::pg_snapshot), batch_seq = $3",
        position.done,
        position.batch,
        position.batch_seq,
    )


async def relay_marker(db: Db) -> str:
    """A transaction id committed now, and the relay woken: once the relay's saved batch
    sees it (``relay_passed``), the relay has begun a round after this moment, so whatever it
    fetched before is published."""
    marker: str = await db.fetchval(
        "SELECT pg_current_xact_id()::text FROM (SELECT pg_notify('assay_outbox', '')) AS woken"
    )
    return marker


async def relay_passed(db: Db, marker: str) -> bool:
    """Whether the relay has saved a batch taken after ``marker`` committed."""
    return bool(
        await db.fetchval(
            "SELECT pg_visible_in_snapshot($1::text::xid8, batch) FROM outbox_cursor", marker
        )
    )


UNSENT = f"FROM outbox o WHERE {NOT_PUBLISHED}"
"""Outbox rows not yet published."""


async def count_unsent(db: Db) -> int:
    """Outbox messages not yet published."""
    return int(await db.fetchval(f"SELECT count(*) {UNSENT}"))


async def purge_sent(db: Db, older_than: float) -> int:
    """Delete messages published more than older_than seconds ago (written, in fact: a row
    is published moments after its commit); returns how many."""
    status: str = await db.execute(
        "DELETE FROM outbox o USING outbox_cursor c"
        " WHERE o.txid < pg_snapshot_xmin(c.done)"
        " AND o.created_at < now() - make_interval(secs => $1)",
        float(older_than),
    )
    return int(status.split()[-1])
