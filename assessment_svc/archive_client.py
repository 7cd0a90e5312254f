"""The assessment service's client of the ArchiveService: one call per method, each bounded
by the caller's remaining deadline.

The archive's domain errors (NOT_FOUND, INSUFFICIENT_TOKENS, RATE_LIMITED, ALREADY_EXISTS,
INVALID_TRANSITION, ...) pass through to our caller unchanged. Two kinds are translated:
an unreachable archive becomes our own UNAVAILABLE (without the archive's address), and the
archive refusing *our* credentials becomes INTERNAL, because it is our misconfiguration and
not the caller's bad token.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import grpc
import grpc.aio

from assay.archive.v1 import archive_service_pb2 as pb
from assay.archive.v1 import archive_service_pb2_grpc as pb_grpc
from assay.common.v1 import job_pb2
from assaylib import errors
from assaylib.auth import service_token
from assaylib.batching import Batcher
from assaylib.channels import open_channel
from assaylib.config import Settings

__all__ = ["DEFAULT_TIMEOUT", "SERVICE_IDENTITY", "ArchiveClient", "Budget"]

DEFAULT_TIMEOUT = 10.0
"""Seconds an archive call may take when our caller set no deadline."""
SERVICE_IDENTITY = "assessment"
"""The ``sub`` of the service token the assessment service presents to the archive."""

log = logging.getLogger(__name__)

Reply = TypeVar("Reply")


class Budget:
    """The time left for one RPC: the caller's deadline, or ``DEFAULT_TIMEOUT`` when none."""

    def __init__(self, seconds: float | None, default: float = DEFAULT_TIMEOUT) -> None:
        total = default if seconds is None else seconds
        self._deadline = time.monotonic() + total

    @classmethod
    def of(cls, context: grpc.aio.ServicerContext[object, object]) -> Budget:
        """The budget of the RPC being served (``context.time_remaining()``)."""
        return cls(context.time_remaining())

    def wall_deadline(self) -> float:
        """The deadline on the wall clock (seconds since the epoch), for the archive to check
        against its own clock."""
        return time.time() + (self._deadline - time.monotonic())

    def remaining(self) -> float:
        """Seconds left; raises DeadlineExceeded when the budget is spent."""
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise errors.DeadlineExceeded("deadline exceeded before calling the archive")
        return left


class ArchiveClient:
    """Typed calls to the ArchiveService over one channel, each within a ``Budget``."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._channel = channel
        self._stub = pb_grpc.ArchiveServiceStub(channel)
        self._submissions: Batcher[pb.CreateSubmissionRequest, pb.CreateSubmissionResponse] = (
            Batcher("CreateSubmissions", self._submit_batch, key=id)
        )

    @classmethod
    def connect(cls, settings: Settings) -> ArchiveClient:
        """A client on ``settings.archive_addr`` presenting the assessment service's token."""
        token = service_token(settings, SERVICE_IDENTITY)
        return cls(open_channel(settings.archive_addr, settings, token=token))

    async def close(self) -> None:
        """Close the channel (in-flight calls are cancelled)."""
        await self._channel.close()

    async def create_submission(
        self, request: pb.CreateSubmissionRequest, budget: Budget
    ) -> pb.CreateSubmissionResponse:
        """Charge, record and queue a validated submission. Concurrent submissions travel
        together in one CreateSubmissions call; each keeps its own outcome and deadline: the
        archive writes nothing for a submission once its deadline has passed."""
        request.deadline.FromNanoseconds(int(budget.wall_deadline() * 1e9))
        # asyncio.timeout, not wait_for: no task of its own per submission.
        async with asyncio.timeout(budget.remaining()):
            return await self._submissions.submit(request)

    async def create_submissions_atomic(
        self, requests: Sequence[pb.CreateSubmissionRequest], budget: Budget
    ) -> list[pb.CreateSubmissionResponse]:
        """Charge, record and queue every validated submission in one transaction, or none:
        the archive's refusal of the first failing item is the call's error."""
        deadline = int(budget.wall_deadline() * 1e9)
        for request in requests:
            request.deadline.FromNanoseconds(deadline)
        batch = pb.CreateSubmissionsRequest(submissions=requests, atomic=True)
        reply: pb.CreateSubmissionsResponse = await _call(
            self._stub.CreateSubmissions, batch, budget
        )
        return [o.created for o in reply.outcomes]

    async def _submit_batch(
        self, requests: Sequence[pb.CreateSubmissionRequest]
    ) -> list[pb.CreateSubmissionResponse | BaseException]:
        batch = pb.CreateSubmissionsRequest(submissions=requests)
        # The batch lives as long as its longest-waiting caller, and no longer.
        latest = max(r.deadline.ToNanoseconds() for r in requests) / 1e9
        reply: pb.CreateSubmissionsResponse = await _call(
            self._stub.CreateSubmissions, batch, Budget(latest - time.time())
        )
        return [
            o.created if o.HasField("created") else _item_error(o.error) for o in reply.outcomes
        ]

    async def get_job(self, job_id: str, owner: str, budget: Budget) -> job_pb2.Job:
        """One job; NOT_FOUND unless it belongs to ``owner`` (any owner when empty)."""
        request = pb.GetJobRequest(job_id=job_id, user_id=owner)
        return (await _call(self._stub.GetJob, request, budget)).job

    async def list_jobs(self, request: pb.ListJobsRequest, budget: Budget) -> pb.ListJobsResponse:
        """One page of jobs, newest first."""
        return await _call(self._stub.ListJobs, request, budget)

    async def get_result(
        self, result_id: str, owner: str, budget: Budget, *, reader: str = ""
    ) -> job_pb2.AnalysisResult:
        """One result row; NOT_FOUND unless it belongs to ``owner`` (any when empty).
        ``reader`` names the end reader for the archive's access record (``reader_name``)."""
        request = pb.GetResultRequest(result_id=result_id, user_id=owner, reader=reader)
        return (await _call(self._stub.GetResult, request, budget)).result

    async def cancel_job(self, job_id: str, owner: str, budget: Budget) -> job_pb2.Job:
        """Cancel a queued job, or ask a processing job's worker to stop."""
        request = pb.CancelJobRequest(job_id=job_id, user_id=owner)
        return (await _call(self._stub.CancelJob, request, budget)).job

    async def retry_job(
        self, job_id: str, owner: str, max_inflight: int, budget: Budget
    ) -> pb.RetryJobResponse:
        """Charge again and re-queue a failed job."""
        request = pb.RetryJobRequest(job_id=job_id, user_id=owner, max_inflight=max_inflight)
        return await _call(self._stub.RetryJob, request, budget)

    async def balance(self, user_id: str, budget: Budget) -> int:
        """A user's token balance."""
        request = pb.GetTokenBalanceRequest(user_id=user_id)
        return (await _call(self._stub.GetTokenBalance, request, budget)).balance


async def _call(method: Callable[..., Awaitable[Reply]], request: object, budget: Budget) -> Reply:
    try:
        return await method(request, timeout=budget.remaining())
    except grpc.aio.AioRpcError as err:
        raise _translate(err) from err


def _item_error(item: pb.ItemError) -> errors.AssayError:
    return errors.error_from_parts(item.code, item.message, item.reason, item.metadata)


def _translate(err: grpc.aio.AioRpcError) -> Exception:
    """The error to raise for a failed archive call (most pass through unchanged)."""
    code = err.code()
    # CANCELLED from the archive is an archive that stopped as the call reached it (our own
    # call being cancelled ends this coroutine instead): as transient as an unreachable one.
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
        log.warning("archive unavailable: %s", err.details())
        return errors.Unavailable("the archive is unavailable; retry")
    if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        log.error("the archive refused the assessment service's credentials: %s", err.details())
        return errors.Internal("internal error")
    return err
