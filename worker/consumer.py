"""The fetch loops: one per priority lane, each holding the messages it fetched until the lane
scheduler (``worker.lanes``) gives each a slot, each started job in its own task; on stop the
started ones finish within the grace period and the waiting ones are handed back."""

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

    At most ``concurrency`` jobs run at once, shared by the lanes by weight; while another
    lane waits, a lane also holds up to its share of the slots in fetched messages waiting
    (kept alive with in-progress acks every ``keepalive`` seconds, so none is redelivered
    while it waits).
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
        self._held: dict[asyncio.Future[None], Msg] = {}

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
        self._loop_tasks.append(asyncio.create_task(self._keep_alive(), name="job-keepalive"))

    async def _run(self, held: LaneSubscription) -> None:
        failures, backlog = 0, 0
        while not self._stopping.is_set():
            room = self.scheduler.room_for(held.lane)
            if room <= 0:
                await self._until_changed()
                continue
            # More than one only when JetStream said that many are pending: a fetch of N
            # that finds fewer waits for the rest until its timeout, holding the first.
            batch = max(1, min(backlog, room))
            try:
                messages = await held.subscription.fetch(batch=batch, timeout=self.fetch_timeout)
            except nats.errors.TimeoutError:
                failures, backlog = 0, 0
                continue
            except Exception as err:
                failures += 1
                FETCH_FAILURES.inc()
                delay = backoff(failures, base=0.5, cap=10.0)
                log.warning("fetch failed (%s); retrying in %.1fs", err, delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), timeout=delay)
                continue
            failures, backlog = 0, _pending_after(messages)
            for msg in messages:
                self._hold(held.lane, msg)

    def _hold(self, lane: Lane, msg: Msg) -> None:
        """Ask the scheduler for a slot for ``msg``; start it once granted. Until then it is
        held (kept alive by ``_keep_alive``); a lane keeps fetching while it has room, so
        that every backlogged lane has candidates when a burst of slots frees."""
        granted = self.scheduler.try_acquire(lane)
        if granted.done():
            self._spawn(msg)
            return
        self._held[granted] = msg
        granted.add_done_callback(self._granted)

    def _granted(self, granted: asyncio.Future[None]) -> None:
        msg = self._held.pop(granted, None)
        if msg is not None and not granted.cancelled():
            self._spawn(msg)

    async def _keep_alive(self) -> None:
        """Every ``keepalive`` seconds, tell JetStream the held messages are in progress (so
        none is redelivered while it waits for a slot)."""
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=self.keepalive)
            for msg in list(self._held.values()):
                with contextlib.suppress(Exception):
                    await msg.in_progress()

    async def _until_changed(self) -> None:
        changed = self.scheduler.changed()
        stopping = asyncio.create_task(self._stopping.wait())
        waiters: set[asyncio.Future[Any]] = {changed, stopping}
        try:
            await asyncio.wait(waiters, return_when=FIRST_COMPLETED)
        finally:
            stopping.cancel()
            changed.cancel()

    async def _hand_back_held(self) -> None:
        """Withdraw every held message's slot request and nak it (another worker, or this
        one restarted, takes it at once)."""
        held, self._held = self._held, {}
        for granted, msg in held.items():
            if granted.done() and not granted.cancelled():
                self.scheduler.release()  # granted as we stopped: the slot is not used
            granted.cancel()
            with contextlib.suppress(Exception):
                await msg.nak()

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
        """Stop fetching and hand back the messages still waiting for a slot (nak: another
        worker takes them at once); give the started jobs ``grace`` seconds to finish, then
        tell the rest to stop and nak."""
        self._stopping.set()
        await asyncio.gather(*self._loop_tasks)
        await self._hand_back_held()
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


def _pending_after(messages: list[Msg]) -> int:
    """How many messages the lane's consumer still held after the last one fetched."""
    if not messages:
        return 0
    try:
        return int(messages[-1].metadata.num_pending or 0)
    except Exception:  # no JetStream metadata (not expected from a pull consumer)
        return 0
