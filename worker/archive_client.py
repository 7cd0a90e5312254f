"""A thin, typed client of the ArchiveService calls a worker makes.

Every call carries a deadline, and a failed call is raised as the AssayError the archive
meant (``InvalidTransition``, ``NotFound``, ``Unavailable`` …), never as a raw AioRpcError.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import grpc
import grpc.aio
from google.protobuf.message import Message

from assay.archive.v1 import archive_service_pb2 as pb
from assay.archive.v1 import archive_service_pb2_grpc as pb_grpc
from assay.common.v1 import assessment_pb2, job_pb2
from assaylib import errors
from assaylib.batching import Batcher
from assaylib.errors import clip, error_from_rpc

Reply = TypeVar("Reply", bound=Message)
MAX_ERROR_MESSAGE = 1000  # characters of a failure's message sent to the archive

REFUSALS: tuple[type[errors.AssayError], ...] = (
    errors.FailedPrecondition,
    errors.NotFound,
    errors.InvalidArgument,
)
"""Errors that say the archive decided: retrying the same call cannot succeed."""


def is_refusal(err: BaseException) -> bool:
    """True for a decided refusal (state machine, unknown job, bad request)."""
    return isinstance(err, REFUSALS)


def is_transient(err: BaseException) -> bool:
    """True for an archive error worth retrying (unavailable, deadline, internal …)."""
    return isinstance(err, errors.AssayError) and not is_refusal(err)


def _reported_job(report: pb.JobReport) -> str:
    """The job a report is about (the batcher's key)."""
    which = report.WhichOneof("report")
    return getattr(report, which).job_id if which else ""


def _item_error(item: pb.ItemError) -> errors.AssayError:
    return errors.error_from_parts(item.code, item.message, item.reason, item.metadata)


class ArchiveClient:
    """The worker's view of the archive: one method per call it makes, each with a deadline.
    Starts, heartbeats and reports of concurrent jobs travel together in batch RPCs
    (``worker.batching``); each still succeeds or fails on its own."""

    def __init__(self, stub: pb_grpc.ArchiveServiceAsyncStub, *, timeout: float) -> None:
        self.stub = stub
        self.timeout = timeout
        self._starts: Batcher[pb.StartJobRequest, job_pb2.Job] = Batcher(
            "StartJobs", self._start_batch, key=lambda r: r.job_id
        )
        self._reports: Batcher[pb.JobReport, job_pb2.Job] = Batcher(
            "ReportJobs", self._report_batch, key=_reported_job
        )
        self._beats: Batcher[pb.HeartbeatRequest, pb.HeartbeatResponse] = Batcher(
            "Heartbeats", self._heartbeat_batch, key=lambda r: r.job_id
        )

    async def _call(self, method: Callable[..., Awaitable[Reply]], request: Message) -> Reply:
        try:
            return await method(request, timeout=self.timeout)
        except grpc.aio.AioRpcError as err:
            raise error_from_rpc(err) from err

    async def _start_batch(
        self, requests: Sequence[pb.StartJobRequest]
    ) -> list[job_pb2.Job | BaseException]:
        reply: pb.StartJobsResponse = await self._call(
            self.stub.StartJobs, pb.StartJobsRequest(starts=requests)
        )
        return [
            o.started.job if o.HasField("started") else _item_error(o.error) for o in reply.outcomes
        ]

    async def _report_batch(
        self, reports: Sequence[pb.JobReport]
    ) -> list[job_pb2.Job | BaseException]:
        reply: pb.ReportJobsResponse = await self._call(
            self.stub.ReportJobs, pb.ReportJobsRequest(reports=reports)
        )
        return [o.job if o.HasField("job") else _item_error(o.error) for o in reply.outcomes]

    async def _heartbeat_batch(
        self, requests: Sequence[pb.HeartbeatRequest]
    ) -> list[pb.HeartbeatResponse | BaseException]:
        reply: pb.HeartbeatsResponse = await self._call(
            self.stub.Heartbeats, pb.HeartbeatsRequest(heartbeats=requests)
        )
        return list(reply.replies)

    async def create_result(
        self,
        job_id: str,
        test_data: assessment_pb2.AssessmentData,
        raw_responses: assessment_pb2.RawResponses,
    ) -> job_pb2.AnalysisResult:
        """Create (or return the existing) result row of a job from an older producer."""
        request = pb.CreateResultRequest(
            job_id=job_id, test_data=test_data, raw_responses=raw_responses
        )
        reply: pb.CreateResultResponse = await self._call(self.stub.CreateResult, request)
        return reply.result

    async def start_job(self, job_id: str, worker_id: str) -> job_pb2.Job:
        """Begin an attempt (or take over an expired one); the job may come back finished."""
        return await self._starts.submit(pb.StartJobRequest(job_id=job_id, worker_id=worker_id))

    async def heartbeat(self, job_id: str, worker_id: str, attempt: int) -> pb.HeartbeatResponse:
        """Extend the attempt's lease; the reply says whether to go on."""
        request = pb.HeartbeatRequest(job_id=job_id, worker_id=worker_id, attempt=attempt)
        return await self._beats.submit(request)

    async def complete_job(
        self,
        job_id: str,
        worker_id: str,
        attempt: int,
        test_result: assessment_pb2.PersonaProfile,
    ) -> job_pb2.Job:
        """Store the profile and move the job to COMPLETED."""
        # Written in place in its report: each message that holds the profile (8-9 KB) is a
        # deep copy of it, so it is copied once here and once into the batch.
        report = pb.JobReport()
        complete = report.complete
        complete.job_id, complete.worker_id, complete.attempt = job_id, worker_id, attempt
        complete.test_result.CopyFrom(test_result)
        return await self._reports.submit(report)

    async def fail_job(
        self,
        job_id: str,
        error_code: str,
        error_message: str,
        *,
        worker_id: str = "",
        attempt: int = 0,
    ) -> job_pb2.Job:
        """Fail the job (refunding it). Without worker_id: a QUEUED job or an expired lease.
        The message (often an exception's text) is made storable: NUL replaced, clipped."""
        request = pb.FailJobRequest(
            job_id=job_id,
            worker_id=worker_id,
            attempt=attempt,
            error_code=error_code,
            error_message=clip(error_message.replace("\x00", "\ufffd"), MAX_ERROR_MESSAGE),
        )
        return await self._reports.submit(pb.JobReport(fail=request))

    async def report_cancelled(self, job_id: str, worker_id: str, attempt: int) -> job_pb2.Job:
        """Report that this attempt stopped after seeing cancel_requested."""
        request = pb.CancelJobRequest(job_id=job_id, worker_id=worker_id, attempt=attempt)
        return await self._reports.submit(pb.JobReport(cancelled=request))
