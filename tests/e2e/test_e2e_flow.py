"""The submission flow across real processes: submit → queue → worker → notifications,
with worker crashes, cancellation, retry and watcher resume."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from typing import Any

import grpc
import pytest

from assay.archive.v1 import archive_service_pb2 as archive_pb
from assay.assessment.v1 import assessment_service_pb2 as pb
from assay.common.v1 import job_pb2
from assay.events.v1 import events_pb2
from tests.archive.helpers import check_invariants, expect_error, talent_data, wait_until
from tests.e2e.conftest import E2E

pytestmark = pytest.mark.e2e
TIMEOUT = 30.0


def submit_request(name: str = "", request_id: str = "") -> pb.SubmitAssessmentRequest:
    return pb.SubmitAssessmentRequest(
        assessment_name=name, assessment_data=talent_data(), request_id=request_id
    )


def of_job(events: list[events_pb2.JobEvent], job_id: str) -> list[tuple[str, int]]:
    return [(e.event_type, e.metadata.attempt) for e in events if e.job_id == job_id]


async def events_until(watcher, job_id: str, last_type: str) -> list[events_pb2.JobEvent]:
    """This job's events up to and including the first of type last_type."""
    seen: list[events_pb2.JobEvent] = []
    while True:
        (event,) = await watcher.events(1, TIMEOUT)
        if event.job_id != job_id:
            continue
        seen.append(event)
        if event.event_type == last_type:
            return seen


async def until_available(call: Any, within: float = TIMEOUT) -> Any:
    """The reply of ``call()``, retried while it is UNAVAILABLE, for up to ``within`` s."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        try:
            return await call()
        except grpc.aio.AioRpcError as err:
            late = asyncio.get_running_loop().time() > deadline
            if err.code() != grpc.StatusCode.UNAVAILABLE or late:
                raise
        await asyncio.sleep(0.2)


async def test_submit_is_analysed_and_watched(e2e: E2E) -> None:
    await e2e.archive.grant("alice", 3)
    watcher = e2e.watchers.open(user="alice")
    await watcher.live()
    reply = await e2e.assessment("alice").SubmitAssessment(submit_request())
    job = reply.job
    assert job.status == job_pb2.JOB_STATUS_QUEUED and job.result_id and reply.tokens_remaining == 2

    events = await events_until(watcher, job.job_id, "analysis.completed")
    assert [e.event_type for e in events] == [
        "analysis.queued",
        "analysis.started",
        "analysis.completed",
    ]
    assert [e.job_version for e in events] == [1, 2, 3]
    assert all(e.result_id == job.result_id and e.user_id == "alice" for e in events)
    assert events[0].cursor < events[1].cursor < events[2].cursor
    assert events[2].status == job_pb2.JOB_STATUS_COMPLETED
    assert events[2].metadata.processing_time_ms >= 0 and events[2].metadata.attempt == 1

    result = (
        await e2e.assessment("alice").GetResult(pb.GetResultRequest(job_id=job.job_id))
    ).result
    assert result.test_data == talent_data()
    assert result.test_result.archetype and len(result.test_result.career_recommendation) >= 3

    # Not on a terminal, every service logs one JSON object per line, naming the job.
    for service in ("assessment", "worker"):
        lines = (e2e.stack.logs / f"{service}.log").read_text().splitlines()
        records = [json.loads(line) for line in lines if line.startswith("{")]
        assert records and len(records) == len([line for line in lines if line.strip()])
        assert {"time", "level", "service", "logger", "message"} <= set(records[0])
        assert any(r.get("job_id") == job.job_id for r in records), service
    assert await e2e.archive.balance("alice") == 2
    await check_invariants(e2e.info.database_url)


async def test_unsupported_assessment_fails_and_refunds(e2e: E2E) -> None:
    await e2e.archive.grant("bob", 1)
    watcher = e2e.watchers.open(user="bob")
    await watcher.live()
    job = (await e2e.assessment("bob").SubmitAssessment(submit_request("AI-Based IQ Test"))).job
    events = await events_until(watcher, job.job_id, "analysis.failed")
    assert events[-1].metadata.error_code == "UNSUPPORTED_ASSESSMENT_TYPE"
    stored = await e2e.archive.get(job.job_id)
    assert stored.status == job_pb2.JOB_STATUS_FAILED
    assert await e2e.archive.balance("bob") == 1
    await check_invariants(e2e.info.database_url)


@pytest.mark.worker_env(ASSAY_ANALYZER_DELAY="60s")
async def test_killed_worker_is_taken_over(e2e: E2E) -> None:
    await e2e.archive.grant("carol", 1)
    watcher = e2e.watchers.open(user="carol")
    await watcher.live()
    job = (await e2e.assessment("carol").SubmitAssessment(submit_request())).job
    await events_until(watcher, job.job_id, "analysis.started")
    os.kill(e2e.info.pids["worker"], signal.SIGKILL)  # mid-job, no goodbye
    await e2e.start_worker("worker2", ASSAY_ANALYZER_DELAY="0")
    events = await events_until(watcher, job.job_id, "analysis.completed")
    assert of_job(events, job.job_id) == [("analysis.started", 2), ("analysis.completed", 2)]
    stored = await e2e.archive.get(job.job_id)
    assert stored.status == job_pb2.JOB_STATUS_COMPLETED and stored.attempt == 2
    counts = await check_invariants(e2e.info.database_url)  # one debit, no refund
    assert counts["ledger"] == 2


@pytest.mark.worker_env(ASSAY_ANALYZER_DELAY="60s")
async def test_cancel_while_processing_and_while_queued(e2e: E2E) -> None:
    await e2e.archive.grant("dave", 5)
    watcher = e2e.watchers.open(user="dave")
    await watcher.live()
    service = e2e.assessment("dave")
    running = (await service.SubmitAssessment(submit_request())).job
    await events_until(watcher, running.job_id, "analysis.started")
    marked = (await service.CancelJob(pb.CancelJobRequest(job_id=running.job_id))).job
    assert marked.cancel_requested
    events = await events_until(watcher, running.job_id, "analysis.cancelled")
    assert events[-1].status == job_pb2.JOB_STATUS_CANCELLED

    os.kill(e2e.info.pids["worker"], signal.SIGSTOP)  # nobody takes the next job
    try:
        queued = (await service.SubmitAssessment(submit_request())).job
        cancelled = (await service.CancelJob(pb.CancelJobRequest(job_id=queued.job_id))).job
        assert cancelled.status == job_pb2.JOB_STATUS_CANCELLED
        await events_until(watcher, queued.job_id, "analysis.cancelled")
    finally:
        os.kill(e2e.info.pids["worker"], signal.SIGCONT)
    assert await e2e.archive.balance("dave") == 5
    await check_invariants(e2e.info.database_url)


async def test_retry_after_failure_charges_and_runs_again(e2e: E2E) -> None:
    await e2e.archive.grant("erin", 2)
    watcher = e2e.watchers.open(user="erin")
    await watcher.live()
    service = e2e.assessment("erin")
    job = (await service.SubmitAssessment(submit_request("AI-Based IQ Test"))).job
    await events_until(watcher, job.job_id, "analysis.failed")
    retried = await service.RetryJob(pb.RetryJobRequest(job_id=job.job_id))
    assert retried.job.status == job_pb2.JOB_STATUS_QUEUED and retried.tokens_remaining == 1
    events = await events_until(watcher, job.job_id, "analysis.failed")
    assert [e.event_type for e in events] == [
        "analysis.queued",
        "analysis.started",
        "analysis.failed",
    ]
    assert (await e2e.archive.get(job.job_id)).charge_count == 2
    assert await e2e.archive.balance("erin") == 2
    await check_invariants(e2e.info.database_url)


async def test_watcher_resumes_across_a_gap(e2e: E2E) -> None:
    await e2e.archive.grant("fay", 3)
    first = e2e.watchers.open(user="fay")
    await first.live()
    service = e2e.assessment("fay")
    one = (await service.SubmitAssessment(submit_request())).job
    seen = await events_until(first, one.job_id, "analysis.completed")
    cursor = seen[-1].cursor
    await first.close()
    two = (await service.SubmitAssessment(submit_request())).job
    await wait_until(
        lambda: _is_completed(e2e, two.job_id), within=TIMEOUT
    )  # the gap: nobody watching
    resumed = e2e.watchers.open(user="fay", resume_after=cursor)
    replay = await events_until(resumed, two.job_id, "analysis.completed")
    assert [e.event_type for e in replay] == [
        "analysis.queued",
        "analysis.started",
        "analysis.completed",
    ]
    assert all(e.cursor > cursor for e in replay)
    ids = [e.event_id for e in seen + replay]
    assert len(ids) == len(set(ids)), "an event was delivered twice"


async def _is_completed(e2e: E2E, job_id: str) -> bool:
    return (await e2e.archive.get(job_id)).status == job_pb2.JOB_STATUS_COMPLETED


async def test_invalid_submission_leaves_nothing(e2e: E2E) -> None:
    await e2e.archive.grant("gus", 1)
    data = talent_data()
    data.riasec.ClearField("social")
    data.ocean.openness = 140
    request = pb.SubmitAssessmentRequest(assessment_data=data, assessment_name="Tarot")
    error = await expect_error(
        e2e.assessment("gus").SubmitAssessment(request), grpc.StatusCode.INVALID_ARGUMENT
    )
    fields = {v.field for v in error.violations}
    assert {
        "assessment_name",
        "assessment_data.riasec.social",
        "assessment_data.ocean.openness",
    } <= fields
    assert await e2e.archive.balance("gus") == 1
    listed = await e2e.archive.stub.ListJobs(archive_pb.ListJobsRequest(user_id="gus"))
    assert not listed.jobs


@pytest.mark.worker_env(ASSAY_ANALYZER_DELAY="1s")
async def test_archive_killed_and_restarted_loses_nothing(e2e: E2E) -> None:
    await e2e.archive.grant("hal", 6)
    watcher = e2e.watchers.open(user="hal")
    await watcher.live()
    service = e2e.assessment("hal")
    jobs = [(await service.SubmitAssessment(submit_request())).job for _ in range(4)]
    await events_until(watcher, jobs[0].job_id, "analysis.started")
    await asyncio.to_thread(e2e.stack.crash, "archive")  # kill -9 mid-flight
    await expect_error(service.SubmitAssessment(submit_request()), grpc.StatusCode.UNAVAILABLE)
    e2e.stack.start_service("archive")
    await asyncio.to_thread(e2e.stack.wait_healthy, "archive")
    # The assessment service's channel reconnects on its own backoff: a caller retries
    # UNAVAILABLE, with a request id so that a retry can never charge twice (I6).
    again = submit_request(request_id="after-restart")
    jobs.append((await until_available(lambda: service.SubmitAssessment(again))).job)

    async def all_completed() -> bool:
        states = [(await e2e.archive.get(j.job_id)).status for j in jobs]
        return all(s == job_pb2.JOB_STATUS_COMPLETED for s in states)

    await wait_until(all_completed, within=60)
    assert await e2e.archive.balance("hal") == 1
    await check_invariants(e2e.info.database_url)  # one debit each, no refund, I2
