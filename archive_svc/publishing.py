"""The relay's publishing: a page of messages to JetStream, each acknowledged, in order.

nats-py's ``publish_async`` gives every message a future, a timer and a parsed ``PubAck``;
for the relay's pages that cost more CPU than the rest of its publishing (27.8 against 10.7
µs per message, ``python -m bench.bare_publish``). ``Pages`` sends each message with a reply
subject of its own under one inbox that a single subscription listens on, and counts the
page's acknowledgements there: a page is published when every message has a positive one (the
stream stored it, or dropped it as a duplicate of its ``Nats-Msg-Id``). Any refusal, or
silence past the timeout, fails the page, and the relay publishes it again: the stream drops
what it already has.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

Message = tuple[str, bytes, Mapping[str, str]]
"""A message to publish: (subject, payload, headers)."""

ACKNOWLEDGED = b'{"stream"'
"""How every positive acknowledgement starts (a ``PubAck``: stream, seq, maybe duplicate)."""


class PageRefused(Exception):
    """JetStream refused a message of the page (or nothing answered it: no stream)."""


@dataclass
class _Page:
    expected: int
    done: asyncio.Event = field(default_factory=asyncio.Event)
    acknowledged: set[str] = field(default_factory=set)  # by position: a repeat counts once
    refusal: bytes | None = None


class Pages:
    """Publishes pages of messages on one NATS connection (``start`` once connected), each
    page acknowledged whole within ``ack_timeout`` seconds."""

    def __init__(self, nc: Client, ack_timeout: float) -> None:
        self._nc = nc
        self._ack_timeout = ack_timeout
        self._inbox = nc.new_inbox()
        self._numbers = itertools.count()
        self._pages: dict[str, _Page] = {}
        self._subscription: Subscription | None = None

    async def start(self) -> None:
        """Listen for acknowledgements (resubscribed by the client after a reconnect)."""
        self._subscription = await self._nc.subscribe(f"{self._inbox}.*.*", cb=self._answered)

    async def publish(self, messages: Sequence[Message]) -> None:
        """Send ``messages`` in order and wait until each is acknowledged; raises PageRefused
        on a refusal, TimeoutError when an acknowledgement is not in within the timeout."""
        if not messages:
            return
        number = str(next(self._numbers))
        page = self._pages[number] = _Page(len(messages))
        try:
            reply = f"{self._inbox}.{number}."
            for n, (subject, payload, headers) in enumerate(messages):
                await self._nc.publish(subject, payload, reply=f"{reply}{n}", headers=dict(headers))
            await asyncio.wait_for(page.done.wait(), self._ack_timeout)
        finally:
            del self._pages[number]
        if page.refusal is not None:
            raise PageRefused(f"JetStream refused a message: {page.refusal[:300]!r}")

    async def _answered(self, msg: Msg) -> None:
        number, _, position = msg.subject[len(self._inbox) + 1 :].partition(".")
        page = self._pages.get(number)
        if page is None:  # a page that timed out: nobody waits
            return
        data = msg.data
        if not data.startswith(ACKNOWLEDGED) or b'"error"' in data:
            # an error PubAck, or an empty 503 status: no stream takes the subject
            page.refusal = data or str(msg.headers or {}).encode()
            page.done.set()
            return
        page.acknowledged.add(position)
        if len(page.acknowledged) == page.expected:
            page.done.set()
