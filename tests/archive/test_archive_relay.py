"""The outbox relay: every committed row reaches JetStream exactly once, through NATS
crashes and relay crashes between publishing and marking."""

from __future__ import annotations

import dataclasses
import uuid
from collections import Counter
from pathlib import Path

import asyncpg
import nats
import pytest

from archive_svc import store
from archive_svc.app import ArchiveApp
from assaylib.config import Settings
from assaylib.embedded import EmbeddedNats
from assaylib.streams import StreamNames
from tests.archive.helpers import (
    Client,
    all_sent,
    dsn,
    outbox_ids,
    stub_for,
    talent_data,
    wait_until,
)


async def stream_msg_ids(nats_url: str, names: StreamNames) -> Counter[str]:
    """Every Nats-Msg-Id in both streams, with how often each appears."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        seen: Counter[str] = Counter()
        for stream in (names.jobs_stream, names.events_stream):
            info = await js.stream_info(stream)
            for seq in range(info.state.first_seq, info.state.last_seq + 1):
                msg = await js.get_msg(stream, seq)
                seen[(msg.headers or {})["Nats-Msg-Id"]] += 1
        return seen
    finally:
        await nc.close()


async def test_relay_publishes_soon_after_commit(archive, archive_stub, database, settings):
    client = Client(archive_stub)
    await client.grant("alice", 3)
    for _ in range(3):
        await client.submit()
    await wait_until(lambda: all_sent(database), within=5)
    seen = await stream_msg_ids(settings.nats_url, StreamNames(settings.stream_prefix))
    assert set(seen) == await outbox_ids(database) and set(seen.values()) == {1}


async def test_nats_crash_and_restart_loses_and_duplicates_nothing(
    tmp_path: Path, database: str, settings: Settings
) -> None:
    broker = EmbeddedNats(tmp_path / "nats")
    broker.start()
    settings = dataclasses.replace(settings, nats_url=broker.url)
    app = await ArchiveApp.start(settings, "127.0.0.1:0")
    channel, stub = stub_for(app)
    try:
        client = Client(stub)
        await client.grant("alice", 20)
        for _ in range(5):
            await client.submit()
        await wait_until(lambda: all_sent(database))
        broker.kill()  # kill -9 mid-stream: these commits cannot be published now
        for _ in range(5):
            await client.submit()
        assert await outbox_ids(database, unsent_only=True), "NATS is down: rows must wait"
        broker.start()
        await wait_until(lambda: all_sent(database), within=30)
        for _ in range(2):
            await client.submit()
        await wait_until(lambda: all_sent(database))
        seen = await stream_msg_ids(broker.url, StreamNames(settings.stream_prefix))
        assert set(seen) == await outbox_ids(database)  # nothing lost
        assert set(seen.values()) == {1}  # nothing twice
        assert len(seen) == 24  # 12 submissions × (queue message + queued event)
    finally:
        await channel.close()
        await app.stop(grace=1)
        broker.stop()


async def test_relay_crash_between_publish_and_mark_republishes_once(
    archive, archive_stub, database, settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    crashes = {"left": 2}
    published = {"unsaved": False}
    real_next_unsent = store.next_unsent

    async def crash_before_marking(db, position, limit):
        if published["unsaved"] and crashes["left"]:  # the round that would save a position
            crashes["left"] -= 1  # past a published page
            published["unsaved"] = False
            raise ConnectionError("relay died after publishing")
        at, rows = await real_next_unsent(db, position, limit)
        published["unsaved"] = bool(rows)
        return at, rows

    monkeypatch.setattr(store, "next_unsent", crash_before_marking)
    client = Client(archive_stub)
    await client.grant("alice", 4)
    for _ in range(4):
        await client.submit()
    await wait_until(lambda: all_sent(database), within=30)
    assert crashes["left"] == 0, "the crash window was exercised"
    seen = await stream_msg_ids(settings.nats_url, StreamNames(settings.stream_prefix))
    assert set(seen) == await outbox_ids(database) and set(seen.values()) == {1}


async def test_restarted_archive_relays_what_the_old_one_left(
    database: str, settings: Settings
) -> None:
    unreachable = dataclasses.replace(settings, nats_url="nats://127.0.0.1:1")
    app = await ArchiveApp.start(unreachable, "127.0.0.1:0")
    channel, stub = stub_for(app)
    client = Client(stub)
    await client.grant("alice", 3)
    for _ in range(3):
        await client.submit()
    await channel.close()
    await app.stop(grace=1)  # stopped with everything unsent
    assert len(await outbox_ids(database, unsent_only=True)) == 6
    app = await ArchiveApp.start(settings, "127.0.0.1:0")
    try:
        await wait_until(lambda: all_sent(database), within=30)
        seen = await stream_msg_ids(settings.nats_url, StreamNames(settings.stream_prefix))
        assert len(seen) == 6 and set(seen.values()) == {1}
    finally:
        await app.stop(grace=1)


async def test_published_rows_are_purged_after_the_events_retention(
    archive, archive_stub, database, settings
) -> None:
    client = Client(archive_stub)
    await client.grant("alice", 2)
    await client.submit()
    await wait_until(lambda: all_sent(database), within=10)
    assert await store.purge_sent(archive.pool, older_than=3600) == 0  # young rows stay
    assert await store.purge_sent(archive.pool, older_than=0) == 2
    await client.submit()
    await wait_until(lambda: all_sent(database), within=10)
    assert len(await outbox_ids(database)) == 2


async def test_one_replica_relays_and_the_other_takes_over(
    archive: ArchiveApp, archive_stub, database: str, settings: Settings
) -> None:
    standby = await ArchiveApp.start(settings, "127.0.0.1:0")
    try:
        client = Client(archive_stub)
        await client.grant("alice", 4)
        await client.submit()
        await wait_until(lambda: all_sent(database), within=10)
        await archive.relay.stop()  # the active relay goes away; its lock is released
        await client.submit()
        await wait_until(lambda: all_sent(database), within=15)  # the standby took over
        seen = await stream_msg_ids(settings.nats_url, StreamNames(settings.stream_prefix))
        assert set(seen) == await outbox_ids(database) and set(seen.values()) == {1}
    finally:
        await standby.stop(grace=1)


async def only_woken(app: ArchiveApp) -> None:
    """Leave ``app``'s relay publishing only when woken: its poll is an hour from now."""

    async def relaying() -> bool:
        return app.relay.relaying

    await wait_until(relaying, within=10)
    app.relay.poll_interval = 3600.0
    app.relay.wake()  # ends the current wait; the next one waits for the hour or a wake


async def test_the_relaying_archive_wakes_its_relay_after_its_own_writes(
    archive: ArchiveApp, archive_stub, database: str, settings: Settings
) -> None:
    await only_woken(archive)
    client = Client(archive_stub)
    await client.grant("alice", 2)
    await client.submit()
    await wait_until(lambda: all_sent(database), within=5)  # not the hour's poll
    await client.submit()
    await wait_until(lambda: all_sent(database), within=5)
    seen = await stream_msg_ids(settings.nats_url, StreamNames(settings.stream_prefix))
    assert set(seen) == await outbox_ids(database) and len(seen) == 4


async def test_a_standby_archive_wakes_the_relaying_one_after_its_writes(
    archive: ArchiveApp, database: str, settings: Settings
) -> None:
    await only_woken(archive)
    standby = await ArchiveApp.start(settings, "127.0.0.1:0")
    channel, stub = stub_for(standby)
    try:
        assert not standby.relay.relaying
        client = Client(stub)
        await client.grant("alice", 3)
        for _ in range(3):
            await client.submit()
            await wait_until(lambda: all_sent(database), within=5)
    finally:
        await channel.close()
        await standby.stop(grace=1)


async def test_another_session_s_outbox_rows_still_notify_at_commit(
    archive: ArchiveApp, archive_stub, database: str, settings: Settings
) -> None:
    """The previous release's archive (or an operator's session) does not wake the relay
    itself: the outbox trigger still notifies for any session without the archive's setting."""
    await only_woken(archive)
    await Client(archive_stub).grant("old", 1)
    conn = await asyncpg.connect(dsn(database))
    try:
        row = await conn.fetchrow(
            "SELECT * FROM assay_create_submission($1, $2, $3, $4, $5, $6, $7, $8, $9, $10,"
            " NULL::bytea, $11, $12)",
            *("old", uuid.uuid4(), uuid.uuid4(), "AI-Driven Talent Mapping", 1, None, "h", 0),
            *(talent_data().SerializeToString(), b"", None, "en"),
        )
        assert row["outcome"] == "created"
    finally:
        await conn.close()
    await wait_until(lambda: all_sent(database), within=5)
