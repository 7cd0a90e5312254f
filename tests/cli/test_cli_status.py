"""`assay status`: the one-screen view matches the database, in JSON and readable form, and
--watch refreshes until interrupted."""

from __future__ import annotations

import asyncio
import json
import signal
from typing import Any

import asyncpg
import pytest

from tests.archive.helpers import dsn
from tests.cli.conftest import EXAMPLES, Cli, user_token

pytestmark = pytest.mark.e2e

TALENT = str(EXAMPLES / "talent-mapping.json")


async def test_status_json_matches_the_database(cli: Cli, stack, cli_env) -> None:
    token = await user_token(cli, "gil", grant=2)
    for _ in range(2):
        ran = await cli.run("submit", TALENT, "--watch", "--json", "--token", token)
        assert ran.code == 0, ran.describe()
    swept = await cli.run("sweep")
    assert swept.code == 0, swept.describe()

    shown = await cli.run("status", "--json")
    assert shown.code == 0, shown.describe()
    status = shown.json()
    conn = await asyncpg.connect(dsn(cli_env["ASSAY_DATABASE_URL"]))
    try:
        rows = await conn.fetch("SELECT status::text, count(*) FROM jobs GROUP BY 1")
        workers = await conn.fetch("SELECT DISTINCT worker_id FROM jobs")
        unsent = await conn.fetchval(
            "SELECT count(*) FROM outbox WHERE NOT outbox_published(txid, seq)"
        )
    finally:
        await conn.close()
    stored = {f"JOB_STATUS_{name}": str(count) for name, count in rows}
    shown_counts = {c["status"]: c["count"] for c in status["jobs"]}
    assert (
        {k: v for k, v in shown_counts.items() if v != "0"}
        == stored
        == {"JOB_STATUS_COMPLETED": "2"}
    )
    assert status["lastMinute"]["submitted"] == "2" and status["lastMinute"]["completed"] == "2"
    assert [w["workerId"] for w in status["workers"]] == [r["worker_id"] for r in workers]
    assert status["workers"][0]["finishedLastMinute"] == "2"
    assert status["outboxUnsent"] == str(unsent)
    assert status["consumer"]["pending"] == "0" and status["consumer"]["ackPending"] == "0"
    assert status["lastSweep"]["found"] == 0 and status["lastSweep"]["heldBack"] is False

    readable = await cli.run("status")
    assert readable.code == 0, readable.describe()
    text = readable.stdout
    assert "COMPLETED 2" in text and "QUEUED 0" in text
    assert "submitted 2 · completed 2" in text
    assert "1 seen in the last minute" in text and status["workers"][0]["workerId"] in text
    assert "last sweep" in text and "found 0, failed 0" in text


async def test_status_watch_refreshes_until_interrupted(cli: Cli, stack) -> None:
    process = await cli.spawn("status", "--watch", "--json", "--interval", "0.2")
    assert process.stdout is not None
    frames: list[dict[str, Any]] = []
    async with asyncio.timeout(30):
        while len(frames) < 2:
            line = await process.stdout.readline()
            assert line, "status --watch ended by itself"
            frames.append(json.loads(line))
    process.send_signal(signal.SIGINT)
    async with asyncio.timeout(10):
        await process.wait()
    assert process.returncode == 130  # interrupted, as every CLI command
    assert frames[1]["observedAt"] > frames[0]["observedAt"]
    assert all(len(frame["jobs"]) == 5 for frame in frames)
