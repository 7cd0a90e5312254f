"""Priorities beside release 0.1.0: its 13-argument create function still writes default-lane
jobs, and the relay keeps a job's lane for its submission and its retry."""

from __future__ import annotations

import uuid

import asyncpg
import nats

from archive_svc import metrics
from archive_svc.relay import OutboxRelay
from assay.archive.v1 import archive_service_pb2 as pb
from assay.events.v1 import events_pb2
from assaylib.config import Settings
from assaylib.streams import StreamNames
from assaylib.tiers import Tiers
from tests.archive.helpers import check_invariants, dsn, talent_data, wait_until

PREMIUM = Tiers.parse("premium:4,standard:1").lanes[0]


async def test_the_0_1_0_create_function_still_writes_a_default_lane_job(
    archive, archive_stub, settings: Settings
) -> None:
    await archive_stub.GrantTokens(pb.GrantTokensRequest(user_id="old", amount=1, reason="t"))
    conn = await asyncpg.connect(dsn(settings.database_url))
    try:
        job_id = uuid.uuid4()
        row = await conn.fetchrow(
            "SELECT * FROM assay_create_submission($1, $2, $3, $4, $5, $6, $7, $8, $9, $10,"
            " NULL::bytea, $11, $12)",
            *("old", job_id, uuid.uuid4(), "AI-Driven Talent Mapping", 1, None, "h", 0),
            *(talent_data().SerializeToString(), b"", None, "en"),
        )
        assert row["outcome"] == "created"
        assert await conn.fetchval("SELECT priority FROM jobs WHERE job_id = $1", job_id) == 0
    finally:
        await conn.close()
    await check_invariants(settings.database_url)


async def test_a_premium_job_and_its_retry_are_published_on_the_premium_lane(
    archive, archive_stub, settings: Settings
) -> None:
    names = StreamNames(settings.stream_prefix)
    await archive_stub.GrantTokens(pb.GrantTokensRequest(user_id="payer", amount=2, reason="t"))
    created = await archive_stub.CreateSubmission(
        pb.CreateSubmissionRequest(user_id="payer", assessment_data=talent_data(), tier="premium")
    )
    job_id = created.job.job_id
    assert created.job.priority == PREMIUM.priority
    await archive_stub.FailJob(pb.FailJobRequest(job_id=job_id, error_code="X", error_message="x"))
    await archive_stub.RetryJob(pb.RetryJobRequest(job_id=job_id))
    nc = await nats.connect(settings.nats_url)
    try:
        js = nc.jetstream()
        subjects: list[str] = []

        async def both_published() -> bool:
            subjects.clear()
            info = await js.stream_info(names.jobs_stream)
            for seq in range(max(1, info.state.first_seq), info.state.last_seq + 1):
                stored = await js.get_msg(names.jobs_stream, seq)
                message = events_pb2.AnalysisJobMessage.FromString(stored.data or b"")
                if message.job_id == job_id:
                    subjects.append(stored.subject or "")
            return len(subjects) == 2

        await wait_until(both_published)
    finally:
        await nc.close()
    assert subjects == [names.lane_subject(PREMIUM)] * 2


async def test_a_premium_message_behind_a_backlog_is_published_ahead_once(
    archive, archive_stub, settings: Settings
) -> None:
    names = StreamNames(settings.stream_prefix)
    await archive.relay.stop()  # a backlog builds while nothing relays
    users = {"school": (60, ""), "payer": (1, "premium")}
    for user, (count, tier) in users.items():
        await archive_stub.GrantTokens(
            pb.GrantTokensRequest(user_id=user, amount=count, reason="t")
        )
        await archive_stub.CreateSubmissions(
            pb.CreateSubmissionsRequest(
                submissions=[
                    pb.CreateSubmissionRequest(
                        user_id=user, assessment_data=talent_data(), request_id=f"r{n}", tier=tier
                    )
                    for n in range(count)
                ],
                atomic=True,
            )
        )
    relay = OutboxRelay(
        archive.pool,
        settings.database_url,
        settings.nats_url,
        names,
        events_max_age=settings.events_max_age,
        batch_size=8,
        tiers=Tiers.parse("premium:4,standard:1"),
    )
    sent = metrics.PUBLISHED._value.get() + metrics.PUBLISHED_AHEAD._value.get()
    await relay.start()
    nc = await nats.connect(settings.nats_url)
    try:
        js = nc.jetstream()

        async def all_out() -> bool:
            return (await js.stream_info(names.jobs_stream)).state.messages == 61

        await wait_until(all_out)
        premium = await js.get_msg(
            names.jobs_stream, seq=1, subject=names.lane_subject(PREMIUM), next=True
        )
    finally:
        await nc.close()
        await relay.stop()
    assert premium.seq is not None and premium.seq < 30  # ahead of most of the 60 before it
    # Each outbox row (a queue message and an event per job) went out once: the premium
    # message was skipped in its turn, not sent again for the stream to drop.
    rows = await archive.pool.fetchval("SELECT count(*) FROM outbox")
    assert metrics.PUBLISHED._value.get() + metrics.PUBLISHED_AHEAD._value.get() - sent == rows
    await check_invariants(settings.database_url)


async def test_an_operator_set_tier_gives_the_priority_and_the_token_tier_wins(
    archive, archive_stub
) -> None:
    await archive_stub.GrantTokens(pb.GrantTokensRequest(user_id="school", amount=3, reason="t"))
    await archive_stub.SetUserTier(pb.SetUserTierRequest(user_id="school", tier="premium"))
    batch = pb.CreateSubmissionsRequest(
        submissions=[
            pb.CreateSubmissionRequest(user_id="school", assessment_data=talent_data()),
            pb.CreateSubmissionRequest(
                user_id="school", assessment_data=talent_data(), tier="standard"
            ),
            pb.CreateSubmissionRequest(user_id="school", assessment_data=talent_data(), tier="x"),
        ]
    )
    reply = await archive_stub.CreateSubmissions(batch)
    # The user's tier; the token's tier over it; a tier nobody configured is the default.
    assert [o.created.job.priority for o in reply.outcomes] == [PREMIUM.priority, 0, 0]
