"""The relay's statements behind one user's bulk do a user's work once per user, whatever
plan PostgreSQL picks: each statement is run under EXPLAIN ANALYZE, and its scans of jobs
other than by key (a user's jobs, through whichever index, or the whole table) are counted
with their loops. Inlined into the statement, a user's count or budget was evaluated once
per reference, or once per backlog row: 872 counts in one look-ahead on the bench."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

import asyncpg
import pytest

from archive_svc import store
from tests.archive.helpers import dsn
from tests.archive.test_archive_set_create import NO_TIERS, submission

BULK = 300
BUDGET = 32


class Explaining:
    """A connection that explains each statement (ANALYZE, in a transaction rolled back)
    before running it, and keeps the plans."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.plans: list[dict[str, Any]] = []

    async def _explain(self, sql: str, args: Sequence[Any]) -> None:
        transaction = self.conn.transaction()
        await transaction.start()
        try:
            found = await self.conn.fetchval("EXPLAIN (ANALYZE, FORMAT JSON) " + sql, *args)
            self.plans.append(json.loads(found)[0]["Plan"])
        finally:
            await transaction.rollback()

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        await self._explain(sql, args)
        rows: list[asyncpg.Record] = await self.conn.fetch(sql, *args)
        return rows

    async def execute(self, sql: str, *args: Any) -> str:
        await self._explain(sql, args)
        status: str = await self.conn.execute(sql, *args)
        return status


def walks(plan: dict[str, Any]) -> int:
    """How many times the plan scanned jobs other than by key (a user's jobs in flight or
    queued, through whichever index, or the whole table), loops included."""
    own = 0
    scan = plan["Node Type"].endswith("Scan")
    if scan and plan.get("Relation Name") == "jobs" and plan.get("Index Name") != "pk_jobs":
        own = int(plan.get("Actual Loops", 0))
    return own + sum(walks(child) for child in plan.get("Plans", ()))


@pytest.fixture
async def bulk(database: str) -> AsyncIterator[asyncpg.Connection]:
    """A school's BULK jobs and a pupil's one, queued, their queue messages unpublished."""
    conn = await asyncpg.connect(dsn(database))
    try:
        await store.grant(conn, "school", BULK, "t")
        await store.grant(conn, "pupil", 1, "t")
        batch = [submission("pupil")] + [submission("school") for _ in range(BULK)]
        await store.create_submissions(conn, batch, NO_TIERS)
        yield conn
    finally:
        await conn.close()


async def test_the_look_ahead_counts_each_user_s_queue_once(bulk: asyncpg.Connection) -> None:
    explaining = Explaining(bulk)
    rows = await store.ahead_unsent(explaining, 0, 100, BUDGET, {0: BUDGET})
    # the pupil is within its budget and goes ahead; the school's hundreds wait their turn
    assert {row["user_id"] for row in rows} == {"pupil"}
    (plan,) = explaining.plans
    assert walks(plan) <= 2  # one count per user, not one per backlog row (601 before)


async def test_a_release_walks_a_held_user_s_jobs_once_per_step(bulk: asyncpg.Connection) -> None:
    await bulk.execute(
        "UPDATE jobs j SET queue_held_by = o.id FROM outbox o WHERE o.job_id = j.job_id"
        " AND o.kind = 'job' AND j.user_id = 'school'"
    )
    explaining = Explaining(bulk)
    released = await store.release_held(explaining, ["school"], BUDGET, {0: BUDGET}, 100)
    assert released == BUDGET  # the room under the budget, no more
    (plan,) = explaining.plans
    # the budget, the room and the pick once each, and the update finding the picked jobs
    # (by key on a large table; on this small one PostgreSQL scans the queued jobs): 8 before
    assert walks(plan) <= 4
