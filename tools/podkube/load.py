"""Steady load for the prod shape: callers and watchers on ``assay-client``, in a thread.

Each user has one ``AssayClient`` (one connection to the assessment Service and one to the
notifier Service, each landing on the pod the kube-proxy stand-in picks) and one watch of its
own jobs opened before its first submission. Submissions go out at a fixed total rate, a
user holding back while it has ``INFLIGHT`` jobs unfinished. Everything is recorded with
``time.monotonic()`` stamps: what was accepted, what failed (after the client's own retries),
and every item each watcher yielded.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc
from assay_client import TERMINAL, AssayClient, AssayError

from assay.common.v1 import job_pb2
from assay_cli.loader import load_submission
from tools.podkube.run import SAMPLE

INFLIGHT = 9
"""Unfinished jobs one user may have before it waits (ASSAY_MAX_INFLIGHT_PER_USER is 10): a
user holding back is the load's doing, counted in ``held_back``, not a pause of Assay's."""
READY_WITHIN = 60.0


@dataclass
class Seen:
    """One thing a watcher yielded about a job."""

    at: float
    version: int
    status: int
    kind: str


@dataclass
class Record:
    """What the load saw, for the verification and the recovery times."""

    accepted: dict[str, str] = field(default_factory=dict)
    """job id → user."""
    accepted_at: list[float] = field(default_factory=list)
    failures: list[tuple[float, str]] = field(default_factory=list)
    seen: dict[str, list[Seen]] = field(default_factory=dict)
    event_at: list[float] = field(default_factory=list)
    watch_errors: list[str] = field(default_factory=list)
    held_back: list[float] = field(default_factory=list)
    """When a user skipped a submission, at its in-flight limit."""

    def terminal(self, job_id: str) -> bool:
        """Whether a watcher saw the job end."""
        return any(s.status in TERMINAL for s in self.seen.get(job_id, []))

    def unfinished(self, user: str) -> int:
        """Jobs of a user accepted and not yet seen ending."""
        return sum(1 for j, u in list(self.accepted.items()) if u == user and not self.terminal(j))


class Load:
    """``users`` callers submitting ``rate`` jobs a second in all, each watching its jobs."""

    def __init__(
        self,
        assessment: str,
        notifier: str,
        token: Callable[[str], str],
        users: list[str],
        rate: float,
        credentials: Callable[[], grpc.ChannelCredentials | None] = lambda: None,
    ) -> None:
        self.addresses = (assessment, notifier)
        self.token = token
        self.users = users
        self.rate = rate
        self.credentials = credentials
        self.record = Record()
        self.request, _warnings = load_submission(SAMPLE)
        self._submitting = threading.Event()
        self._stop = threading.Event()
        self._live = threading.Event()
        self._thread = threading.Thread(target=self._main, name="load", daemon=True)
        self._loop: asyncio.AbstractEventLoop | None = None
        self.error: BaseException | None = None

    def start(self) -> None:
        """Open the watches, wait until each is live, then start submitting."""
        self._thread.start()
        if not self._live.wait(READY_WITHIN):
            raise RuntimeError(f"watches not live within {READY_WITHIN:.0f}s: {self.error!r}")
        self._submitting.set()

    def pause(self) -> None:
        """Stop submitting (the watches go on)."""
        self._submitting.clear()

    def drain(self, timeout: float) -> list[str]:
        """Stop submitting; wait until every accepted job was seen ending; the ones not."""
        self.pause()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            left = [j for j in list(self.record.accepted) if not self.record.terminal(j)]
            if not left:
                return []
            time.sleep(0.5)
        return [j for j in list(self.record.accepted) if not self.record.terminal(j)]

    def stop(self) -> None:
        """End the thread (watches closed)."""
        self._stop.set()
        self._thread.join(30)

    def _main(self) -> None:
        try:
            asyncio.run(self._run())
        except BaseException as err:  # reported by start() or the verification
            self.error = err

    async def _run(self) -> None:
        assessment, notifier = self.addresses
        clients = [
            AssayClient(
                assessment,
                notifier_addr=notifier,
                token=lambda u=user: self.token(u),  # type: ignore[misc]
                credentials=self.credentials(),
                timeout=10.0,
            )
            for user in self.users
        ]
        live = [asyncio.Event() for _ in self.users]
        tasks = [asyncio.create_task(self._watch(c, e)) for c, e in zip(clients, live, strict=True)]
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in live)), READY_WITHIN)
        self._live.set()
        interval = len(self.users) / self.rate
        tasks += [
            asyncio.create_task(self._submit(c, u, interval, i / self.rate))
            for i, (c, u) in enumerate(zip(clients, self.users, strict=True))
        ]
        await asyncio.to_thread(self._stop.wait)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for client in clients:
            await client.close()

    async def _watch(self, client: AssayClient, live: asyncio.Event) -> None:
        try:
            async with contextlib.aclosing(client.watch(bookmarks=True)) as items:
                async for item in items:
                    now = time.monotonic()
                    if item.kind == "bookmark":
                        live.set()
                        continue
                    if item.kind == "relisted":
                        self.record.watch_errors.append("relisted: the watch lost its place")
                        continue
                    self.record.seen.setdefault(item.job_id, []).append(
                        Seen(now, item.version, item.status, item.kind)
                    )
                    if item.kind == "event":
                        self.record.event_at.append(now)
        except asyncio.CancelledError:
            raise
        except Exception as err:
            self.record.watch_errors.append(repr(err))

    async def _submit(self, client: AssayClient, user: str, interval: float, offset: float) -> None:
        await asyncio.sleep(offset)
        next_at = time.monotonic()
        while True:
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            if not self._submitting.is_set():
                continue
            if self.record.unfinished(user) >= INFLIGHT:
                self.record.held_back.append(time.monotonic())
                continue
            request_id = uuid.uuid4().hex
            try:
                reply = await client.submit(
                    self.request.assessment_data,
                    assessment_name=self.request.assessment_name,
                    request_id=request_id,
                )
            except AssayError as err:
                self.record.failures.append((time.monotonic(), f"{type(err).__name__}: {err}"))
                continue
            self.record.accepted[reply.job.job_id] = user
            self.record.accepted_at.append(time.monotonic())
            if reply.job.status != job_pb2.JOB_STATUS_UNSPECIFIED:
                self.record.seen.setdefault(reply.job.job_id, [])
