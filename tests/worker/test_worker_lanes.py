"""Priority lanes: the scheduler's weighted shares, and a premium job served ahead of a
standard backlog that still gets its share, end to end through the relay and a worker."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from typing import Any

import nats.errors
from nats.aio.client import Client as NatsClient

from assay.archive.v1 import archive_service_pb2 as pb
from assaylib.streams import StreamNames
from assaylib.tiers import Tiers
from tests.archive.helpers import check_invariants, talent_data, wait_until
from tests.worker.conftest import Outcomes, StartWorker
from worker.job_runner import Outcome
from worker.lanes import LaneScheduler

TIERS = Tiers.parse("premium:4,standard:1")
PREMIUM, STANDARD = TIERS.lanes


async def test_backlogged_lanes_share_slots_by_weight_and_an_idle_one_takes_none() -> None:
    scheduler = LaneScheduler(TIERS.lanes, concurrency=1)
    first = scheduler.try_acquire(STANDARD)
    assert first.done()  # a free slot: no wait
    starts: Counter[str] = Counter()
    pending = {lane.tier: scheduler.try_acquire(lane) for lane in TIERS.lanes}
    for _ in range(50):  # both lanes always have a message waiting
        scheduler.release()
        (granted,) = [tier for tier, future in pending.items() if future.done()]
        starts[granted] += 1
        pending[granted] = scheduler.try_acquire(next(x for x in TIERS.lanes if x.tier == granted))
    for future in pending.values():
        future.cancel()
    await asyncio.sleep(0)
    assert starts == {"premium": 40, "standard": 10}
    scheduler.release()  # the slot of the first request's job
    assert scheduler.free == 1
    scheduler.try_acquire(PREMIUM)
    assert scheduler.room_for(PREMIUM) == 0  # no slot free, nobody waiting
    waiting = scheduler.try_acquire(STANDARD)
    # Premium may hold its weight in candidates; standard, alone waiting, fetches nothing.
    assert scheduler.room_for(PREMIUM) == 4 and scheduler.room_for(STANDARD) == 0
    scheduler.release()
    assert waiting.done()  # the only lane waiting takes the slot


async def test_a_burst_of_freed_slots_is_shared_by_weight() -> None:
    # A worker's reports travel in batches, so many jobs end at once: the burst must go 4:1
    # too, not to whichever lane asked first.
    scheduler = LaneScheduler(TIERS.lanes, concurrency=10)
    running = [scheduler.try_acquire(STANDARD) for _ in range(10)]
    assert all(future.done() for future in running) and scheduler.free == 0
    standard = [scheduler.try_acquire(STANDARD) for _ in range(10)]
    assert scheduler.room_for(PREMIUM) == 8  # its share of the ten slots, not one at a time
    premium = [scheduler.try_acquire(PREMIUM) for _ in range(6)]
    assert scheduler.room_for(PREMIUM) == 2  # its share less what it holds already
    premium += [scheduler.try_acquire(PREMIUM) for _ in range(4)]
    assert scheduler.room_for(STANDARD) == 2 - 10  # holds more than its share: no fetch
    standard[0].cancel()  # withdrawn: never granted, takes no slot
    for _ in range(10):
        scheduler.release()
    assert sum(f.done() and not f.cancelled() for f in premium) == 8
    assert sum(f.done() and not f.cancelled() for f in standard) == 2
    assert not standard[1].cancelled() and standard[1].done()  # in the order asked
    assert scheduler.free == 0


def test_a_priority_without_a_lane_goes_to_the_nearest_below() -> None:
    tiers = Tiers.parse("gold:8,premium:4,standard:1")
    assert [lane.priority for lane in tiers.lanes] == [2, 1, 0]
    assert tiers.lane_for(7).tier == "gold" and tiers.lane_for(-3).tier == "standard"
    names = StreamNames("")
    assert names.lane_subject(tiers.default) == "assay.jobs.analysis"
    assert names.lane_consumer(tiers.default) == "analysis-workers"
    assert names.lane_subject(tiers.lanes[0]) == "assay.jobs.analysis.gold"
    assert names.lane_consumer(tiers.lanes[0]) == "analysis-workers-gold"


async def _queue(archive_stub, user: str, count: int, tier: str = "") -> list[str]:
    await archive_stub.GrantTokens(pb.GrantTokensRequest(user_id=user, amount=count, reason="t"))
    reply = await archive_stub.CreateSubmissions(
        pb.CreateSubmissionsRequest(
            submissions=[
                pb.CreateSubmissionRequest(
                    user_id=user, assessment_data=talent_data(), request_id=f"{user}-{n}", tier=tier
                )
                for n in range(count)
            ],
            atomic=True,
        )
    )
    return [outcome.created.job.job_id for outcome in reply.outcomes]


async def test_a_premium_job_overtakes_a_standard_backlog_which_keeps_its_share(
    archive_stub, start_worker: StartWorker, outcomes: Outcomes, nc: NatsClient, settings
) -> None:
    names = StreamNames(settings.stream_prefix)
    js = nc.jetstream()
    backlog = await _queue(archive_stub, "school", 30)  # within its budget: all in the stream
    premium = await _queue(archive_stub, "payer", 5, tier="premium")

    async def published() -> bool:
        info = await js.stream_info(names.jobs_stream)
        return info.state.messages == 35

    await wait_until(published)
    premium_subject = names.lane_subject(PREMIUM)
    stored = await js.get_msg(names.jobs_stream, subject=premium_subject, seq=1, next=True)
    assert stored.subject == premium_subject
    await start_worker(worker_concurrency=1, analyzer_delay=0.02)
    for job_id in premium + backlog:
        await outcomes.wait(job_id, Outcome.COMPLETED)
    order = list(outcomes.seen)
    # Served 4:1 while both lanes had work: the five premium jobs among the first seven
    # (the first standard message may already be held), the standard lane never starved.
    assert set(premium) <= set(order[:7])
    assert any(job_id in backlog for job_id in order[:7])
    await asyncio.sleep(0)  # the last observer's notification task
    await check_invariants(settings.database_url)


async def test_messages_waiting_for_a_slot_are_kept_alive_and_handed_back_on_stop(
    archive_stub, start_worker: StartWorker, outcomes: Outcomes, nc: NatsClient, settings
) -> None:
    names = StreamNames(settings.stream_prefix)
    js = nc.jetstream()
    await _queue(archive_stub, "school", 6)
    await _queue(archive_stub, "payer", 6, tier="premium")
    consumers = [names.lane_consumer(lane) for lane in TIERS.lanes]

    async def lanes() -> list[Any]:
        return [await js.consumer_info(names.jobs_stream, name) for name in consumers]

    async def published() -> bool:
        return (await js.stream_info(names.jobs_stream)).state.messages == 12

    await wait_until(published)
    # One slot, each analysis longer than the lease (6 s): the other lanes' messages wait.
    app = await start_worker(
        worker_concurrency=1, analyzer_delay=7.0, heartbeat_interval=0.5, lease_timeout=6.0
    )

    async def held() -> bool:  # one running, and candidates of both lanes waiting
        infos = await lanes()
        return sum(info.num_ack_pending for info in infos) >= 3 and all(
            info.num_ack_pending for info in infos
        )

    await wait_until(held)

    async def one_completed() -> bool:
        return any(o is Outcome.COMPLETED for seen in outcomes.seen.values() for _, o in seen)

    await wait_until(one_completed)
    # The waiting messages outlived the lease: in-progress acks kept them from redelivery.
    assert [info.num_redelivered for info in await lanes()] == [0, 0]
    await app.stop(grace=0.2)
    # Everything it held, waiting or running, was handed back: another consumer gets all
    # of it at once, not after the lease.
    left = 12 - len(outcomes.seen)
    again = 0
    for name in consumers:
        subscription = await js.pull_subscribe_bind(name, stream=names.jobs_stream)
        with contextlib.suppress(nats.errors.TimeoutError):
            again += len(await subscription.fetch(12, timeout=2.0))
        await subscription.unsubscribe()
    assert left > 1 and again == left
    await check_invariants(settings.database_url)
