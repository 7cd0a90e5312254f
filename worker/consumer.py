"""The fetch loops: one per priority lane, each holding at most one fetched message until the
lane scheduler (``worker.lanes``) gives it a slot, each started job in its own task; on stop
the held ones finish within the grace period and the waiting ones are handed back."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from asyncio import FIRST_COMPLETED
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import nats.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from prometheus_client import Counter

from assaylib.tiers import Lane
from worker.job_runner import JobRunner, Outcome, parse_message
from worker.lanes import LaneScheduler
from worker.retry import backoff

log = logging.getLogger(__name__)

FETCH_FAILURES = Counter("assay_worker_fetch_failures", "Fetch requests to JetStream that failed.")

Observer = Callable[[str, Outcome], None]
"""Called with (job_id, outcome) after each message is acknowledged (tests watch it)."""


@dataclass(frozen=True)
class LaneSubscription:
    """A priority lane and the pull subscription bound to its durable consumer."""

    lane: Lane
    subscription: JetStreamContext.PullSubscription


class JobConsumer:
    """A long-running loop per lane with start()/stop() over the lanes' durable consumers.

    At most ``concurrency`` jobs run at once, shared by the lanes by weight; each lane holds
    at most one more message, fetched and waiting for a slot (kept alive with in-progress
    acks every ``keepalive`` seconds, so it is not redelivered while it waits).
    """

    def __init__(
        self,
        lanes: Sequence[LaneSubscription],
        runner: JobRunner,
        concurrency: int,
        *,
        fetch_timeout: float = 1.0,
        keepalive: float = 10.0,
        observer: Observer | None = None,
    ) -> None:
        self.lanes = list(lanes)
        self.runner = runner
        self.concurrency = concurrency
        self.fetch_timeout = fetch_timeout
        self.keepalive = keepalive
        self.observer = observer
        self.scheduler = LaneScheduler([held.lane for held in self.lanes], concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()
        self._loop_tasks: list[asyncio.Task[None]] = []

    @property
    def held(self) -> int:
        """Messages being handled now."""
        return len(self._tasks)

    async def start(self) -> None:
        """Begin fetching every lane in the background."""
        self._loop_tasks = [
            asyncio.create_task(self._run(held), name=f"job-consumer-{held.lane.tier}")
            for held in self.lanes
        ]

    async def _run(self, held: LaneSubscription) -> None:
        failures = 0
        while not self._stopping.is_set():
            if not self.scheduler.may_fetch(held.lane):
                await self._until_changed()
                continue
            try:
                messages = await held.subscription.fetch(batch=1, timeout=self.fetch_timeout)
            except nats.errors.TimeoutError:
                failures = 0
                continue
            except Exception as err:
                failures += 1
                FETCH_FAILURES.inc()
                delay = backoff(failures, base=0.5, cap=10.0)
                log.warning("fetch failed (%s); retrying in %.1fs", err, delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), timeout=delay)
                continue
            failures = 0
            for msg in messages:
                if await self._slot_for(held.lane, msg):
                    self._spawn(msg)
                else:  # stopping: hand it back at once
                    with contextlib.suppress(Exception):
                        await msg.nak()

    async def _until_changed(self) -> None:
        changed = self.scheduler.changed()
        stopping = asyncio.create_task(self._stopping.wait())
        waiters: set[asyncio.Future[Any]] = {changed, stopping}
        try:
            await asyncio.wait(waiters, return_when=FIRST_COMPLETED)
        finally:
            stopping.cancel()
            changed.cancel()

    async def _slot_for(self, lane: Lane, msg: Msg) -> bool:
        """Wait for the scheduler's slot for ``lane``, keeping ``msg`` alive; False when the
        consumer stops first."""
        granted = self.scheduler.try_acquire(lane)
        stopping = asyncio.create_task(self._stopping.wait())
        try:
            while not granted.done():
                waiters: set[asyncio.Future[Any]] = {granted, stopping}
                await asyncio.wait(waiters, timeout=self.keepalive, return_when=FIRST_COMPLETED)
                if stopping.done() and not granted.done():
                    granted.cancel()
                    return False
                if not granted.done():
                    with contextlib.suppress(Exception):
                        await msg.in_progress()
            return True
        finally:
            stopping.cancel()

    def _spawn(self, msg: Msg) -> None:
        task = asyncio.create_task(self._handle(msg), name="job")
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self.scheduler.release()

    async def _handle(self, msg: Msg) -> None:
        try:
            outcome = await self.runner.run(msg)
        except Exception:
            log.exception("job message handling failed; JetStream will redeliver it")
            return
        if self.observer is not None:
            message = parse_message(msg.data)
            self.observer(message.job_id if message else "", outcome)

    async def stop(self, grace: float) -> None:
        """Stop fetching; give held messages ``grace`` seconds to finish, then tell the rest
        to stop and nak (so another worker takes them over once their lease expires)."""
        self._stopping.set()
        await asyncio.gather(*self._loop_tasks)
        if self._tasks:
            log.info("waiting up to %.1fs for %d held job(s)", grace, len(self._tasks))
            _done, pending = await asyncio.wait(set(self._tasks), timeout=grace)
            if pending:
                log.info("grace period over: handing back %d job(s)", len(pending))
                self.runner.shutdown.set()
                await asyncio.wait(pending, timeout=grace + 5.0)
        for task in set(self._tasks):
            task.cancel()
        self.runner.close()
        # Leave the pull subscription now: its inbox may hold status replies to expired pull
        # requests that nobody reads, which would make a connection drain wait for them.
        for held in self.lanes:
            with contextlib.suppress(Exception):
                await held.subscription.unsubscribe()
