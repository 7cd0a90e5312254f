"""Fairness between users of one lane (migration 0017): a user's queue messages beyond
``ASSAY_QUEUED_PER_USER`` wait in the archive and are released in turn as the user's queued
jobs start; every QUEUED job is in the stream or held, never both, never neither."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import AsyncIterator

import asyncpg
import nats
import pytest
from google.protobuf.duration_pb2 import Duration

from archive_svc import metrics, store
from archive_svc.app import ArchiveApp
from archive_svc.relay import OutboxRelay
from assay.archive.v1 import archive_service_pb2 as pb
from assay.events.v1 import events_pb2
from assaylib.config import Settings
from assaylib.streams import StreamNames
from assaylib.tiers import Tiers
from tests.archive.helpers import (
    Client,
    all_sent,
    check_invariants,
    dsn,
    stub_for,
    talent_data,
    wait_until,
)

BUDGET = 2


@pytest.fixture
async def fair(settings: Settings) -> AsyncIterator[tuple[ArchiveApp, Client]]:
    """An archive whose relay keeps at most BUDGET jobs of a user queued in the stream."""
    app = await ArchiveApp.start(
        dataclasses.replace(settings, queued_per_user=BUDGET), "127.0.0.1:0"
    )
    channel, stub = stub_for(app)
    try:
        yield app, Client(stub)
    finally:
        await channel.close()
        await app.stop(grace=1)


async def submit_batch(client: Client, user: str, count: int) -> list[str]:
    """``count`` submissions of ``user`` in one transaction; their job ids in order."""
    await client.grant(user, count)
    reply = await client.stub.CreateSubmissions(
        pb.CreateSubmissionsRequest(
            submissions=[
                pb.CreateSubmissionRequest(
                    user_id=user, assessment_data=talent_data(), request_id=f"{user}-{n}"
                )
                for n in range(count)
            ],
            atomic=True,
        )
    )
    return [outcome.created.job.job_id for outcome in reply.outcomes]


async def in_stream(settings: Settings) -> Counter[str]:
    """How many queue messages each job has in the jobs stream."""
    nc = await nats.connect(settings.nats_url)
    try:
        js = nc.jetstream()
        names = StreamNames(settings.stream_prefix)
        info = await js.stream_info(names.jobs_stream)
        seen: Counter[str] = Counter()
        for seq in range(max(1, info.state.first_seq), info.state.last_seq + 1):
            stored = await js.get_msg(names.jobs_stream, seq)
            seen[events_pb2.AnalysisJobMessage.FromString(stored.data or b"").job_id] += 1
        return seen
    finally:
        await nc.close()


async def held(database: str) -> set[str]:
    conn = await asyncpg.connect(dsn(database))
    try:
        rows = await conn.fetch(
            "SELECT job_id::text FROM jobs WHERE status = 'QUEUED' AND queue_held_by IS NOT NULL"
        )
        return {row["job_id"] for row in rows}
    finally:
        await conn.close()


async def settled(
    database: str, settings: Settings, expect_held: int
) -> tuple[Counter[str], set[str]]:
    """Once the outbox is published and ``expect_held`` jobs are held: the stream's messages
    per job and the held jobs, checked to be disjoint and each published once."""
    state: dict[str, object] = {}

    async def ready() -> bool:
        # Held first: a release clears a hold and writes its message in one commit, so once
        # the holds are as expected, the message is in the outbox for all_sent to see.
        state["held"] = await held(database)
        if len(state["held"]) != expect_held:  # type: ignore[arg-type]
            return False
        return await all_sent(database)

    await wait_until(ready, within=15)
    stream = await in_stream(settings)
    waiting: set[str] = state["held"]  # type: ignore[assignment]
    assert set(stream.values()) <= {1}, "a queue message published twice"
    assert not waiting & set(stream), "a job both held and in the stream"
    return stream, waiting


async def test_a_bulk_user_gets_its_budget_in_the_stream_and_another_user_gets_in_at_once(
    fair: tuple[ArchiveApp, Client], database: str, settings: Settings
) -> None:
    _, client = fair
    bulk = await submit_batch(client, "school", 6)
    single = await submit_batch(client, "pupil", 1)
    stream, waiting = await settled(database, settings, expect_held=4)
    assert set(stream) == set(bulk[:BUDGET]) | set(single)  # the bulk's oldest, and the pupil
    assert waiting == set(bulk[BUDGET:])
    await check_invariants(database)


async def test_a_started_job_releases_the_next_held_one_in_order(
    fair: tuple[ArchiveApp, Client], database: str, settings: Settings
) -> None:
    _, client = fair
    bulk = await submit_batch(client, "school", 5)
    await settled(database, settings, expect_held=3)
    first = await client.get(bulk[0])
    await client.start(first)  # leaves the queue: room for one more of the school's
    stream, waiting = await settled(database, settings, expect_held=2)
    assert set(stream) == set(bulk[:3]) and waiting == set(bulk[3:])
    await client.cancel(await client.get(bulk[3]))  # a held job cancelled is never released
    second = await client.get(bulk[1])
    await client.start(second)
    stream, waiting = await settled(database, settings, expect_held=0)
    assert set(stream) == set(bulk[:3]) | {bulk[4]}
    await check_invariants(database)


async def test_a_relay_that_dies_after_holding_keeps_the_hold_and_publishes_once(
    fair: tuple[ArchiveApp, Client],
    database: str,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    crashes = {"left": 1}
    real_hold = store.hold

    async def hold_then_die(db, rows):
        marked = await real_hold(db, rows)
        if crashes["left"]:
            crashes["left"] -= 1
            raise ConnectionError("relay died after holding, before publishing its page")
        return marked

    monkeypatch.setattr(store, "hold", hold_then_die)
    _, client = fair
    bulk = await submit_batch(client, "school", 4)
    stream, waiting = await settled(database, settings, expect_held=2)
    assert crashes["left"] == 0, "the crash window was exercised"
    assert set(stream) == set(bulk[:BUDGET]) and waiting == set(bulk[BUDGET:])


async def test_the_sweep_does_not_count_a_held_job_as_lost(
    fair: tuple[ArchiveApp, Client], database: str, settings: Settings
) -> None:
    _, client = fair
    await submit_batch(client, "school", 3)
    _, waiting = await settled(database, settings, expect_held=1)
    conn = await asyncpg.connect(dsn(database))
    try:
        await conn.execute("UPDATE jobs SET updated_at = now() - interval '1 hour'")
    finally:
        await conn.close()
    request = pb.SweepStuckJobsRequest(force=True, max_queued=Duration(seconds=60))
    request.stuck_after.FromSeconds(120)
    request.max_processing.FromSeconds(600)
    swept = await client.stub.SweepStuckJobs(request)
    assert swept.queued_found == BUDGET  # the two in the stream look lost; the held one waits
    assert await held(database) == waiting


async def test_a_user_s_budget_is_its_lane_s_weight_times_the_setting(
    fair: tuple[ArchiveApp, Client], database: str, settings: Settings
) -> None:
    """premium:4,standard:1 — a premium user may have four times the jobs queued, so that
    one busy user of each lane still leaves the workers' slots to share by weight."""
    _, client = fair
    await client.stub.SetUserTier(pb.SetUserTierRequest(user_id="payer", tier="premium"))
    paid = await submit_batch(client, "payer", 4 * BUDGET + 3)
    stream, waiting = await settled(database, settings, expect_held=3)
    assert set(stream) == set(paid[: 4 * BUDGET]) and waiting == set(paid[4 * BUDGET :])
    first = await client.get(paid[0])
    await client.start(first)
    stream, waiting = await settled(database, settings, expect_held=2)
    assert set(stream) == set(paid[: 4 * BUDGET + 1])


async def test_another_user_s_job_is_published_ahead_of_a_bulk_in_the_outbox(
    fair: tuple[ArchiveApp, Client], database: str, settings: Settings
) -> None:
    """A school's batch is thousands of outbox rows the relay pages through (holding most);
    a pupil's one job committed after them is published ahead, not after the last page."""
    app, client = fair
    await app.relay.stop()  # the backlog builds while nothing relays
    bulk = await submit_batch(client, "school", 60)
    (single,) = await submit_batch(client, "pupil", 1)
    ahead = metrics.PUBLISHED_AHEAD._value.get()
    relay = OutboxRelay(
        app.pool,
        settings.database_url,
        settings.nats_url,
        StreamNames(settings.stream_prefix),
        events_max_age=settings.events_max_age,
        batch_size=8,
        tiers=Tiers.parse("premium:4,standard:1"),
        queued_per_user=BUDGET,
    )
    await relay.start()
    try:
        stream, waiting = await settled(database, settings, expect_held=60 - BUDGET)
    finally:
        await relay.stop()
    assert set(stream) == set(bulk[:BUDGET]) | {single}  # once each: the copy was dropped
    assert waiting == set(bulk[BUDGET:])
    # The pupil's alone went ahead of the 15 pages of the school's rows (the school is over
    # its budget: nothing of it goes ahead).
    assert metrics.PUBLISHED_AHEAD._value.get() - ahead == 1
