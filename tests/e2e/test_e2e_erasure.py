"""An erasure cut short by kill -9 of the archive process, then finished by its repeat: the
archive is stopped while the transaction emptying the first result rows is in flight (held
back by a table lock the test takes, so the kill lands there and not by luck)."""

from __future__ import annotations

import asyncio

import asyncpg
import grpc
import pytest

from assay.archive.v1 import archive_service_pb2 as pb
from assay.common.v1 import job_pb2
from tests.archive.helpers import check_invariants, dsn, wait_until
from tests.e2e.conftest import E2E
from tests.e2e.test_e2e_flow import until_available

pytestmark = pytest.mark.e2e

EMPTYING = "UPDATE results SET test_data"


async def fetchval(database: str, query: str) -> object:
    conn = await asyncpg.connect(dsn(database))
    try:
        return await conn.fetchval(query)
    finally:
        await conn.close()


async def emptying_waits(database: str) -> bool:
    """Whether a backend is running the erasure's results statement, waiting on a lock."""
    found = await fetchval(
        database,
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
        f" AND query LIKE '{EMPTYING}%'",
    )
    return found == 1


async def emptying_gone(database: str) -> bool:
    return (
        await fetchval(
            database,
            f"SELECT count(*) FROM pg_stat_activity WHERE query LIKE '{EMPTYING}%'"
            " AND state <> 'idle'",
        )
        == 0
    )


@pytest.mark.worker_env(ASSAY_ANALYZER_DELAY="60s")  # analyses that never end in this test
async def test_archive_killed_during_an_erasure_then_its_repeat_finishes_it(
    e2e: E2E, database: str
) -> None:
    archive = e2e.archive
    await archive.grant("alice", 10)
    jobs = [await archive.submit("alice") for _ in range(6)]

    async def two_processing() -> bool:
        states = [(await archive.get(job.job_id)).status for job in jobs]
        return states.count(job_pb2.JOB_STATUS_PROCESSING) == 2  # the worker's concurrency

    await wait_until(two_processing)
    request = pb.EraseUserDataRequest(user_id="alice", request_id="erase-kill")
    blocker = await asyncpg.connect(dsn(database))
    held = blocker.transaction()
    await held.start()
    await blocker.execute("LOCK TABLE results IN SHARE MODE")  # step 2 waits here
    erasing = asyncio.ensure_future(archive.stub.EraseUserData(request))
    try:
        await wait_until(lambda: emptying_waits(database))
        await asyncio.to_thread(e2e.stack.crash, "archive")  # kill -9 mid-transaction
        with pytest.raises(grpc.aio.AioRpcError):
            await erasing
    finally:
        await held.rollback()
        await blocker.close()
    await wait_until(lambda: emptying_gone(database))  # its transaction died with it

    # Half done, and the log says so: step 1 committed, step 2 did not.
    assert await fetchval(database, "SELECT finished_at FROM erasures") is None
    assert await fetchval(database, "SELECT jobs_cancelled FROM erasures") == 6
    kept = "SELECT count(*) FROM results WHERE erased_at IS NULL"
    assert await fetchval(database, kept) == 6
    await check_invariants(database)

    e2e.stack.start_service("archive")
    await asyncio.to_thread(e2e.stack.wait_healthy, "archive")
    reply = await until_available(lambda: archive.stub.EraseUserData(request))

    assert not reply.replayed and reply.HasField("finished_at")
    assert (reply.jobs_cancelled, reply.results_erased, reply.outbox_messages_erased) == (6, 6, 6)
    assert await fetchval(database, kept) == 0
    for job in jobs:
        assert (await archive.get(job.job_id)).status == job_pb2.JOB_STATUS_CANCELLED
    assert await archive.balance("alice") == 10  # every charge refunded once
    await check_invariants(database)
    again = await archive.stub.EraseUserData(request)
    assert again.replayed and again.results_erased == 6
