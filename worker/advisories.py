"""The max-deliveries advisory: when JetStream gives up on a job message, fail its job (and
so refund it) instead of leaving it queued until someone notices."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Sequence

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext

from assaylib import errors
from assaylib.streams import StreamNames
from worker.archive_client import ArchiveClient
from worker.job_runner import parse_message
from worker.metrics import MAX_DELIVERIES
from worker.retry import retry_transient

log = logging.getLogger(__name__)

MAX_DELIVERIES_CODE = "MAX_DELIVERIES"


class MaxDeliveriesWatcher:
    """Subscribes to the advisory with start()/stop(); each advisory is handled in its own
    task: read the message by its stream sequence, FailJob without a worker (which fails a
    QUEUED job or one whose lease expired; a refusal means the job is settled already), then
    delete the dead message from the work queue. Archive outages are retried with backoff
    for up to ``retry_for`` seconds; after that the stuck-job sweep is the backstop."""

    def __init__(
        self,
        nc: NatsClient,
        js: JetStreamContext,
        names: StreamNames,
        archive: ArchiveClient,
        *,
        retry_for: float,
        consumers: Sequence[str] = (),
    ) -> None:
        self.nc = nc
        self.js = js
        self.names = names
        self.archive = archive
        self.retry_for = retry_for
        self.consumers = list(consumers) or [names.worker_consumer]  # one advisory per lane
        self._subscriptions: list[Subscription] = []
        self._tasks: set[asyncio.Task[str]] = set()
        self._stopping = asyncio.Event()

    async def start(self) -> None:
        """Subscribe to the advisory subject of every lane's consumer."""
        for consumer in self.consumers:
            subject = self.names.max_deliveries_advisory_of(consumer)
            self._subscriptions.append(await self.nc.subscribe(subject, cb=self._on_advisory))

    async def stop(self) -> None:
        """Unsubscribe and abandon advisories still being handled."""
        self._stopping.set()
        for subscription in self._subscriptions:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()
        for task in set(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _on_advisory(self, advisory: Msg) -> None:
        task = asyncio.create_task(self.handle(advisory.data))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def handle(self, payload: bytes) -> str:
        """Handle one advisory payload; return the outcome (also counted)."""
        outcome = await self._handle(payload)
        MAX_DELIVERIES.labels(outcome).inc()
        return outcome

    async def _handle(self, payload: bytes) -> str:
        try:
            seq = int(json.loads(payload)["stream_seq"])
            stored = await self.js.get_msg(self.names.jobs_stream, seq)
        except Exception as err:
            log.warning("max-deliveries advisory without a readable message: %s", err)
            return "unreadable"
        message = parse_message(stored.data or b"")
        if message is None:
            await self._delete(seq)
            return "malformed"
        extra = {"job_id": message.job_id, "stream_seq": seq}
        try:
            await retry_transient(
                lambda: self.archive.fail_job(
                    message.job_id,
                    MAX_DELIVERIES_CODE,
                    "the job message was delivered the maximum number of times",
                ),
                deadline=time.monotonic() + self.retry_for,
                stop=self._stopping,
                log_extra=extra,
            )
        except (errors.FailedPrecondition, errors.NotFound, errors.InvalidArgument) as err:
            log.info("max deliveries: job already settled (%s)", err, extra=extra)
            await self._delete(seq)
            return "settled"
        except Exception as err:
            log.error("max deliveries: could not fail the job: %s", err, extra=extra)
            return "error"
        log.warning("max deliveries: job failed", extra=extra)
        await self._delete(seq)
        return "failed"

    async def _delete(self, seq: int) -> None:
        try:
            await self.js.delete_msg(self.names.jobs_stream, seq)
        except Exception as err:  # already gone, or NATS briefly away: harmless
            log.debug("could not delete message %d: %s", seq, err)
