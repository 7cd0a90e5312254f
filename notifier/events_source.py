"""JetStream access for the notifier: the events stream's bounds and one ordered consumer
per watch (ARCHITECTURE §5).

Each watch gets an ephemeral ordered push consumer on ``ASSAY_EVENTS`` filtered to its
user or job, starting at an explicit stream sequence; nats-py re-creates it from the last
delivered sequence after a gap or a missed heartbeat, so delivery stays in stream order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import nats
from google.protobuf.message import DecodeError
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy
from prometheus_client import Counter

from assay.events.v1 import events_pb2
from assaylib.streams import StreamNames, ensure_streams

log = logging.getLogger(__name__)

MALFORMED = Counter(
    "assay_notifier_malformed_events", "Messages on the events stream that are not a JobEvent"
)
CONNECT_ATTEMPTS = 5
IDLE_HEARTBEAT = 5.0  # seconds; the ordered consumer re-creates itself after two missed
INACTIVE_THRESHOLD = 60.0  # seconds; the server removes a consumer whose watcher vanished


@dataclass(frozen=True)
class StreamBounds:
    """The sequences the events stream holds now: first_seq..last_seq (empty: first > last)."""

    first_seq: int
    last_seq: int


@dataclass(frozen=True)
class DeliveredEvent:
    """A JobEvent as delivered to one watch, its cursor set to the stream sequence."""

    event: events_pb2.JobEvent
    consumer: str
    consumer_seq: int
    headers: Mapping[str, str] | None = None
    """The message's headers (its traceparent: the trace of the event's job)."""

    @property
    def cursor(self) -> int:
        """The event's stream sequence: its resume token."""
        return self.event.cursor


def decode_event(msg: Msg) -> DeliveredEvent | None:
    """The JobEvent in ``msg`` with ``cursor`` = its stream sequence; None if malformed."""
    metadata = msg.metadata
    try:
        event = events_pb2.JobEvent.FromString(msg.data)
    except DecodeError:
        MALFORMED.inc()
        log.error("skipping a malformed event at stream sequence %d", metadata.sequence.stream)
        return None
    event.cursor = metadata.sequence.stream
    return DeliveredEvent(event, metadata.consumer, metadata.sequence.consumer, msg.headers)


class EventSubscription:
    """One watch's ordered consumer; ``close`` removes it from the server."""

    def __init__(self, js: JetStreamContext, stream: str, sub: JetStreamContext.PushSubscription):
        self._js = js
        self._stream = stream
        self._sub = sub
        self._closed = False

    async def delivered_all(self, last: DeliveredEvent | None) -> bool:
        """Whether every event the filter matches in the stream right now has reached the
        watch (``last`` being the last one it received): nothing pending on the server, and
        everything the server sent was received."""
        info = await self._sub.consumer_info()
        if info.num_pending is None or info.num_pending > 0 or info.delivered is None:
            return False
        received = last.consumer_seq if last is not None and last.consumer == info.name else 0
        return info.delivered.consumer_seq == received

    async def close(self) -> None:
        """Stop delivery and delete the consumer (the server would reap it anyway)."""
        if self._closed:
            return
        self._closed = True
        name = ""
        with contextlib.suppress(Exception):
            name = (await self._sub.consumer_info()).name
        with contextlib.suppress(Exception):
            await self._sub.unsubscribe()
        if name:
            with contextlib.suppress(Exception):
                await self._js.delete_consumer(self._stream, name)


class EventsSource:
    """The notifier's NATS connection and the events stream it reads."""

    def __init__(
        self, nats_url: str, names: StreamNames, *, events_max_age: float, stream_replicas: int = 1
    ) -> None:
        self.nats_url = nats_url
        self.names = names
        self.events_max_age = events_max_age
        self.stream_replicas = stream_replicas
        self._nc: NatsClient | None = None
        self._on_closed: list[Callable[[], Awaitable[None]]] = []

    def on_closed(self, callback: Callable[[], Awaitable[None]]) -> None:
        """Call ``callback`` if the connection closes for good (reconnects exhausted)."""
        self._on_closed.append(callback)

    async def connect(self) -> None:
        """Connect (a few attempts with backoff) and make sure the streams exist."""
        backoff = 0.2
        for attempt in range(1, CONNECT_ATTEMPTS + 1):
            try:
                self._nc = await nats.connect(
                    self.nats_url,
                    connect_timeout=2,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.5,
                    closed_cb=self._closed,
                )
                break
            except Exception as err:
                if attempt == CONNECT_ATTEMPTS:
                    raise
                log.warning("NATS connect failed, retrying in %.1fs: %r", backoff, err)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
        await ensure_streams(
            self.js, self.names, events_max_age=self.events_max_age, replicas=self.stream_replicas
        )

    async def _closed(self) -> None:
        for callback in self._on_closed:
            await callback()

    @property
    def js(self) -> JetStreamContext:
        """The JetStream context (after ``connect``)."""
        if self._nc is None:
            raise RuntimeError("EventsSource.connect() was not called")
        return self._nc.jetstream()

    async def close(self) -> None:
        """Drain the connection: consumers' subscriptions end, then it closes."""
        nc, self._nc = self._nc, None
        if nc is not None and not nc.is_closed:
            self._on_closed.clear()  # a deliberate close is not a failure
            with contextlib.suppress(Exception):
                await nc.drain()

    async def bounds(self) -> StreamBounds:
        """The first and last sequence the events stream holds."""
        info = await self.js.stream_info(self.names.events_stream)
        return StreamBounds(info.state.first_seq, info.state.last_seq)

    async def subscribe(
        self,
        filter_subject: str,
        start_seq: int,
        deliver: Callable[[DeliveredEvent], Awaitable[None]],
    ) -> EventSubscription:
        """Deliver every event on ``filter_subject`` from ``start_seq`` on, in stream order.

        ``deliver`` may wait: while it does, the consumer's flow control holds the server.
        """

        async def on_message(msg: Msg) -> None:
            delivered = decode_event(msg)
            if delivered is not None:
                await deliver(delivered)

        config = ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=start_seq,
            inactive_threshold=INACTIVE_THRESHOLD,
        )
        js = self.js
        sub = await js.subscribe(
            filter_subject,
            stream=self.names.events_stream,
            cb=on_message,
            config=config,
            ordered_consumer=True,
            idle_heartbeat=IDLE_HEARTBEAT,
        )
        return EventSubscription(js, self.names.events_stream, sub)
