"""An import killed with SIGKILL mid-batch resumes where it stopped: nothing is imported
twice, nothing is lost (--verify finds no difference), and every ledger sums."""

from __future__ import annotations

import asyncio

import asyncpg

from bench import original_source
from tests.archive.helpers import check_invariants, dsn, wait_until
from tests.importer.conftest import Importer, Original, fill

JOBS = 3000


async def imported(database: str) -> int:
    conn = await asyncpg.connect(dsn(database))
    try:
        return int(await conn.fetchval("SELECT count(*) FROM imported_jobs"))
    finally:
        await conn.close()


async def test_kill_9_mid_batch_then_resume(
    importer: Importer, original: Original, database: str
) -> None:
    await fill(original, original_source.generate(jobs=JOBS, users=200, seed=21))
    process = await importer.spawn("--batch", "20", "--json")

    async def under_way() -> bool:
        return await imported(database) >= 200 or process.returncode is not None

    await wait_until(under_way, within=120.0, interval=0.02)
    assert process.returncode is None, "the import finished before it could be killed"
    process.kill()  # SIGKILL: no handler runs, the checkpoint is whatever was saved last
    await asyncio.wait_for(process.wait(), 30.0)
    partway = await imported(database)
    assert 0 < partway < JOBS

    ran = await importer.run("--json")
    assert ran.code == 0, ran.describe()
    report = ran.json()
    assert report["resumed"] is True
    totals = {
        k: sum(c[k] for c in report["jobs"].values()) for k in ("read", "imported", "skipped")
    }
    # Jobs of the batch in flight at the kill were committed, or not: sent again, skipped.
    assert totals["imported"] + totals["skipped"] == totals["read"] == JOBS, report
    assert totals["skipped"] <= 20
    assert await imported(database) == JOBS
    await check_invariants(database)

    verified = await importer.run("--verify", "--json")
    assert verified.code == 0, verified.describe()
    assert verified.json()["differences"] == []
    assert verified.json()["source_balance_sum"] == verified.json()["assay_balance_sum"]
