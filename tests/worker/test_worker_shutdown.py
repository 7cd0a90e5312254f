"""Stopping a worker: held jobs finish within the grace period, or are handed back and taken
over by another worker; `python -m worker` exits 0 on SIGTERM and 2 on bad configuration."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path

from assay.common.v1 import job_pb2
from assaylib.config import Settings
from tests.archive.helpers import check_invariants
from tests.conftest import Trust
from tests.worker.conftest import (
    EventLog,
    Outcomes,
    StartWorker,
    get_job,
    ledger_kinds,
    submit,
)
from worker.job_runner import Outcome


async def test_stop_lets_a_held_job_finish_within_the_grace_period(
    archive_stub, start_worker: StartWorker, outcomes: Outcomes, events: EventLog, settings
) -> None:
    app = await start_worker(analyzer_delay=1.0)
    job = await submit(archive_stub)
    await events.wait_for(job.job_id, "analysis.started")

    started = time.monotonic()
    await app.stop(grace=20.0)
    assert time.monotonic() - started < 10.0
    assert outcomes.seen[job.job_id] == [("w1", Outcome.COMPLETED)]
    assert (await get_job(archive_stub, job.job_id)).status == job_pb2.JOB_STATUS_COMPLETED
    await check_invariants(settings.database_url)


async def test_stop_hands_back_a_job_after_the_grace_period_and_another_worker_takes_over(
    archive_stub, start_worker: StartWorker, outcomes: Outcomes, events: EventLog, settings
) -> None:
    app = await start_worker("w1", analyzer_delay=60.0)
    job = await submit(archive_stub)
    await events.wait_for(job.job_id, "analysis.started")

    await app.stop(grace=0.2)
    assert outcomes.seen[job.job_id] == [("w1", Outcome.SHUTDOWN)]
    stored = await get_job(archive_stub, job.job_id)
    assert (stored.status, stored.attempt) == (job_pb2.JOB_STATUS_PROCESSING, 1)

    await start_worker("w2")
    await outcomes.wait(job.job_id, Outcome.COMPLETED)
    stored = await get_job(archive_stub, job.job_id)
    assert (stored.status, stored.worker_id, stored.attempt) == (
        job_pb2.JOB_STATUS_COMPLETED,
        "w2",
        2,
    )
    await events.wait_for(job.job_id, "analysis.completed")
    assert events.types(job.job_id) == [
        "analysis.queued",
        "analysis.started",
        "analysis.started",
        "analysis.completed",
    ]
    assert await ledger_kinds(archive_stub, job.job_id) == ["DEBIT"]
    await check_invariants(settings.database_url)


def _environment(settings: Settings) -> dict[str, str]:
    trust = Trust(Path(), Path(settings.jwks_file), settings.service_token_file)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASSAY_")}
    env.update(
        ASSAY_NATS_URL=settings.nats_url,
        ASSAY_ARCHIVE_ADDR=settings.archive_addr,
        ASSAY_WORKER_ADDR="127.0.0.1:0",
        **trust.env(),
        ASSAY_HEARTBEAT_INTERVAL=str(settings.heartbeat_interval),
        ASSAY_LEASE_TIMEOUT=str(settings.lease_timeout),
        ASSAY_STREAM_PREFIX=settings.stream_prefix,
        ASSAY_SHUTDOWN_GRACE="5s",
    )
    return env


async def test_python_m_worker_processes_a_job_and_exits_0_on_sigterm(
    archive_stub, worker_settings: Settings, events: EventLog
) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "worker",
        env=_environment(worker_settings),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        job = await submit(archive_stub)
        await events.wait_for(job.job_id, "analysis.completed", within=60.0)
    finally:
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(20):
            _out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    lines = [json.loads(line) for line in err.decode().splitlines() if line.strip()]
    assert any(line.get("job_id") == job.job_id and line.get("worker_id") for line in lines), (
        "no JSON log line names the job and its worker"
    )
    stored = await get_job(archive_stub, job.job_id)
    assert stored.status == job_pb2.JOB_STATUS_COMPLETED


async def test_python_m_worker_exits_2_on_bad_configuration(worker_settings: Settings) -> None:
    env = _environment(worker_settings) | {"ASSAY_WORKER_CONCURRENCY": "zero"}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "worker",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(30):
        _out, err = await process.communicate()
    assert process.returncode == 2
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1 and "ASSAY_WORKER_CONCURRENCY" in lines[0]
