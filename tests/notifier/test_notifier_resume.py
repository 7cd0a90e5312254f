"""WatchJobs resume tokens, bookmarks, slow subscribers and shutdown."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import nats
import pytest

from assay.events.v1 import events_pb2
from assay.notifier.v1 import notifier_service_pb2 as pb
from assaylib.config import Settings
from assaylib.errors import ResumeTokenExpired, error_from_rpc
from assaylib.streams import StreamNames
from notifier.app import NotifierApp
from notifier.events_source import StreamBounds
from notifier.scope import start_sequence
from tests.archive.helpers import Client
from tests.notifier.conftest import StartNotifier
from tests.notifier.test_notifier_live import run_job
from tests.notifier.watcher import SLOW_CLIENT_OPTIONS, Watcher, Watchers


@pytest.fixture
async def purge(settings: Settings) -> AsyncIterator[object]:
    """Drop every event the test's events stream holds (as if they had aged out)."""
    nc = await nats.connect(settings.nats_url)
    names = StreamNames(settings.stream_prefix)

    async def purge_events() -> None:
        await nc.jetstream().purge_stream(names.events_stream)

    yield purge_events
    await nc.close()


async def events_until(watcher: Watcher, job_id: str, version: int) -> list[events_pb2.JobEvent]:
    """Events until (and including) ``job_id`` reaching ``version``."""
    events: list[events_pb2.JobEvent] = []
    while not (events and events[-1].job_id == job_id and events[-1].job_version >= version):
        events += await watcher.events(1)
    return events


async def test_resume_after_disconnect_sees_every_event_once(
    watchers: Watchers, client: Client
) -> None:
    await client.grant("alice", 10)
    first = watchers.open("user", "alice")
    await first.live()
    job = await client.submit("alice")
    job = await client.start(job)
    before = await first.events(2)
    await first.close()  # disconnect after "started"; the cursor is the last one received

    # While nobody watches: the job completes and another is submitted and started.
    completed = await client.complete(job)
    other = await client.start(await client.submit("alice"))

    resumed = watchers.open("user", "alice", resume_after=first.last_cursor)
    assert await resumed.live() == []
    assert resumed.last_cursor == before[-1].cursor  # the first bookmark: where it resumed
    after = await events_until(resumed, other.job_id, other.version)
    latest = await client.start(await client.submit("alice"))
    after += await events_until(resumed, latest.job_id, latest.version)

    seen = before + after
    assert len({e.event_id for e in seen}) == len(seen) == 2 + 1 + 2 + 2
    assert [e.cursor for e in seen] == sorted({e.cursor for e in seen})
    assert [(e.job_id, e.event_type) for e in seen[2:3]] == [(job.job_id, "analysis.completed")]
    assert seen[2].job_version == completed.version


def test_a_zero_cursor_resumes_from_the_first_event_only_when_asked() -> None:
    """resume_after 0 alone starts from now (as 0.1.0 clients mean it); with ``resume`` it is
    the cursor of a watch that went live on an empty stream: the first event is next, or
    RESUME_TOKEN_EXPIRED once the stream no longer starts there."""
    empty, kept, purged = StreamBounds(0, 0), StreamBounds(1, 7), StreamBounds(8, 7)
    assert start_sequence(pb.WatchJobsRequest(), kept) == 8
    assert start_sequence(pb.WatchJobsRequest(resume=True), empty) == 1
    assert start_sequence(pb.WatchJobsRequest(resume=True), kept) == 1
    assert start_sequence(pb.WatchJobsRequest(resume_after=3), kept) == 4
    with pytest.raises(ResumeTokenExpired):
        start_sequence(pb.WatchJobsRequest(resume=True), purged)


async def test_expired_cursor_is_out_of_range(watchers: Watchers, client: Client, purge) -> None:
    await client.grant("alice", 5)
    watcher = watchers.open("user", "alice")
    await watcher.live()
    await run_job(client, "alice")
    (queued, _, completed) = await watcher.events(3)
    await purge()

    err = await watchers.open("user", "alice", resume_after=queued.cursor).failure()

    assert err.code() == grpc.StatusCode.OUT_OF_RANGE
    assert error_from_rpc(err).reason == "RESUME_TOKEN_EXPIRED"
    # The newest cursor is still good: nothing after it was dropped.
    fresh = watchers.open("user", "alice", resume_after=completed.cursor)
    await fresh.live()
    job = await client.submit("alice")
    (event,) = await fresh.events(1)
    assert event.job_id == job.job_id


async def test_cursor_ahead_of_the_stream_is_out_of_range(watchers: Watchers) -> None:
    err = await watchers.open("user", "alice", resume_after=10_000).failure()
    assert err.code() == grpc.StatusCode.OUT_OF_RANGE
    assert error_from_rpc(err).reason == "RESUME_TOKEN_EXPIRED"


async def test_idle_watchers_bookmarks_keep_up_with_the_stream(
    start_notifier: StartNotifier, client: Client, purge
) -> None:
    app = await start_notifier(bookmark_interval=0.1)
    watchers = Watchers(app.port)
    try:
        await client.grant("bob", 5)
        idle = watchers.open("user", "alice")
        ops = watchers.open("operator", "ops")
        await idle.live()
        await ops.live()
        await run_job(client, "bob")
        last = (await ops.events(3))[-1].cursor

        while idle.last_cursor < last:  # bookmarks only, catching up with bob's events
            item = await idle.next()
            assert item.HasField("bookmark")
            assert item.bookmark.cursor <= last and item.bookmark.sent_at.seconds > 0

        # Bob's events age out; alice's bookmark cursor is still a valid resume point.
        await purge()
        await idle.close()
        await client.grant("alice", 1)
        resumed = watchers.open("user", "alice", resume_after=idle.last_cursor)
        await resumed.live()
        job = await client.submit("alice")
        (event,) = await resumed.events(1)
        assert event.job_id == job.job_id
    finally:
        await watchers.close()


async def test_slow_subscriber_overflows_fast_one_gets_everything(
    start_notifier: StartNotifier, client: Client
) -> None:
    app = await start_notifier(watch_buffer=8, bookmark_interval=0.5)
    watchers = Watchers(app.port)
    try:
        await client.grant("alice", 40)
        fast = watchers.open("user", "alice")
        slow = watchers.open("user", "alice", read=False, options=SLOW_CLIENT_OPTIONS)
        await fast.live()
        assert (await slow.call.read()).HasField("bookmark")  # live; then it stops reading

        jobs, received = [], []
        for _ in range(6):  # in steps a reader that keeps up can always hold
            jobs += [await client.submit("alice") for _ in range(5)]
            received += await fast.events(5)
        assert [e.job_id for e in received] == [j.job_id for j in jobs]
        await app.hub.wait_active(1)  # the slow one ended; the fast one is still open

        slow.start_reading()
        err = await slow.failure()
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        got = [item.event for item in slow.drained() if item.HasField("event")]
        assert 0 < len(got) < 30
        assert got == received[: len(got)]  # a prefix, in order: nothing skipped

        resumed = watchers.open("user", "alice", resume_after=got[-1].cursor)
        rest = await resumed.events(30 - len(got))
        assert got + rest == received
    finally:
        await watchers.close()


async def test_stop_ends_open_streams_resumably(
    start_notifier: StartNotifier, client: Client
) -> None:
    app: NotifierApp = await start_notifier()
    watchers = Watchers(app.port)
    try:
        watcher = watchers.open("user", "alice")
        await watcher.live()

        await app.stop(grace=5.0)

        err = await watcher.failure()
        assert err.code() == grpc.StatusCode.UNAVAILABLE
        assert error_from_rpc(err).metadata["resume_after"] == str(watcher.last_cursor)
    finally:
        await watchers.close()
