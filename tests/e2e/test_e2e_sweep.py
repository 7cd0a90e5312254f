"""Stuck jobs across real processes (issue 6): a dead or frozen worker's job is swept,
refunded once and announced when no other worker can take it over; with a second worker
the same faults end in a takeover instead; live workers are never swept."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator

import nats
import pytest

from assay.assessment.v1 import assessment_service_pb2 as pb
from assay.common.v1 import job_pb2
from assaylib.streams import StreamNames
from tests.archive.helpers import check_invariants, snapshot, talent_data, wait_until
from tests.e2e.conftest import E2E
from tests.e2e.test_e2e_flow import events_until

pytestmark = pytest.mark.e2e
STUCK_AFTER = 4.0
SWEEP_INTERVAL = 1.0
SLOW = {"ASSAY_ANALYZER_DELAY": "60s"}


class SweepLoop:
    """`python -m assessment_svc.sweep --loop` next to the stack, its summaries collected."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.summaries: list[dict[str, object]] = []
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.process.stdout is not None
        async for line in self.process.stdout:
            self.summaries.append(json.loads(line))

    async def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(self.process.wait(), 10)
        with contextlib.suppress(asyncio.CancelledError):
            await self.reader


@pytest.fixture
async def sweeps(e2e: E2E) -> AsyncIterator[SweepLoop]:
    env = {
        **e2e.stack.env,
        "ASSAY_STUCK_AFTER": f"{STUCK_AFTER}s",
        "ASSAY_SWEEP_INTERVAL": f"{SWEEP_INTERVAL}s",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "assessment_svc.sweep",
        "--loop",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    loop = SweepLoop(process)
    yield loop
    await loop.stop()


async def submit_and_wait_started(e2e: E2E, user: str):
    await e2e.archive.grant(user, 1)
    watcher = e2e.watchers.open(user=user)
    await watcher.live()
    request = pb.SubmitAssessmentRequest(assessment_data=talent_data())
    job = (await e2e.assessment(user).SubmitAssessment(request)).job
    await events_until(watcher, job.job_id, "analysis.started")
    return job, watcher


async def acked_everything(e2e: E2E) -> bool:
    """The workers' consumer holds no unacknowledged message."""
    names = StreamNames(e2e.stack.env["ASSAY_STREAM_PREFIX"])
    nc = await nats.connect(e2e.info.nats_url)
    try:
        info = await nc.jetstream().consumer_info(names.jobs_stream, names.worker_consumer)
        return bool(info.num_ack_pending == 0 and info.num_pending == 0)
    finally:
        await nc.close()


@pytest.mark.worker_env(**SLOW)
@pytest.mark.parametrize("fault", ["kill", "freeze"])
async def test_lone_worker_fault_is_swept_and_refunded(e2e: E2E, sweeps: SweepLoop, fault: str):
    job, watcher = await submit_and_wait_started(e2e, "alice")
    worker = e2e.info.pids["worker"]
    faulted_at = time.monotonic()
    os.kill(worker, signal.SIGKILL if fault == "kill" else signal.SIGSTOP)
    events = await events_until(watcher, job.job_id, "analysis.stuck")
    assert time.monotonic() - faulted_at < STUCK_AFTER + SWEEP_INTERVAL + 3
    assert events[-1].status == job_pb2.JOB_STATUS_FAILED
    assert events[-1].metadata.error_code == "STUCK"
    stored = await e2e.archive.get(job.job_id)
    assert stored.status == job_pb2.JOB_STATUS_FAILED and stored.error_code == "STUCK"
    assert await e2e.archive.balance("alice") == 1  # refunded
    if fault == "freeze":
        before = await snapshot(e2e.info.database_url)
        os.kill(worker, signal.SIGCONT)  # the partition heals: its lease is lost
        await wait_until(lambda: acked_everything(e2e), within=20)
        assert await snapshot(e2e.info.database_url) == before, "the resumed worker wrote"
    counts = await check_invariants(e2e.info.database_url)
    assert counts["ledger"] == 3  # grant, debit, one refund


@pytest.mark.worker_env(**SLOW)
@pytest.mark.parametrize("fault", ["kill", "freeze"])
async def test_fault_with_a_second_worker_ends_in_takeover(
    e2e: E2E, sweeps: SweepLoop, fault: str
) -> None:
    job, watcher = await submit_and_wait_started(e2e, "bob")
    await e2e.start_worker("worker2", ASSAY_ANALYZER_DELAY="0")
    worker = e2e.info.pids["worker"]
    os.kill(worker, signal.SIGKILL if fault == "kill" else signal.SIGSTOP)
    events = await events_until(watcher, job.job_id, "analysis.completed")
    assert [(e.event_type, e.metadata.attempt) for e in events] == [
        ("analysis.started", 2),
        ("analysis.completed", 2),
    ]
    if fault == "freeze":
        before = await snapshot(e2e.info.database_url)
        os.kill(worker, signal.SIGCONT)
        await wait_until(lambda: acked_everything(e2e), within=20)
        assert await snapshot(e2e.info.database_url) == before, "the resumed worker wrote"
    assert all(s["failed"] == 0 for s in sweeps.summaries), "a sweep raced the takeover"
    counts = await check_invariants(e2e.info.database_url)
    assert counts["ledger"] == 2  # grant, debit: completed, no refund


@pytest.mark.worker_env(ASSAY_ANALYZER_DELAY=f"{3 * STUCK_AFTER}s")
async def test_live_workers_are_never_swept(e2e: E2E, sweeps: SweepLoop) -> None:
    await e2e.archive.grant("carol", 2)
    service = e2e.assessment("carol")
    request = pb.SubmitAssessmentRequest(assessment_data=talent_data())
    jobs = [(await service.SubmitAssessment(request)).job for _ in range(2)]

    async def all_done() -> bool:
        states = [(await e2e.archive.get(j.job_id)).status for j in jobs]
        return all(s == job_pb2.JOB_STATUS_COMPLETED for s in states)

    await wait_until(all_done, within=3 * STUCK_AFTER + 20)
    assert len(sweeps.summaries) >= 3 * STUCK_AFTER / SWEEP_INTERVAL - 2, "sweeps ran"
    assert all(s["failed"] == 0 and s["found"] == 0 for s in sweeps.summaries)
    await check_invariants(e2e.info.database_url)
