"""`python -m assessment_svc.sweep` as the CronJob runs it: a process against a real
archive, its JSON summary and its exit codes."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

from archive_svc import store
from assay.common.v1 import job_pb2
from assaylib.config import Settings
from tests.archive.helpers import Client, check_invariants, expire_lease


async def run_sweep(
    settings: Settings, port: int, *args: str, env: dict[str, str] | None = None
) -> tuple[int, dict[str, Any], str]:
    environment = {
        **os.environ,
        "ASSAY_ARCHIVE_ADDR": f"127.0.0.1:{port}",
        "ASSAY_SERVICE_TOKEN_FILE": settings.service_token_file,
        "ASSAY_STUCK_AFTER": "120s",
        "ASSAY_MAX_PROCESSING": "10m",
        "ASSAY_SWEEP_MAX_FRACTION": "0.5",
        **(env or {}),
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "assessment_svc.sweep",
        *args,
        env=environment,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    last = out.decode().strip().splitlines()[-1]
    assert process.returncode is not None
    return process.returncode, json.loads(last), err.decode()


async def test_sweep_fails_stuck_job_and_reports(archive, archive_stub, database, settings):
    client = Client(archive_stub)
    await client.grant("alice", 2)
    stuck = await client.start(await client.submit())
    healthy = await client.start(await client.submit())
    await expire_lease(database, stuck.job_id, seconds=600)

    code, dry, _ = await run_sweep(settings, archive.port, "--dry-run")
    assert code == 0 and dry["dry_run"] and dry["jobs"] == [stuck.job_id] and dry["failed"] == 0
    assert (await client.get(stuck.job_id)).status == job_pb2.JOB_STATUS_PROCESSING

    code, summary, said = await run_sweep(settings, archive.port)
    assert code == 0, said
    assert (summary["found"], summary["failed"], summary["refunded"]) == (1, 1, 1)
    assert summary["jobs"] == [stuck.job_id] and "failed and refunded 1" in said
    swept = await client.get(stuck.job_id)
    assert swept.status == job_pb2.JOB_STATUS_FAILED and swept.error_code == "STUCK"
    assert (await client.get(healthy.job_id)).status == job_pb2.JOB_STATUS_PROCESSING
    await check_invariants(database)


async def test_guard_holds_back_and_force_overrides(archive, archive_stub, database, settings):
    client = Client(archive_stub)
    await client.grant("alice", 8)
    jobs = [await client.start(await client.submit()) for _ in range(8)]
    for job in jobs[:6]:
        await expire_lease(database, job.job_id, seconds=600)
    code, summary, said = await run_sweep(settings, archive.port)
    assert code == 3 and summary["held_back"] and summary["failed"] == 0
    assert "6 of 8" in said
    code, summary, _ = await run_sweep(settings, archive.port, "--force")
    assert code == 0 and summary["failed"] == 6
    await check_invariants(database)


async def test_second_sweep_exits_zero_when_the_lock_is_held(archive, settings):
    async with archive.pool.acquire() as conn:
        assert await store.try_advisory_lock(conn, store.SWEEP_LOCK_KEY)
        code, summary, said = await run_sweep(settings, archive.port)
        await store.advisory_unlock(conn, store.SWEEP_LOCK_KEY)
    assert code == 0 and summary["lock_busy"] and "another sweep holds the lock" in said


async def test_unreachable_archive_exits_nonzero(settings):
    code, summary, said = await run_sweep(settings, 1)
    assert code == 1 and summary["error"] == "UNAVAILABLE", said
