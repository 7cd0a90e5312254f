"""The fetch loop: pull as many job messages as there are free slots, run each in its own
task, and on stop let the held ones finish within the grace period."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import nats.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from prometheus_client import Counter

from worker.job_runner import JobRunner, Outcome, parse_message
from worker.retry import backoff

log = logging.getLogger(__name__)

FETCH_FAILURES = Counter("assay_worker_fetch_failures", "Fetch requests to JetStream that failed.")

Observer = Callable[[str, Outcome], None]
"""Called with (job_id, outcome) after each message is acknowledged (tests watch it)."""


class JobConsumer:
    """A long-running loop with start()/stop() over the workers' durable pull consumer.

    At most ``concurrency`` messages are held at once: each fetch asks for exactly the free
    slots, so JetStream never hands this worker work it cannot start.
    """

    def __init__(
        self,
        subscription: JetStreamContext.PullSubscription,
        runner: JobRunner,
        concurrency: int,
        *,
        fetch_timeout: float = 1.0,
        observer: Observer | None = None,
    ) -> None:
        self.subscription = subscription
        self.runner = runner
        self.concurrency = concurrency
        self.fetch_timeout = fetch_timeout
        self.observer = observer
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None

    @property
    def held(self) -> int:
        """Messages being handled now."""
        return len(self._tasks)

    async def start(self) -> None:
        """Begin fetching in the background."""
        self._loop_task = asyncio.create_task(self._run(), name="job-consumer")

    async def _run(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            free = self.concurrency - len(self._tasks)
            if free <= 0:
                await self._wait_for_slot()
                continue
            try:
                messages = await self.subscription.fetch(batch=free, timeout=self.fetch_timeout)
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
                self._spawn(msg)

    async def _wait_for_slot(self) -> None:
        stopping = asyncio.create_task(self._stopping.wait())
        try:
            await asyncio.wait([*self._tasks, stopping], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()

    def _spawn(self, msg: Msg) -> None:
        task = asyncio.create_task(self._handle(msg), name="job")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

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
        if self._loop_task is not None:
            await self._loop_task
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
        with contextlib.suppress(Exception):
            await self.subscription.unsubscribe()
