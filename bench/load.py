"""The load a measurement applies: submissions (closed or open loop) through the assessment
service, and WatchJobs streams that observe every transition."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio

from assay.assessment.v1 import assessment_service_pb2 as pb
from assay.common.v1 import assessment_pb2
from assay.notifier.v1 import notifier_service_pb2 as notifier_pb
from assaylib.validation import score_fields
from bench.stack import BenchStack


def sample(seed: int) -> assessment_pb2.AssessmentData:
    """A complete, varied Talent Mapping payload."""
    data = assessment_pb2.AssessmentData()
    for group in ("riasec", "ocean", "via_is"):
        message = getattr(data, group)
        for index, name in enumerate(score_fields(message)):
            setattr(message, name, (seed * 31 + index * 17) % 101)
    return data


def user_name(index: int) -> str:
    """The bench's users: bench-user-0, bench-user-1, …"""
    return f"bench-user-{index}"


@dataclass
class Submissions:
    """What the submitters saw: latencies (seconds), job ids, failures and the first start."""

    latencies: list[float] = field(default_factory=list)
    job_ids: list[str] = field(default_factory=list)
    failures: Counter[str] = field(default_factory=Counter)
    started: float = 0.0


class Submitter:
    """Submits through the assessment service as the bench's users, one channel per user."""

    def __init__(self, stack: BenchStack, users: int) -> None:
        self.stubs: list[Any] = []
        self.channels: list[grpc.aio.Channel] = []
        for index in range(users):
            channel, stub = stack.assessment(user_name(index))
            self.channels.append(channel)
            self.stubs.append(stub)
        self.result = Submissions()

    async def close(self) -> None:
        """Close every channel."""
        for channel in self.channels:
            await channel.close()

    async def submit(self, index: int, scheduled: float | None = None) -> None:
        """Submit job ``index`` as user ``index % users``; time it from ``scheduled`` (the
        open loop's intended start, so queueing in the client counts) or from now."""
        started = scheduled if scheduled is not None else time.perf_counter()
        request = pb.SubmitAssessmentRequest(
            assessment_data=sample(index), request_id=str(uuid.uuid4())
        )
        try:
            reply = await self.stubs[index % len(self.stubs)].SubmitAssessment(request, timeout=60)
        except grpc.aio.AioRpcError as err:
            self.result.failures[err.code().name] += 1
            return
        self.result.latencies.append(time.perf_counter() - started)
        self.result.job_ids.append(reply.job.job_id)

    async def closed_loop(self, jobs: int, concurrency: int) -> Submissions:
        """Submit ``jobs`` from ``concurrency`` callers, each waiting for its reply."""
        pending = iter(range(jobs))
        self.result.started = time.perf_counter()

        async def caller() -> None:
            for index in pending:
                await self.submit(index)

        await asyncio.gather(*(caller() for _ in range(concurrency)))
        return self.result

    async def open_loop(self, rate: float, duration: float) -> Submissions:
        """Submit at ``rate`` per second for ``duration`` seconds, whatever the replies do."""
        total = int(rate * duration)
        self.result.started = start = time.perf_counter()
        tasks = []
        for index in range(total):
            scheduled = start + index / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(self.submit(index, scheduled)))
        await asyncio.gather(*tasks)
        return self.result


class Watcher:
    """One WatchJobs stream: counts events by type and the latency of each (the event's
    commit timestamp to its arrival here)."""

    def __init__(self, stub: Any, user: str = "") -> None:
        self.request = notifier_pb.WatchJobsRequest(user_id=user)
        self.stub = stub
        self.live = asyncio.Event()
        self.counts: Counter[str] = Counter()
        self.latencies: list[float] = []
        self.last_completed = 0.0
        self._targets: dict[str, tuple[int, asyncio.Event]] = {}
        self._task: asyncio.Task[None] | None = None
        self.error: str = ""

    def start(self) -> None:
        """Open the stream in the background."""
        self._task = asyncio.create_task(self._run())

    def expect(self, event_type: str, count: int) -> asyncio.Event:
        """An event set once ``count`` events of ``event_type`` arrived."""
        reached = asyncio.Event()
        self._targets[event_type] = (count, reached)
        self._check(event_type)
        return reached

    def _check(self, event_type: str) -> None:
        target = self._targets.get(event_type)
        if target is not None and self.counts[event_type] >= target[0]:
            target[1].set()

    async def _run(self) -> None:
        call = self.stub.WatchJobs(self.request)
        try:
            async for item in call:
                kind = item.WhichOneof("kind")
                if kind == "bookmark":
                    self.live.set()
                elif kind == "event":
                    self._record(item.event)
        except grpc.aio.AioRpcError as err:
            if err.code() != grpc.StatusCode.CANCELLED:
                self.error = f"{err.code().name}: {err.details()}"
                self.live.set()

    def _record(self, event: Any) -> None:
        now = time.time()
        self.latencies.append(now - event.occurred_at.ToNanoseconds() / 1e9)
        self.counts[event.event_type] += 1
        if event.event_type == "analysis.completed":
            self.last_completed = time.perf_counter()
        self._check(event.event_type)

    async def stop(self) -> None:
        """Close the stream."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
