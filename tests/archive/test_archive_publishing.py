"""The relay's pages: every message acknowledged before a page counts as published; a copy is
acknowledged (the stream drops it); a refusal or a subject no stream takes fails the page."""

from __future__ import annotations

from collections.abc import AsyncIterator

import nats
import pytest
from nats.aio.client import Client
from nats.js.api import StreamConfig

from archive_svc.publishing import Message, PageRefused, Pages
from assaylib.streams import StreamNames


@pytest.fixture
async def connected(servers, stream_names: StreamNames) -> AsyncIterator[tuple[Client, str]]:
    """A connection and a stream of this test's own on ``<prefix>.page.>``."""
    nc = await nats.connect(servers.nats_url)
    stream = stream_names.events_stream  # deleted after the test by stream_names
    await nc.jetstream().add_stream(
        StreamConfig(name=stream, subjects=[f"{stream_names.prefix}.page.>"])
    )
    try:
        yield nc, stream
    finally:
        await nc.close()


@pytest.fixture
async def pages(connected: tuple[Client, str]) -> Pages:
    """Pages on the test's connection, listening for acknowledgements."""
    started = Pages(connected[0], ack_timeout=10)
    await started.start()
    return started


def _page(prefix: str, ids: range) -> list[Message]:
    return [
        (f"{prefix}.page.{n % 3}", f"message {n}".encode(), {"Nats-Msg-Id": f"id-{n}"}) for n in ids
    ]


async def _stored(nc: Client, stream: str) -> list[tuple[str, bytes]]:
    js = nc.jetstream()
    info = await js.stream_info(stream)
    found = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        msg = await js.get_msg(stream, seq)
        found.append(((msg.headers or {})["Nats-Msg-Id"], msg.data or b""))
    return found


async def test_a_page_is_stored_in_order_and_a_copy_of_it_adds_nothing(
    connected: tuple[Client, str], pages: Pages, stream_names: StreamNames
) -> None:
    nc, stream = connected
    await pages.publish(_page(stream_names.prefix, range(300)))
    await pages.publish(_page(stream_names.prefix, range(250, 310)))  # 50 copies, 10 new
    assert await _stored(nc, stream) == [(f"id-{n}", f"message {n}".encode()) for n in range(310)]


async def test_a_refused_message_fails_its_page(pages: Pages, stream_names: StreamNames) -> None:
    page = _page(stream_names.prefix, range(5))
    subject, payload, _ = page[2]
    page[2] = (subject, payload, {"Nats-Msg-Id": "id-2", "Nats-Expected-Stream": "ELSEWHERE"})
    with pytest.raises(PageRefused, match="expected stream"):
        await pages.publish(page)


async def test_a_subject_no_stream_takes_fails_its_page(
    pages: Pages, stream_names: StreamNames
) -> None:
    page = _page(stream_names.prefix, range(3))
    page.append((f"{stream_names.prefix}.nowhere", b"lost", {"Nats-Msg-Id": "id-lost"}))
    with pytest.raises(PageRefused):
        await pages.publish(page)
    # and pages after it still work: the failed one left nothing behind
    await pages.publish(_page(stream_names.prefix, range(3, 6)))
