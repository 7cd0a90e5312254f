"""``AssayClient``: typed, deadline-bounded calls to the AssessmentService and the notifier.

Submissions carry a request id (one is made when the caller gives none), so retrying them is
safe: UNAVAILABLE is retried by gRPC itself (the channel's retry policy, with backoff), and
DEADLINE_EXCEEDED by ``submit`` with the same id. Reads are retried the same way; cancel and
retry are not (a retry charges again).
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
import grpc.aio

from assay.assessment.v1 import assessment_service_pb2 as pb
from assay.assessment.v1 import assessment_service_pb2_grpc as pb_grpc
from assay.common.v1 import assessment_pb2, job_pb2
from assay_client.errors import DeadlineExceeded, from_rpc_error
from assay_client.tokens import TokenSource, bearer_interceptors
from assay_client.watch import CursorStore, Watch, WatchItem

__all__ = ["TERMINAL", "AssayClient"]

Reply = TypeVar("Reply")

TERMINAL = frozenset(
    {job_pb2.JOB_STATUS_COMPLETED, job_pb2.JOB_STATUS_FAILED, job_pb2.JOB_STATUS_CANCELLED}
)
"""The statuses a job ends in (only RetryJob leaves one)."""

_RETRIED = ["SubmitAssessment", "GetJob", "ListJobs", "GetResult", "GetTokenBalance"]
SERVICE_CONFIG = json.dumps(
    {
        "methodConfig": [
            {
                "name": [
                    {"service": "assay.assessment.v1.AssessmentService", "method": method}
                    for method in _RETRIED
                ],
                "retryPolicy": {
                    "maxAttempts": 5,
                    "initialBackoff": "0.1s",
                    "maxBackoff": "2s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    }
)
"""gRPC's own retries: UNAVAILABLE on idempotent calls (submissions are, by request id)."""
CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.enable_retries", 1),
    ("grpc.service_config", SERVICE_CONFIG),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 5_000),
]


class AssayClient:
    """A client of one Assay deployment: the assessment service and, for watches, the notifier.

    ``token`` is a bearer token, a path to a file holding one (read again when it changes),
    or a callable. ``credentials`` turns on TLS. Every call is bounded by ``timeout`` seconds
    unless it names its own ``deadline`` (seconds; sent to the server, which honours it end
    to end).
    """

    def __init__(
        self,
        assessment_addr: str,
        *,
        token: TokenSource,
        notifier_addr: str = "",
        credentials: grpc.ChannelCredentials | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.timeout = timeout
        self._channels: list[grpc.aio.Channel] = []
        self._assessment = pb_grpc.AssessmentServiceStub(
            self._open(assessment_addr, token, credentials)
        )
        self._notifier_channel = (
            self._open(notifier_addr, token, credentials) if notifier_addr else None
        )

    def _open(
        self, addr: str, token: TokenSource, credentials: grpc.ChannelCredentials | None
    ) -> grpc.aio.Channel:
        interceptors = bearer_interceptors(token)
        if credentials is None:
            channel = grpc.aio.insecure_channel(
                addr, options=CHANNEL_OPTIONS, interceptors=interceptors
            )
        else:
            channel = grpc.aio.secure_channel(
                addr, credentials, options=CHANNEL_OPTIONS, interceptors=interceptors
            )
        self._channels.append(channel)
        return channel

    async def __aenter__(self) -> AssayClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the channels (calls in flight are cancelled)."""
        for channel in self._channels:
            await channel.close()

    async def submit(
        self,
        assessment_data: assessment_pb2.AssessmentData,
        *,
        raw_responses: assessment_pb2.RawResponses | None = None,
        assessment_name: str = "",
        request_id: str = "",
        attempts: int = 3,
        deadline: float | None = None,
    ) -> pb.SubmitAssessmentResponse:
        """Charge a token and queue an analysis; the job and the balance left. The request id
        (made here when not given) makes retries safe: a repeat returns the first reply and
        charges nothing. A call that runs out of time is tried again, up to ``attempts``."""
        request = pb.SubmitAssessmentRequest(
            assessment_name=assessment_name,
            assessment_data=assessment_data,
            raw_responses=raw_responses,
            request_id=request_id or uuid.uuid4().hex,
        )
        for attempt in range(1, attempts + 1):
            try:
                reply: pb.SubmitAssessmentResponse = await self._call(
                    self._assessment.SubmitAssessment, request, deadline
                )
                return reply
            except DeadlineExceeded:
                if attempt == attempts:
                    raise
        raise AssertionError("unreachable")

    async def get(self, job_id: str, *, deadline: float | None = None) -> job_pb2.Job:
        """One job."""
        reply = await self._call(self._assessment.GetJob, pb.GetJobRequest(job_id=job_id), deadline)
        return reply.job

    async def list(
        self,
        *,
        status: job_pb2.JobStatus.ValueType = job_pb2.JOB_STATUS_UNSPECIFIED,
        user_id: str = "",
        page_size: int = 100,
    ) -> AsyncIterator[job_pb2.Job]:
        """Every job (the caller's, or ``user_id``'s for services and operators), newest
        first, fetched a page at a time."""
        token = ""
        while True:
            request = pb.ListJobsRequest(
                status=status, user_id=user_id, page_size=page_size, page_token=token
            )
            page = await self._call(self._assessment.ListJobs, request, None)
            for job in page.jobs:
                yield job
            token = page.next_page_token
            if not token:
                return

    async def cancel(self, job_id: str, *, deadline: float | None = None) -> job_pb2.Job:
        """Cancel a queued job, or ask a running one's worker to stop."""
        request = pb.CancelJobRequest(job_id=job_id)
        return (await self._call(self._assessment.CancelJob, request, deadline)).job

    async def retry(self, job_id: str, *, deadline: float | None = None) -> pb.RetryJobResponse:
        """Queue a failed job again (charges again)."""
        request = pb.RetryJobRequest(job_id=job_id)
        reply: pb.RetryJobResponse = await self._call(self._assessment.RetryJob, request, deadline)
        return reply

    async def balance(self, user_id: str = "", *, deadline: float | None = None) -> int:
        """The token balance (the caller's, or ``user_id``'s)."""
        request = pb.GetTokenBalanceRequest(user_id=user_id)
        return int((await self._call(self._assessment.GetTokenBalance, request, deadline)).balance)

    async def result(self, job_id: str, *, deadline: float | None = None) -> job_pb2.AnalysisResult:
        """A job's result row: its inputs and, once completed, the persona profile."""
        request = pb.GetResultRequest(job_id=job_id)
        return (await self._call(self._assessment.GetResult, request, deadline)).result

    async def wait(self, job_id: str) -> tuple[job_pb2.Job, job_pb2.AnalysisResult | None]:
        """Wait for a job to end (through the notifier); the final job, and its result when it
        completed."""
        async with contextlib.aclosing(self.watch(job_id=job_id)) as items:
            async for item in items:
                if item.status in TERMINAL:
                    break
        job = await self.get(job_id)
        if job.status != job_pb2.JOB_STATUS_COMPLETED:
            return job, None
        return job, await self.result(job_id)

    def watch(
        self,
        *,
        user_id: str = "",
        job_id: str = "",
        resume_after: int = 0,
        snapshot: bool = True,
        cursor_store: CursorStore | None = None,
    ) -> AsyncGenerator[WatchItem, None]:
        """Every status change, as it happens, across disconnects: see ``Watch``."""
        if self._notifier_channel is None:
            raise ValueError("watching needs the notifier's address (notifier_addr=)")
        return Watch(
            self._notifier_channel,
            user_id=user_id,
            job_id=job_id,
            resume_after=resume_after,
            snapshot=snapshot,
            cursor_store=cursor_store,
        ).items()

    async def _call(
        self, method: Callable[..., Awaitable[Reply]], request: Any, deadline: float | None
    ) -> Reply:
        try:
            return await method(request, timeout=deadline or self.timeout)
        except grpc.aio.AioRpcError as err:
            raise from_rpc_error(err) from None
