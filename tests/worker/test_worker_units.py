"""Pure pieces of the worker, without servers: heartbeat verdicts and retries, backoff, the
retry helper's rules, message parsing and error codes."""

from __future__ import annotations

import asyncio
import time
from typing import Any, cast

import pytest

from assay.archive.v1 import archive_service_pb2 as pb
from assay.common.v1 import job_pb2
from assay.events.v1 import events_pb2
from assaylib import errors
from assaylib.jobs import ANALYSIS_TIMEOUT, INTERNAL_ERROR
from worker.analyzers.errors import UnsupportedAssessmentType
from worker.archive_client import ArchiveClient, is_refusal, is_transient
from worker.heartbeat import Heartbeat, Lease, Verdict
from worker.job_runner import error_code_of, parse_message
from worker.retry import ShuttingDown, backoff, retry_transient


class StubMsg:
    """Counts in-progress acks."""

    def __init__(self) -> None:
        self.progress = 0

    async def in_progress(self) -> None:
        self.progress += 1


class ScriptedArchive:
    """Answers heartbeats from a script: an exception to raise or a reply to return."""

    def __init__(self, script: list[Any]) -> None:
        self.script = script
        self.calls: list[tuple[str, str, int]] = []

    async def heartbeat(self, job_id: str, worker_id: str, attempt: int) -> pb.HeartbeatResponse:
        self.calls.append((job_id, worker_id, attempt))
        step = self.script.pop(0)
        if isinstance(step, Exception):
            raise step
        return cast(pb.HeartbeatResponse, step)


def _heartbeat(script: list[Any]) -> tuple[Heartbeat, StubMsg, ScriptedArchive]:
    msg, archive = StubMsg(), ScriptedArchive(script)
    beat = Heartbeat(msg, cast(ArchiveClient, archive), 0.01, {})  # type: ignore[arg-type]
    return beat, msg, archive


async def test_heartbeat_survives_archive_outages_and_reports_cancellation() -> None:
    beat, msg, archive = _heartbeat(
        [
            errors.Unavailable("archive down"),
            errors.DeadlineExceeded("slow"),
            pb.HeartbeatResponse(),
            pb.HeartbeatResponse(cancel_requested=True),
        ]
    )
    beat.hold(Lease("job-1", "w1", 3))
    beat.start()
    async with asyncio.timeout(5):
        await beat.stopped.wait()
    await beat.stop()
    assert beat.verdict is Verdict.CANCEL_REQUESTED
    assert archive.calls == [("job-1", "w1", 3)] * 4
    assert msg.progress == 4


async def test_heartbeat_lease_lost_or_refused_stops_the_attempt() -> None:
    for step in (pb.HeartbeatResponse(lease_lost=True), errors.NotFound("gone")):
        beat, _msg, _archive = _heartbeat([step])
        beat.hold(Lease("job-1", "w1", 1))
        await beat.beat()
        assert beat.verdict is Verdict.LEASE_LOST and beat.stopped.is_set()


async def test_heartbeat_before_start_only_keeps_the_message() -> None:
    beat, msg, archive = _heartbeat([])
    await beat.beat()
    assert msg.progress == 1 and archive.calls == [] and beat.verdict is None


def test_backoff_doubles_up_to_the_cap_with_a_little_jitter() -> None:
    delays = [backoff(n, base=1.0, cap=8.0) for n in range(1, 7)]
    for delay, expected in zip(delays, [1, 2, 4, 8, 8, 8], strict=True):
        assert expected <= delay <= expected * 1.1


async def test_retry_transient_retries_outages_but_not_refusals() -> None:
    stop = asyncio.Event()
    script: list[Exception | str] = [errors.Unavailable("down"), errors.Unavailable("down"), "ok"]

    async def call() -> str:
        step = script.pop(0)
        if isinstance(step, Exception):
            raise step
        return step

    deadline = time.monotonic() + 10
    assert (
        await retry_transient(call, deadline=deadline, stop=stop, log_extra={}, base=0.01) == "ok"
    )

    script = [errors.InvalidTransition("no"), "never"]
    with pytest.raises(errors.InvalidTransition):
        await retry_transient(call, deadline=deadline, stop=stop, log_extra={}, base=0.01)

    script = [errors.Unavailable("down")] * 3
    with pytest.raises(errors.Unavailable):  # past the deadline: the last error
        await retry_transient(call, deadline=time.monotonic(), stop=stop, log_extra={})

    stop.set()
    script = [errors.Unavailable("down"), "never"]
    with pytest.raises(ShuttingDown):
        await retry_transient(call, deadline=deadline, stop=stop, log_extra={})


def test_refusals_and_transient_errors_are_told_apart() -> None:
    for refusal in (
        errors.InvalidTransition("x"),
        errors.NotFound("x"),
        errors.InvalidArgument([]),
    ):
        assert is_refusal(refusal) and not is_transient(refusal)
    for transient in (errors.Unavailable("x"), errors.DeadlineExceeded("x"), errors.Internal("x")):
        assert is_transient(transient) and not is_refusal(transient)
    assert not is_transient(RuntimeError("not from the archive"))


def test_parse_message_rejects_garbage_and_messages_without_a_job() -> None:
    good = events_pb2.AnalysisJobMessage(job_id="j1", assessment_name="x")
    assert parse_message(good.SerializeToString()) == good
    assert parse_message(b"\xff\x00garbage") is None
    assert parse_message(events_pb2.AnalysisJobMessage(user_id="u").SerializeToString()) is None


def test_error_codes_of_transient_failures() -> None:
    assert error_code_of(TimeoutError()) == ANALYSIS_TIMEOUT
    assert error_code_of(RuntimeError("boom")) == INTERNAL_ERROR
    assert error_code_of(errors.Unavailable("down")) == "ARCHIVE_UNAVAILABLE"
    assert error_code_of(UnsupportedAssessmentType("x")) == "UNSUPPORTED_ASSESSMENT_TYPE"


class CapturingStub:
    """An archive stub that records the failure reports it receives."""

    def __init__(self) -> None:
        self.requests: list[pb.FailJobRequest] = []

    async def ReportJobs(self, request: pb.ReportJobsRequest, **options: Any) -> Any:
        self.requests += [report.fail for report in request.reports]
        done = pb.JobReportOutcome(job=job_pb2.Job())
        return pb.ReportJobsResponse(outcomes=[done for _ in request.reports])


async def test_a_failure_message_is_made_storable_before_it_is_sent() -> None:
    stub = CapturingStub()
    client = ArchiveClient(cast(Any, stub), timeout=1.0)
    await client.fail_job("job", "BROKEN", "bad \x00 byte " + "x" * 5000, worker_id="w", attempt=1)
    sent = stub.requests[0].error_message
    assert "\x00" not in sent and sent.startswith("bad \ufffd byte")
    assert len(sent) == 1000 and sent.endswith("…")
