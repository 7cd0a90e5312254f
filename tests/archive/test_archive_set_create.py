"""Submissions created set-based (``assay_create_submissions``, migration 0015): each batch
has the outcomes, balances and rows that the previous release's per-item function gives the
same submissions one after another; concurrent batches over the same users neither deadlock
nor overdraw; and the previous release's statement still works, waking the relay."""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import uuid
from collections import Counter
from typing import Any

import asyncpg
import pytest

from archive_svc import store
from archive_svc.store.tokens import SUBMISSION_FIELDS, Submission
from tests.archive.helpers import check_invariants, dsn
from tests.archive.test_archive_profiles import migrate

RELEASE_0_1_0_CREATE = (
    "SELECT s.n, f.* FROM unnest($1::text[], $2::uuid[], $3::uuid[], $4::text[],"
    " $5::bigint[], $6::text[], $7::text[], $8::int4[], $9::bytea[], $10::bytea[],"
    " $11::text[], $12::text[], $13::timestamptz[]) WITH ORDINALITY AS"
    " s(user_id, job_id, result_id, name, cost, request, hash, max_inflight, test_data, raw,"
    " trace, locale, deadline, n)"
    " CROSS JOIN LATERAL assay_create_submission(s.user_id, s.job_id, s.result_id, s.name,"
    " s.cost, s.request, s.hash, s.max_inflight, s.test_data, s.raw, NULL::bytea, s.trace,"
    " s.locale) f"
    " WHERE s.deadline IS NULL OR clock_timestamp() < s.deadline"
    " ORDER BY s.n"
)
"""The create statement of release 0.1.0's archive (``archive_svc/store/tokens.py`` at
83ff2ea): the per-item function of migration 0012 over the batch."""
RELEASE_0_1_0_FIELDS = tuple(name for name in SUBMISSION_FIELDS if name != "tier")
"""The arrays 0.1.0's statement takes (a submission had no tier then)."""
NO_TIERS: dict[str, int] = {}
"""Every job at priority 0, as 0.1.0 writes them."""

TRACE = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
REPLY = ("n", "outcome", "balance", "first_cost", "first_response", "job_id", "status")
TABLES = {
    "token_accounts": "SELECT user_id, balance FROM token_accounts ORDER BY user_id",
    "ledger_entries": "SELECT user_id, kind, amount, job_id, charge_no, reason"
    " FROM ledger_entries ORDER BY entry_id",
    "jobs": "SELECT job_id, user_id, result_id, assessment_name, status, attempt, version,"
    " charge_count, token_cost, request_id, trace_context, locale FROM jobs ORDER BY job_id",
    "results": "SELECT result_id, job_id, user_id, assessment_name, test_data, raw_responses"
    " FROM results ORDER BY result_id",
    "outbox": "SELECT kind, job_id, event_type, user_id, result_id, status, job_version,"
    " attempt, assessment_name, charge_count, payload, subject FROM outbox ORDER BY seq",
    "idempotency_keys": "SELECT user_id, request_id, payload_hash, job_id, token_cost,"
    " balance_after, response FROM idempotency_keys ORDER BY user_id, request_id",
}
"""What a create writes, without generated ids and times."""


def submission(user: str, **fields: Any) -> Submission:
    values: dict[str, Any] = {
        "user_id": user,
        "job_id": uuid.uuid4(),
        "result_id": uuid.uuid4(),
        "assessment_name": "AI-Driven Talent Mapping",
        "cost": 1,
        "request_id": None,
        "payload_hash": "h1",
        "max_inflight": 0,
        "test_data": b"\x08\x01",
        "raw_responses": b"",
        "trace_context": None,
        "locale": "id",
    }
    values.update(fields)
    return Submission(**values)


def random_batch(rng: random.Random, size: int) -> list[Submission]:
    """A batch sorted by user, as the archive sends it: repeated request ids (within the
    batch and from earlier ones), other payloads, costs of 1 or 2, per-item in-flight limits,
    and some deadlines already passed."""
    past = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5)
    future = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)
    batch = [
        submission(
            rng.choice(["ann", "bo", "cy", "dee", "eve"]),
            cost=rng.choice([1, 1, 1, 2]),
            request_id=rng.choice([None, None, "r1", "r2", "r3"]),
            payload_hash=rng.choice(["h1", "h1", "h2"]),
            max_inflight=rng.choice([0, 0, 2, 4, 7]),
            deadline=rng.choice([None, None, None, future, past]),
            trace_context=rng.choice([None, TRACE]),
            locale=rng.choice(["id", "en"]),
        )
        for _ in range(size)
    ]
    return sorted(batch, key=lambda s: s.user_id)


async def written(conn: asyncpg.Connection) -> dict[str, list[tuple[Any, ...]]]:
    return {table: [tuple(r) for r in await conn.fetch(query)] for table, query in TABLES.items()}


def replies(rows: list[asyncpg.Record]) -> list[tuple[Any, ...]]:
    return [tuple(row[name] for name in REPLY) for row in rows]


async def test_a_batch_matches_the_per_item_function(database: str) -> None:
    """Twelve random batches over five users: in one transaction, 0.1.0's statement; rolled
    back; then the set-based one, kept for the next batch. The replies and every row written
    are the same."""
    rng = random.Random(15)
    conn = await asyncpg.connect(dsn(database))
    try:
        for user, balance in (("ann", 6), ("bo", 3), ("cy", 30)):
            await store.grant(conn, user, balance, "t")
        await conn.execute("INSERT INTO token_accounts VALUES ('dee', 0)")  # eve has none
        outcomes: Counter[str] = Counter()
        for _ in range(12):
            batch = random_batch(rng, rng.randint(1, 24))
            columns = [[getattr(s, name) for s in batch] for name in RELEASE_0_1_0_FIELDS]
            transaction = conn.transaction()
            await transaction.start()
            before = replies(await conn.fetch(RELEASE_0_1_0_CREATE, *columns))
            wrote_before = await written(conn)
            await transaction.rollback()
            async with conn.transaction():
                after = replies(await store.create_submissions(conn, batch, NO_TIERS))
                wrote_after = await written(conn)
            assert after == before
            assert wrote_after == wrote_before
            outcomes.update(reply[1] for reply in after)
            if rng.random() < 0.5:  # some jobs leave the in-flight count
                await conn.execute(
                    "UPDATE jobs SET status = 'COMPLETED' WHERE job_id IN"
                    " (SELECT job_id FROM jobs WHERE status = 'QUEUED' LIMIT 3)"
                )
        assert set(outcomes) == {"created", "replayed", "reused", "insufficient", "rate_limited"}
    finally:
        await conn.close()


async def test_one_users_balance_runs_out_midway(database: str) -> None:
    """Five submissions of one user with three tokens, a repeat of the first request id and
    another user's between: three created, the repeat replayed with the first's balance, the
    rest insufficient."""
    conn = await asyncpg.connect(dsn(database))
    try:
        await store.grant(conn, "ann", 3, "t")
        await store.grant(conn, "bo", 1, "t")
        batch = [
            submission("ann", request_id="a"),
            submission("ann", request_id="a"),
            submission("ann", request_id="a", payload_hash="h2"),
            submission("ann"),
            submission("ann"),
            submission("ann"),
            submission("bo", max_inflight=1),
            submission("bo", max_inflight=1),
        ]
        rows = await store.create_submissions(conn, batch, NO_TIERS)
        assert [(r["outcome"], r["balance"]) for r in rows] == [
            ("created", 2),
            ("replayed", 2),
            ("reused", 2),
            ("created", 1),
            ("created", 0),
            ("insufficient", 0),
            ("created", 0),
            ("insufficient", 0),
        ]
        assert rows[1]["job_id"] == rows[0]["job_id"] == batch[0].job_id
        assert await conn.fetchval("SELECT count(*) FROM idempotency_keys") == 1
    finally:
        await conn.close()
    counts = await check_invariants(database)
    assert counts["jobs"] == 4


@pytest.mark.parametrize("batches", [24])
async def test_concurrent_batches_over_the_same_users(database: str, batches: int) -> None:
    """Batches racing over overlapping users, each with a connection of its own and no retry:
    none deadlocks, each user gets exactly its balance's worth of jobs, the ledger sums (I1)."""
    users = [f"u{n}" for n in range(6)]
    balances = {user: 10 + 3 * n for n, user in enumerate(users)}
    conn = await asyncpg.connect(dsn(database))
    try:
        for user, balance in balances.items():
            await store.grant(conn, user, balance, "t")
    finally:
        await conn.close()
    rng = random.Random(7)

    async def one(batch: list[Submission]) -> list[str]:
        c = await asyncpg.connect(dsn(database))
        try:
            return [row["outcome"] for row in await store.create_submissions(c, batch, NO_TIERS)]
        finally:
            await c.close()

    work = [
        sorted(
            (submission(rng.choice(users)) for _ in range(rng.randint(4, 16))),
            key=lambda s: s.user_id,
        )
        for _ in range(batches)
    ]
    results = await asyncio.gather(*(one(batch) for batch in work))
    created = Counter(
        s.user_id
        for batch, outcomes in zip(work, results, strict=True)
        for s, outcome in zip(batch, outcomes, strict=True)
        if outcome == "created"
    )
    asked = Counter(s.user_id for batch in work for s in batch)
    assert created == {user: min(balances[user], asked[user]) for user in users if asked[user]}
    await check_invariants(database)


async def test_the_previous_releases_create_still_works_and_wakes_the_relay(
    database: str,
) -> None:
    """0.1.0's statement at this schema: its per-item function still creates, and its outbox
    rows still notify the relay's channel; so does the set-based create."""
    conn = await asyncpg.connect(dsn(database))
    listener = await asyncpg.connect(dsn(database))
    woken: asyncio.Queue[str] = asyncio.Queue()
    try:
        await listener.add_listener("assay_outbox", lambda *args: woken.put_nowait(args[2]))
        await store.grant(conn, "ann", 5, "t")
        for create in (
            lambda batch: conn.fetch(
                RELEASE_0_1_0_CREATE,
                *([getattr(s, name) for s in batch] for name in RELEASE_0_1_0_FIELDS),
            ),
            lambda batch: store.create_submissions(conn, batch, NO_TIERS),
        ):
            rows = await create([submission("ann"), submission("ann")])
            assert [r["outcome"] for r in rows] == ["created", "created"]
            await asyncio.wait_for(woken.get(), 10)
        assert await conn.fetchval("SELECT count(*) FROM outbox") == 8
    finally:
        await listener.close()
        await conn.close()
    await check_invariants(database)


async def test_the_downgrade_drops_the_set_based_create(database: str) -> None:
    await migrate(database, "0012", down=True)
    conn = await asyncpg.connect(dsn(database))
    try:
        names = await conn.fetch(
            "SELECT proname FROM pg_proc WHERE proname LIKE 'assay_create_submission%'"
        )
        assert [r["proname"] for r in names] == ["assay_create_submission"]
    finally:
        await conn.close()
    await migrate(database, "head")
