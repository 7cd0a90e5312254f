"""``AssayClient``: typed, deadline-bounded calls to the AssessmentService and the notifier.

Submissions carry a request id (one is made when the caller gives none), so retrying them is
safe: UNAVAILABLE (and the CANCELLED of a server that was stopping) is retried by gRPC itself
(the channel's retry policy, with backoff), and DEADLINE_EXCEEDED by ``submit`` with the same
id. Reads are retried the same way; cancel and
retry are not (a retry charges again).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Sequence
from typing import Any, Literal, TypeVar

import grpc
import grpc.aio

from assay.assessment.v1 import assessment_service_pb2 as pb
from assay.assessment.v1 import assessment_service_pb2_grpc as pb_grpc
from assay.common.v1 import assessment_pb2, job_pb2
from assay_client.errors import DeadlineExceeded, from_rpc_error
from assay_client.listing import JobList
from assay_client.tokens import TokenSource, bearer_interceptors
from assay_client.watch import CursorStore, Watch, WatchItem

__all__ = ["MAX_BATCH", "TERMINAL", "AssayClient", "channel_ready"]

MAX_BATCH = 1000
"""Submissions one SubmitAssessments call may carry."""
MAX_CALL_BYTES = 3 * 1024 * 1024
"""Bytes of submissions per call: under gRPC's 4 MiB message limit, with room for what the
assessment service adds on its way to the archive."""

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
                    # CANCELLED: what a server that stops as the call reaches it answers (a
                    # call the client itself cancels is never retried).
                    "retryableStatusCodes": ["UNAVAILABLE", "CANCELLED"],
                },
            }
        ]
    }
)
"""gRPC's own retries: UNAVAILABLE and a stopping server's CANCELLED on idempotent calls
(submissions are, by request id)."""
CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.enable_retries", 1),
    ("grpc.service_config", SERVICE_CONFIG),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 5_000),
    # Each client keeps its own connections: with gRPC's process-wide pool, a new channel to
    # an address whose server died inherits that failure and its backoff.
    ("grpc.use_local_subchannel_pool", 1),
    # Spread calls over every address the target names (the replicas behind a headless
    # Service, or a comma-separated ``ip:port,ip:port`` list), not just the first.
    ("grpc.lb_policy_name", "round_robin"),
    ("grpc.max_send_message_length", 4 * 1024 * 1024),
    ("grpc.max_receive_message_length", 4 * 1024 * 1024),
]

Service = Literal["assessment", "notifier"]


def _batches(
    items: Sequence[pb.SubmitAssessmentRequest], size: int
) -> Iterable[pb.SubmitAssessmentsRequest]:
    """Calls of up to ``size`` items and ``MAX_CALL_BYTES`` each (gRPC's message limit)."""
    batch, used = pb.SubmitAssessmentsRequest(), 0
    for item in items:
        cost = item.ByteSize() + 8  # the item's tag and length
        if batch.requests and (len(batch.requests) == size or used + cost > MAX_CALL_BYTES):
            yield batch
            batch, used = pb.SubmitAssessmentsRequest(), 0
        batch.requests.append(item)
        used += cost
    if batch.requests:
        yield batch


def _with_request_id(request: pb.SubmitAssessmentRequest) -> pb.SubmitAssessmentRequest:
    if request.request_id:
        return request
    named = pb.SubmitAssessmentRequest()
    named.CopyFrom(request)
    named.request_id = uuid.uuid4().hex
    return named


async def channel_ready(channel: grpc.aio.Channel, within: float) -> bool:
    """Connect ``channel``; False as soon as a connection attempt fails (nothing listens
    there) or ``within`` seconds pass, True once it is connected."""
    try:
        async with asyncio.timeout(within):
            state = channel.get_state(try_to_connect=True)
            while state != grpc.ChannelConnectivity.READY:
                if state == grpc.ChannelConnectivity.TRANSIENT_FAILURE:
                    return False
                await channel.wait_for_state_change(state)
                state = channel.get_state(try_to_connect=True)
            return True
    except TimeoutError:
        return False


class AssayClient:
    """A client of one Assay deployment: the assessment service and, for watches, the notifier.

    ``token`` is a bearer token, a path to a file holding one (read again when it changes),
    or a callable. An address is ``host:port`` (every address the name resolves to is used,
    round robin) or a list ``ip:port,ip:port``. ``credentials`` turns on TLS
    (``tls_credentials()`` reads the PEM files).
    ``interceptors`` run on every call, before the one that sends the token (tracing, for
    example). Every call is bounded by ``timeout`` seconds unless it names its own
    ``deadline`` (seconds; sent to the server, which honours it end to end).

    The channels connect lazily, on the first call; ``reachable()`` connects one now and
    says whether anything answers there.
    """

    def __init__(
        self,
        assessment_addr: str,
        *,
        token: TokenSource,
        notifier_addr: str = "",
        credentials: grpc.ChannelCredentials | None = None,
        interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
        timeout: float = 10.0,
    ) -> None:
        self.timeout = timeout
        self.addrs: dict[Service, str] = {"assessment": assessment_addr}
        """The address of each service this client calls."""
        self._channels: dict[Service, grpc.aio.Channel] = {}
        opened = self._open(assessment_addr, token, credentials, interceptors)
        self._channels["assessment"] = opened
        self._assessment = pb_grpc.AssessmentServiceStub(opened)
        if notifier_addr:
            self.addrs["notifier"] = notifier_addr
            self._channels["notifier"] = self._open(notifier_addr, token, credentials, interceptors)

    def _open(
        self,
        addr: str,
        token: TokenSource,
        credentials: grpc.ChannelCredentials | None,
        extra: Sequence[grpc.aio.ClientInterceptor],
    ) -> grpc.aio.Channel:
        interceptors = [*extra, *bearer_interceptors(token)]
        addr = f"ipv4:{addr}" if "," in addr else addr  # a fixed list of replicas
        if credentials is None:
            return grpc.aio.insecure_channel(
                addr, options=CHANNEL_OPTIONS, interceptors=interceptors
            )
        return grpc.aio.secure_channel(
            addr, credentials, options=CHANNEL_OPTIONS, interceptors=interceptors
        )

    async def __aenter__(self) -> AssayClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the channels (calls in flight are cancelled)."""
        for channel in self._channels.values():
            await channel.close()

    async def reachable(self, service: Service = "assessment", *, within: float = 5.0) -> bool:
        """Whether ``service`` answers: connects its channel now, and says False as soon as
        a connection attempt fails or ``within`` seconds pass. A caller can tell "nothing
        listens there" apart from a refused call before making one."""
        if service not in self._channels:
            raise ValueError(f"this client has no address for the {service} service")
        return await channel_ready(self._channels[service], within)

    async def submit(
        self,
        assessment_data: assessment_pb2.AssessmentData | None,
        *,
        raw_responses: assessment_pb2.RawResponses | None = None,
        assessment_name: str = "",
        request_id: str = "",
        locale: str = "",
        attempts: int = 3,
        deadline: float | None = None,
    ) -> pb.SubmitAssessmentResponse:
        """Charge a token and queue an analysis; the job and the balance left. The request id
        (made here when not given) makes retries safe: a repeat returns the first reply and
        charges nothing (None ``assessment_data`` for an assessment that carries only
        ``raw_responses``). A call that runs out of time is tried again, up to ``attempts``.
        ``locale`` picks the profile's language (``id`` or ``en``; "" for the service's
        default)."""
        request = pb.SubmitAssessmentRequest(
            assessment_name=assessment_name,
            assessment_data=assessment_data,
            raw_responses=raw_responses,
            request_id=request_id or uuid.uuid4().hex,
            locale=locale,
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

    async def submit_many(
        self,
        requests: Iterable[pb.SubmitAssessmentRequest],
        *,
        chunk_size: int = MAX_BATCH,
        attempts: int = 3,
        deadline: float | None = None,
        on_progress: Callable[[int], None] | None = None,
    ) -> list[pb.SubmitAssessmentResponse]:
        """Submit many assessments in ``SubmitAssessments`` calls of up to ``chunk_size``
        (at most 1,000) and 3 MiB: each call is charged and recorded all or nothing. An
        item without a request id gets one here, so a call that runs out of time is tried
        again (up to ``attempts``) without charging twice. Items may name ``user_id`` when
        the caller may act for users. ``on_progress`` is called with the count accepted so
        far after each call. Returns one reply per item, in order; a refused call raises its
        error (the calls before it stay accepted: a repeat of the whole list replays them)."""
        if not 1 <= chunk_size <= MAX_BATCH:
            raise ValueError(f"chunk_size must be between 1 and {MAX_BATCH}")
        items = [_with_request_id(request) for request in requests]
        replies: list[pb.SubmitAssessmentResponse] = []
        for batch in _batches(items, chunk_size):
            reply = await self._retrying(
                self._assessment.SubmitAssessments, batch, attempts, deadline
            )
            replies.extend(reply.responses)
            if on_progress is not None:
                on_progress(len(replies))
        return replies

    async def _retrying(
        self,
        method: Callable[..., Awaitable[Reply]],
        request: Any,
        attempts: int,
        deadline: float | None,
    ) -> Reply:
        for attempt in range(1, attempts + 1):
            try:
                return await self._call(method, request, deadline)
            except DeadlineExceeded:
                if attempt == attempts:
                    raise
        raise AssertionError("unreachable")

    async def get(self, job_id: str, *, deadline: float | None = None) -> job_pb2.Job:
        """One job."""
        reply = await self._call(self._assessment.GetJob, pb.GetJobRequest(job_id=job_id), deadline)
        return reply.job

    def list(
        self,
        *,
        status: job_pb2.JobStatus.ValueType = job_pb2.JOB_STATUS_UNSPECIFIED,
        user_id: str = "",
        page_size: int = 100,
        limit: int = 0,
        page_token: str = "",
        deadline: float | None = None,
    ) -> JobList:
        """Jobs (the caller's, or ``user_id``'s for services and operators), newest first:
        ``async for job in assay.list()``, or a page at a time with ``.pages()``. At most
        ``limit`` jobs when it is set; ``.next_page_token`` then says where the rest start.
        See ``JobList``."""
        request = pb.ListJobsRequest(status=status, user_id=user_id, page_token=page_token)
        return JobList(
            self._assessment.ListJobs,
            request,
            page_size=page_size,
            limit=limit,
            timeout=deadline or self.timeout,
        )

    async def cancel(self, job_id: str, *, deadline: float | None = None) -> job_pb2.Job:
        """Cancel a queued job, or ask a running one's worker to stop."""
        request = pb.CancelJobRequest(job_id=job_id)
        return (await self._call(self._assessment.CancelJob, request, deadline)).job

    async def retry(self, job_id: str, *, deadline: float | None = None) -> pb.RetryJobResponse:
        """Queue a failed job again (charges again)."""
        request = pb.RetryJobRequest(job_id=job_id)
        reply: pb.RetryJobResponse = await self._call(self._assessment.RetryJob, request, deadline)
        return reply

    async def balance(
        self, user_id: str = "", *, deadline: float | None = None
    ) -> pb.GetTokenBalanceResponse:
        """The token balance (the caller's, or ``user_id``'s): ``.balance``, and ``.user_id``
        (whose it is)."""
        request = pb.GetTokenBalanceRequest(user_id=user_id)
        reply: pb.GetTokenBalanceResponse = await self._call(
            self._assessment.GetTokenBalance, request, deadline
        )
        return reply

    async def result(
        self, job_id: str = "", *, result_id: str = "", deadline: float | None = None
    ) -> job_pb2.AnalysisResult:
        """A result row, by its job or by ``result_id``: the inputs and, once the job
        completed, the persona profile."""
        request = pb.GetResultRequest(job_id=job_id, result_id=result_id)
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
        bookmarks: bool = False,
    ) -> AsyncGenerator[WatchItem, None]:
        """Every status change, as it happens, across disconnects: see ``Watch``. With
        ``bookmarks``, ``bookmark`` items say where the watch stands (the first one: it is
        live, everything committed from here on will come)."""
        if "notifier" not in self._channels:
            raise ValueError("watching needs the notifier's address (notifier_addr=)")
        return Watch(
            self._channels["notifier"],
            user_id=user_id,
            job_id=job_id,
            resume_after=resume_after,
            snapshot=snapshot,
            cursor_store=cursor_store,
            bookmarks=bookmarks,
        ).items()

    async def _call(
        self, method: Callable[..., Awaitable[Reply]], request: Any, deadline: float | None
    ) -> Reply:
        try:
            return await method(request, timeout=deadline or self.timeout)
        except grpc.aio.AioRpcError as err:
            raise from_rpc_error(err) from None
