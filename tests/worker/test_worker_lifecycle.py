"""Attempts that do not simply run to completion: cancellation seen in a heartbeat reply, a
lease taken over by another worker, transient failures retried (and exhausted), analysis
timeouts."""

from __future__ import annotations

import threading
from typing import Any

from assay.archive.v1 import archive_service_pb2 as pb
from assay.common.v1 import assessment_pb2, job_pb2
from assaylib.jobs import ATTEMPTS_EXHAUSTED
from tests.archive.helpers import check_invariants, expire_lease, profile, wait_until
from tests.worker.conftest import (
    EventLog,
    Outcomes,
    StartWorker,
    get_job,
    ledger_kinds,
    submit,
)
from worker.analyzers import analyze
from worker.job_runner import Outcome


class FlakyAnalyzer:
    """The real analyzer, failing the first ``failures`` calls with an unexpected error."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0
        self._lock = threading.Lock()

    def __call__(self, *args: Any) -> assessment_pb2.PersonaProfile:
        with self._lock:
            self.calls += 1
            failing = self.calls <= self.failures
        if failing:
            raise RuntimeError(f"flaky analyzer, call {self.calls}")
        return analyze(*args)


async def test_cancel_while_processing_stops_the_work_and_refunds_once(
    archive_stub, start_worker: StartWorker, outcomes: Outcomes, events: EventLog, settings
) -> None:
    await start_worker(analyzer_delay=60.0)
    job = await submit(archive_stub)
    await events.wait_for(job.job_id, "analysis.started")

    reply = await archive_stub.CancelJob(pb.CancelJobRequest(job_id=job.job_id, user_id="alice"))
    assert reply.job.status == job_pb2.JOB_STATUS_PROCESSING and reply.job.cancel_requested
    await outcomes.wait(job.job_id, Outcome.CANCELLED)
    await events.wait_for(job.job_id, "analysis.cancelled")

    stored = await get_job(archive_stub, job.job_id)
    assert stored.status == job_pb2.JOB_STATUS_CANCELLED
    result = (await archive_stub.GetResult(pb.GetResultRequest(result_id=job.result_id))).result
    assert not result.HasField("test_result"), "a cancelled job has no profile"
    assert await ledger_kinds(archive_stub, job.job_id) == ["DEBIT", "REFUND"]
    assert events.types(job.job_id) == [
        "analysis.queued",
        "analysis.started",
        "analysis.cancelled",
    ]
    await check_invariants(settings.database_url)


async def test_worker_that_lost_its_lease_writes_nothing(
    archive_stub, start_worker: StartWorker, outcomes: Outcomes, events: EventLog, settings
) -> None:
    """Another worker takes the attempt over after the lease expired (we expire it in
    PostgreSQL, as if the first worker's heartbeats had stopped reaching the archive): the
    first worker learns it in its next heartbeat reply, stops, acks, and reports nothing."""
    await start_worker("w1", analyzer_delay=60.0)
    job = await submit(archive_stub)
    await events.wait_for(job.job_id, "analysis.started")

    async def taken_over() -> bool:
        await expire_lease(settings.database_url, job.job_id)
        request = pb.StartJobRequest(job_id=job.job_id, worker_id="intruder")
        try:
            await archive_stub.StartJob(request)
        except Exception:  # w1 heartbeated in between; expire again
            return False
        return True

    await wait_until(taken_over)
    await outcomes.wait(job.job_id, Outcome.LEASE_LOST)

    stored = await get_job(archive_stub, job.job_id)
    assert stored.status == job_pb2.JOB_STATUS_PROCESSING
    assert (stored.worker_id, stored.attempt) == ("intruder", 2)
    assert events.types(job.job_id) == ["analysis.queued", "analysis.started", "analysis.started"]
    # The intruder can still finish its attempt: w1 left it alone.
    await archive_stub.CompleteJob(
        pb.CompleteJobRequest(
            job_id=job.job_id, worker_id="intruder", attempt=2, test_result=profile()
        )
    )
    await events.wait_for(job.job_id, "analysis.completed")
    assert await ledger_kinds(archive_stub, job.job_id) == ["DEBIT"]
    assert outcomes.seen[job.job_id] == [("w1", Outcome.LEASE_LOST)]
    await check_invariants(settings.database_url)


async def test_transient_failure_is_naked_and_the_next_attempt_completes(
    archive_stub, start_worker: StartWorker, outcomes: Outcomes, events: EventLog, settings
) -> None:
    flaky = FlakyAnalyzer(failures=1)
    await start_worker(analyze=flaky)
    job = await submit(archive_stub)
    await outcomes.wait(job.job_id, Outcome.RETRY)
    await outcomes.wait(job.job_id, Outcome.COMPLETED)
    await events.wait_for(job.job_id, "analysis.completed")

    stored = await get_job(archive_stub, job.job_id)
    assert stored.status == job_pb2.JOB_STATUS_COMPLETED
    assert stored.attempt == 2, "the redelivery took the expired attempt over"
    assert flaky.calls == 2
    assert events.types(job.job_id) == [
        "analysis.queued",
        "analysis.started",
        "analysis.started",
        "analysis.completed",
    ]
    assert [e.metadata.attempt for e in events.of(job.job_id)[1:3]] == [1, 2]
    assert await ledger_kinds(archive_stub, job.job_id) == ["DEBIT"]
    await check_invariants(settings.database_url)


async def test_transient_failures_until_max_attempts_fail_the_job(
    archive_stub, start_worker: StartWorker, outcomes: Outcomes, events: EventLog, settings
) -> None:
    flaky = FlakyAnalyzer(failures=99)
    await start_worker(analyze=flaky, max_attempts=2)
    job = await submit(archive_stub)
    await outcomes.wait(job.job_id, Outcome.FAILED)
    await events.wait_for(job.job_id, "analysis.failed")

    stored = await get_job(archive_stub, job.job_id)
    assert stored.status == job_pb2.JOB_STATUS_FAILED
    assert stored.error_code == ATTEMPTS_EXHAUSTED
    assert "INTERNAL_ERROR" in stored.error_message and "flaky analyzer" in stored.error_message
    assert stored.attempt == 2 and flaky.calls == 2
    assert [o for _w, o in outcomes.seen[job.job_id]] == [Outcome.RETRY, Outcome.FAILED]
    assert await ledger_kinds(archive_stub, job.job_id) == ["DEBIT", "REFUND"]
    assert events.types(job.job_id)[-1] == "analysis.failed"
    await check_invariants(settings.database_url)


async def test_analysis_timeout_is_transient_and_fails_on_the_last_attempt(
    archive_stub, start_worker: StartWorker, outcomes: Outcomes, settings
) -> None:
    release = threading.Event()

    def wedged(*args: Any) -> assessment_pb2.PersonaProfile:
        release.wait(10)
        return analyze(*args)

    try:
        await start_worker(analyze=wedged, analysis_timeout=0.3, max_attempts=1)
        job = await submit(archive_stub)
        await outcomes.wait(job.job_id, Outcome.FAILED)
    finally:
        release.set()
    stored = await get_job(archive_stub, job.job_id)
    assert stored.status == job_pb2.JOB_STATUS_FAILED
    assert stored.error_code == ATTEMPTS_EXHAUSTED
    assert "ANALYSIS_TIMEOUT" in stored.error_message
    assert await ledger_kinds(archive_stub, job.job_id) == ["DEBIT", "REFUND"]
    await check_invariants(settings.database_url)
