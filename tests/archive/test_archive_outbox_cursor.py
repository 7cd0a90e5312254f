"""The relay's cursor over the outbox (migration 0009) against PostgreSQL: rows are published
by commit, not by id or transaction id, in pages, and a saved position resumes exactly."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from archive_svc import store
from tests.archive.helpers import dsn

INSERT = "INSERT INTO outbox (id, kind, job_id) VALUES ($1, 'event', $1) RETURNING seq"


@pytest.fixture
async def pool(database: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(dsn(database), min_size=1, max_size=4)
    assert pool is not None
    yield pool
    await pool.close()


async def write(db: asyncpg.Pool | asyncpg.Connection) -> uuid.UUID:
    row_id = uuid.uuid4()
    await db.fetchval(INSERT, row_id)
    return row_id


async def drain(
    pool: asyncpg.Pool, position: store.RelayPosition, limit: int = 100
) -> tuple[store.RelayPosition, list[list[uuid.UUID]]]:
    """Fetch page after page as the relay does, until a round with a new snapshot finds
    nothing."""
    pages: list[list[uuid.UUID]] = []
    while True:
        fresh = position.batch is None
        at, rows = await store.next_unsent(pool, position, limit)
        position = at.advanced(rows, limit)
        if rows:
            pages.append([row["id"] for row in rows])
        elif fresh:
            return position, pages


async def unsent(pool: asyncpg.Pool) -> set[uuid.UUID]:
    rows = await pool.fetch("SELECT id FROM outbox WHERE NOT outbox_published(txid, seq)")
    return {row["id"] for row in rows}


async def test_a_row_committed_late_by_an_older_transaction_is_still_published(
    pool: asyncpg.Pool,
) -> None:
    position = await store.relay_position(pool)
    async with pool.acquire() as early:
        transaction = early.transaction()
        await transaction.start()
        held = await write(early)  # the older transaction id and the lower seq, not committed
        later = await write(pool)
        position, pages = await drain(pool, position)
        assert pages == [[later]]  # a high-water mark on seq or txid would now skip `held`
        await store.save_position(pool, position)
        assert await unsent(pool) == set()  # `held` is not committed: nothing to see
        await transaction.commit()
    assert await unsent(pool) == {held}
    position, pages = await drain(pool, position)
    assert pages == [[held]]
    position, pages = await drain(pool, position)
    assert pages == []


async def test_pages_follow_seq_and_a_saved_position_resumes_exactly(
    pool: asyncpg.Pool,
) -> None:
    written = [await write(pool) for _ in range(5)]
    position = store.RelayPosition((await store.relay_position(pool)).done)  # a new batch
    at, rows = await store.next_unsent(pool, position, 2)
    assert [row["id"] for row in rows] == written[:2]
    position = at.advanced(rows, 2)
    assert position.batch == at.batch and position.batch_seq == rows[-1]["seq"]
    at, rows = await store.next_unsent(pool, position, 2)  # saves: the first page is out
    assert [row["id"] for row in rows] == written[2:4]
    assert await unsent(pool) == set(written[2:])
    assert await store.count_unsent(pool) == 3
    # a relay that dies here resumes from the saved position: the second page again, once
    position = await store.relay_position(pool)
    position, pages = await drain(pool, position, limit=2)
    assert pages == [written[2:4], written[4:]]
    assert await unsent(pool) == set() and await store.count_unsent(pool) == 0


async def test_purge_deletes_only_published_rows(pool: asyncpg.Pool) -> None:
    published = await write(pool)
    position, _ = await drain(pool, await store.relay_position(pool))
    await store.save_position(pool, position)
    waiting = await write(pool)
    await pool.execute("UPDATE outbox SET created_at = now() - interval '2 hours'")
    assert await store.purge_sent(pool, older_than=3 * 3600) == 0
    assert await store.purge_sent(pool, older_than=3600) == 1
    remaining = {row["id"] for row in await pool.fetch("SELECT id FROM outbox")}
    assert remaining == {waiting} and published not in remaining
