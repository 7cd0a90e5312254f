"""WatchJobs live events, snapshots and who may see what (real archive, PostgreSQL, NATS)."""

from __future__ import annotations

import grpc
import nats

from assay.common.v1 import job_pb2
from assay.events.v1 import events_pb2
from assaylib.errors import field_violations_of
from assaylib.streams import StreamNames
from tests.archive.helpers import Client
from tests.notifier.watcher import Watchers

QUEUED = job_pb2.JOB_STATUS_QUEUED
PROCESSING = job_pb2.JOB_STATUS_PROCESSING
COMPLETED = job_pb2.JOB_STATUS_COMPLETED


async def run_job(client: Client, user: str) -> job_pb2.Job:
    """Submit, start and complete one job of ``user``; return it completed."""
    job = await client.submit(user)
    job = await client.start(job)
    return await client.complete(job)


def assert_lifecycle(events: list[events_pb2.JobEvent], job: job_pb2.Job) -> None:
    """queued → started → completed for ``job``, once each, versions and cursors rising."""
    assert [e.event_type for e in events] == [
        "analysis.queued",
        "analysis.started",
        "analysis.completed",
    ]
    assert [e.status for e in events] == [QUEUED, PROCESSING, COMPLETED]
    assert {e.job_id for e in events} == {job.job_id}
    assert {e.user_id for e in events} == {job.user_id}
    assert {e.result_id for e in events} == {job.result_id}
    assert len({e.event_id for e in events}) == 3
    versions = [e.job_version for e in events]
    assert versions == sorted(set(versions)) and versions[-1] == job.version
    cursors = [e.cursor for e in events]
    assert cursors == sorted(set(cursors)) and cursors[0] > 0
    assert events[1].metadata.attempt == 1
    assert events[2].metadata.processing_time_ms >= 0


async def test_watch_sees_queued_started_completed_in_order_once(
    watchers: Watchers, client: Client
) -> None:
    await client.grant("alice", 5)
    watcher = watchers.open("user", "alice")
    assert await watcher.live() == []  # no snapshot asked for

    job = await run_job(client, "alice")

    assert_lifecycle(await watcher.events(3), job)
    # Once each: nothing more arrives but bookmarks.
    job2 = await client.submit("alice")
    (queued,) = await watcher.events(1)
    assert queued.job_id == job2.job_id and queued.event_type == "analysis.queued"


async def test_users_see_only_their_own_jobs(watchers: Watchers, client: Client) -> None:
    await client.grant("alice", 5)
    await client.grant("bob", 5)
    alice = watchers.open("user", "alice")
    bob = watchers.open("user", "bob")
    await alice.live()
    await bob.live()

    bobs_job = await run_job(client, "bob")
    alices_job = await client.submit("alice")

    (first,) = await alice.events(1)
    assert first.job_id == alices_job.job_id  # bob's three events never reached alice
    assert_lifecycle(await bob.events(3), bobs_job)
    assert all(not item.HasField("event") for item in alice.drained())


async def test_someone_elses_job_is_not_found(watchers: Watchers, client: Client) -> None:
    await client.grant("bob", 1)
    bobs_job = await client.submit("bob")

    watcher = watchers.open("user", "alice", job_id=bobs_job.job_id, include_snapshot=True)
    err = await watcher.failure()

    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert watcher.drained() == []  # not even a bookmark: nothing is revealed


async def test_watching_another_user_is_denied(watchers: Watchers) -> None:
    err = await watchers.open("user", "alice", user_id="bob").failure()
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_no_token_is_unauthenticated(watchers: Watchers) -> None:
    err = await watchers.open(auth=False).failure()
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_bad_job_id_is_invalid_argument(watchers: Watchers) -> None:
    err = await watchers.open("user", "alice", job_id="assay.events.>").failure()
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in field_violations_of(err)] == ["job_id"]


async def test_operator_sees_every_user_or_one(watchers: Watchers, client: Client) -> None:
    await client.grant("alice", 5)
    await client.grant("bob", 5)
    everyone = watchers.open("operator", "ops")
    only_bob = watchers.open("operator", "ops", user_id="bob")
    await everyone.live()
    await only_bob.live()

    alices = await client.submit("alice")
    bobs = await client.submit("bob")

    assert [e.job_id for e in await everyone.events(2)] == [alices.job_id, bobs.job_id]
    assert [e.job_id for e in await only_bob.events(1)] == [bobs.job_id]


async def test_job_watch_sees_only_that_job(watchers: Watchers, client: Client) -> None:
    await client.grant("alice", 5)
    job = await client.submit("alice")
    other = await client.submit("alice")
    watcher = watchers.open("user", "alice", job_id=job.job_id, include_snapshot=True)

    (snapshot,) = await watcher.live()
    assert snapshot.snapshot.job_id == job.job_id and snapshot.snapshot.status == QUEUED

    await client.start(other)
    completed = await client.complete(await client.start(job))
    events: list[events_pb2.JobEvent] = []
    while not events or events[-1].job_version < completed.version:
        events += await watcher.events(1)
    # The queued event may still be on its way from the relay: it is older than the snapshot.
    newer = [e for e in events if e.job_version > snapshot.snapshot.version]
    assert [e.event_type for e in newer] == ["analysis.started", "analysis.completed"]
    assert {e.job_id for e in events} == {job.job_id}


async def test_snapshot_then_live_events_nothing_lost_between(
    watchers: Watchers, client: Client
) -> None:
    await client.grant("alice", 10)
    done = await run_job(client, "alice")
    queued = await client.submit("alice")

    watcher = watchers.open("user", "alice", include_snapshot=True)
    # Transitions racing the snapshot: each is either in the snapshot or arrives as an event.
    started = await client.start(queued)
    snapshot = {item.snapshot.job_id: item.snapshot for item in await watcher.live()}
    later = await client.submit("alice")

    assert set(snapshot) == {done.job_id, queued.job_id}
    assert snapshot[done.job_id].status == COMPLETED
    events: list[events_pb2.JobEvent] = []
    while not events or events[-1].job_id != later.job_id:
        events += await watcher.events(1)
    *racing, last = events
    assert last.event_type == "analysis.queued"
    # A transition committed around the snapshot shows in it, as an event, or both (the
    # relay publishes after commit; a client keeps the higher job_version) — never neither,
    # never twice as an event.
    latest = {job_id: job.version for job_id, job in snapshot.items()}
    for event in racing:
        assert event.job_id in snapshot
        versions = [e.job_version for e in racing if e.job_id == event.job_id]
        assert versions == sorted(set(versions))
        latest[event.job_id] = max(latest[event.job_id], event.job_version)
    assert latest == {done.job_id: done.version, queued.job_id: started.version}


async def test_many_watches_share_one_consumer_and_each_gets_its_own_events(
    watchers: Watchers, client: Client, settings
) -> None:
    users = [f"user-{n}" for n in range(40)]
    for user in users:
        await client.grant(user, 1)
    opened = {user: watchers.open("user", user) for user in users}
    everyone = watchers.open("operator", "ops")
    for watcher in [*opened.values(), everyone]:
        await watcher.live()

    names = StreamNames(settings.stream_prefix)
    nc = await nats.connect(settings.nats_url)
    try:
        info = await nc.jetstream().stream_info(names.events_stream)
    finally:
        await nc.close()
    assert info.state.consumer_count == 1, "live watches read the notifier's one feed"

    jobs = {user: await client.submit(user) for user in users}
    for user, watcher in opened.items():
        (event,) = await watcher.events(1)
        assert (event.user_id, event.job_id) == (user, jobs[user].job_id)
    seen = await everyone.events(len(users))
    assert {e.job_id for e in seen} == {j.job_id for j in jobs.values()}
