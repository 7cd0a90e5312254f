"""The heartbeat of one held message: JetStream in-progress acks from the moment it arrives,
plus archive ``Heartbeat`` calls once an attempt has started, until the work ends."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from dataclasses import dataclass
from typing import Any

from nats.aio.msg import Msg

from assaylib.errors import AssayError
from worker.archive_client import ArchiveClient, is_refusal
from worker.metrics import HEARTBEAT_FAILURES, HEARTBEATS

log = logging.getLogger(__name__)


class Verdict(enum.Enum):
    """Why the archive told the worker to stop an attempt."""

    LEASE_LOST = "lease_lost"
    CANCEL_REQUESTED = "cancel_requested"


@dataclass(frozen=True)
class Lease:
    """The attempt a worker holds."""

    job_id: str
    worker_id: str
    attempt: int

    def log_extra(self) -> dict[str, Any]:
        """Logging fields naming the job and the attempt."""
        return {"job_id": self.job_id, "attempt": self.attempt, "worker_id": self.worker_id}


class Heartbeat:
    """A small loop with start()/stop(): every ``interval`` seconds, an in-progress ack for the
    message and (when ``lease`` is set) an archive heartbeat. A failed call is counted, logged
    and retried on the next beat. When the archive says the lease is lost or the job was
    cancelled, ``verdict`` is set, ``stopped`` fires, and the loop ends."""

    def __init__(
        self, msg: Msg, archive: ArchiveClient, interval: float, log_extra: dict[str, Any]
    ) -> None:
        self.msg = msg
        self.archive = archive
        self.interval = interval
        self.log_extra = log_extra
        self.lease: Lease | None = None
        self.verdict: Verdict | None = None
        self.stopped = asyncio.Event()
        self.verdict_reached: asyncio.Future[Verdict] = asyncio.get_running_loop().create_future()
        """Resolved with the verdict when ``stopped`` is set (to wait on without a task)."""
        self._first: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Begin beating in the background: a timer until the first beat is due, then a task
        (most jobs end sooner, and a timer costs less than a task that sleeps)."""
        self._first = asyncio.get_running_loop().call_later(self.interval, self._begin)

    def _begin(self) -> None:
        self._first = None
        self._task = asyncio.create_task(self._run(), name="heartbeat")

    async def stop(self) -> None:
        """Stop beating (idempotent)."""
        if self._first is not None:
            self._first.cancel()
            self._first = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def hold(self, lease: Lease) -> None:
        """From now on also extend this attempt's lease."""
        self.lease = lease
        self.log_extra = lease.log_extra()

    async def _run(self) -> None:
        await self.beat()  # the first beat, due now
        while self.verdict is None:
            await asyncio.sleep(self.interval)
            await self.beat()

    async def beat(self) -> None:
        """One round: the in-progress ack, then the archive heartbeat if an attempt is held."""
        try:
            await self.msg.in_progress()
            HEARTBEATS.labels("ack").inc()
        except Exception:
            HEARTBEAT_FAILURES.labels("ack").inc()
            log.warning("in-progress ack failed", exc_info=True, extra=self.log_extra)
        if self.lease is not None:
            await self._beat_archive(self.lease)

    async def _beat_archive(self, lease: Lease) -> None:
        try:
            reply = await self.archive.heartbeat(lease.job_id, lease.worker_id, lease.attempt)
        except AssayError as err:
            if not is_refusal(err):
                HEARTBEAT_FAILURES.labels("archive").inc()
                log.warning("heartbeat failed, will retry: %s", err, extra=self.log_extra)
                return
            log.warning("heartbeat refused (%s): lease lost", err, extra=self.log_extra)
            self._decide(Verdict.LEASE_LOST)
            return
        HEARTBEATS.labels("archive").inc()
        if reply.lease_lost:
            self._decide(Verdict.LEASE_LOST)
        elif reply.cancel_requested:
            self._decide(Verdict.CANCEL_REQUESTED)

    def _decide(self, verdict: Verdict) -> None:
        log.info("heartbeat reply: %s", verdict.value, extra=self.log_extra)
        self.verdict = verdict
        self.stopped.set()
        if not self.verdict_reached.done():
            self.verdict_reached.set_result(verdict)
