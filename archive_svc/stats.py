"""What the archive tells operators about the whole system.

Every STATS_EVERY seconds each archive replica samples jobs in flight and their oldest age,
the outbox backlog and the workers' JetStream consumer into gauges (every replica exports the
same figures: aggregate them with ``max()``). The database's figures do not depend on NATS
being up, nor on which replica relays. ``GetSystemStatus`` (``assay status``) reads the same
figures, and more, when asked.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from dataclasses import dataclass, field

import asyncpg
import nats
from google.protobuf.duration_pb2 import Duration
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from archive_svc import metrics, store
from archive_svc.convert import stamp
from assay.archive.v1 import archive_service_pb2 as pb
from assay.common.v1 import job_pb2
from assaylib.jobs import status_name
from assaylib.streams import StreamNames
from assaylib.tiers import Tiers

log = logging.getLogger(__name__)

STATS_EVERY = 15.0  # seconds between samples
IN_FLIGHT = ("QUEUED", "PROCESSING")
CONSUMER_TIMEOUT = 2.0  # seconds to ask JetStream about the consumer for a status


@dataclass
class Sample:
    """One look at the system."""

    jobs: dict[str, int] = field(default_factory=dict)
    oldest_age: dict[str, float] = field(default_factory=dict)
    outbox_unsent: int = 0
    outbox_oldest_age: float = 0.0
    consumer: pb.ConsumerStatus | None = None

    @property
    def consumer_pending(self) -> int:
        """Undelivered job messages (0 when the consumer is unknown)."""
        return self.consumer.pending if self.consumer is not None else 0


async def sample_database(db: asyncpg.Pool | asyncpg.Connection) -> Sample:
    """Jobs in flight (with the oldest's age) and the outbox backlog, from PostgreSQL."""
    found = Sample(jobs=dict.fromkeys(IN_FLIGHT, 0), oldest_age=dict.fromkeys(IN_FLIGHT, 0.0))
    for row in await store.in_flight(db):
        found.jobs[row["status"]] = int(row["jobs"])
        found.oldest_age[row["status"]] = float(row["age"])
    outbox = await store.outbox_backlog(db)
    found.outbox_unsent, found.outbox_oldest_age = int(outbox["unsent"]), float(outbox["age"])
    return found


async def read_consumer(
    js: JetStreamContext, names: StreamNames, tiers: Tiers | None = None
) -> pb.ConsumerStatus:
    """The workers' consumers as JetStream reports them, summed over the priority lanes
    (all zero before a worker declared them)."""
    consumers = [names.lane_consumer(lane) for lane in tiers.lanes] if tiers else []
    total = pb.ConsumerStatus()
    for consumer in consumers or [names.worker_consumer]:
        with contextlib.suppress(NotFoundError):
            info = await js.consumer_info(names.jobs_stream, consumer)
            total.pending += info.num_pending or 0
            total.ack_pending += info.num_ack_pending or 0
            total.redelivered += info.num_redelivered or 0
            total.waiting += info.num_waiting or 0
    return total


def export(found: Sample) -> None:
    """Set the gauges from a sample."""
    for status, count in found.jobs.items():
        metrics.JOBS.labels(status).set(count)
        metrics.OLDEST.labels(status).set(found.oldest_age[status])
    metrics.UNSENT.set(found.outbox_unsent)
    metrics.OUTBOX_OLDEST.set(found.outbox_oldest_age)
    if found.consumer is not None:
        metrics.CONSUMER_PENDING.set(found.consumer.pending)
        metrics.CONSUMER_ACK_PENDING.set(found.consumer.ack_pending)
        metrics.CONSUMER_REDELIVERED.set(found.consumer.redelivered)


def seconds(value: float) -> Duration:
    """A Duration of ``value`` seconds (to the microsecond)."""
    duration = Duration()
    duration.FromMicroseconds(round(value * 1e6))
    return duration


class SystemStatus:
    """GetSystemStatus: PostgreSQL's figures and the workers' consumer, read when asked (over
    a NATS connection of its own, opened on first use)."""

    def __init__(
        self, pool: asyncpg.Pool, nats_url: str, names: StreamNames, tiers: Tiers | None = None
    ) -> None:
        self.pool = pool
        self.nats_url = nats_url
        self.names = names
        self.tiers = tiers
        self._nc: NatsClient | None = None
        self._connecting = asyncio.Lock()
        self._sampling: asyncio.Task[None] | None = None
        self._closing = asyncio.Event()

    async def read(self) -> pb.GetSystemStatusResponse:
        """The system's status now."""
        reply = pb.GetSystemStatusResponse(observed_at=stamp(dt.datetime.now(dt.UTC)))
        async with self.pool.acquire() as conn, conn.transaction(readonly=True):
            # One snapshot, so the figures agree with each other.
            counts = await store.jobs_per_status(conn)
            found = await sample_database(conn)
            recent = await store.last_minute(conn)
            workers = await store.recent_workers(conn)
            sweep = await store.last_sweep(conn)
            retained = await store.oldest_retained_result(conn)
        for value in job_pb2.JobStatus.values():
            if value:
                reply.jobs.add(status=value, count=counts.get(status_name(value), 0))
        reply.oldest_queued_age.CopyFrom(seconds(found.oldest_age["QUEUED"]))
        reply.oldest_processing_age.CopyFrom(seconds(found.oldest_age["PROCESSING"]))
        reply.last_minute.CopyFrom(pb.Throughput(**{k: int(v) for k, v in dict(recent).items()}))
        reply.outbox_unsent = found.outbox_unsent
        reply.outbox_oldest_unsent_age.CopyFrom(seconds(found.outbox_oldest_age))
        for row in workers:
            reply.workers.add(
                worker_id=row["worker_id"],
                last_seen=stamp(row["last_seen"]),
                processing=row["processing"],
                finished_last_minute=row["finished"],
            )
        if sweep is not None:
            fields = dict(sweep)
            summary = pb.SweepSummary(ran_at=stamp(fields.pop("ran_at")), **fields)
            reply.last_sweep.CopyFrom(summary)
        if retained is not None:
            reply.oldest_retained_result.CopyFrom(stamp(retained["created_at"]))
        consumer = await self._consumer()
        if consumer is not None:
            reply.consumer.CopyFrom(consumer)
        return reply

    async def sample(self) -> Sample:
        """Take a sample now and export it (the consumer's figures only if JetStream
        answered: its gauges keep their last values while it does not)."""
        found = await sample_database(self.pool)
        found.consumer = await self._consumer()
        export(found)
        return found

    def start_sampling(self, seconds: float = STATS_EVERY) -> None:
        """Sample every ``seconds`` in the background until ``close``."""
        self._sampling = asyncio.create_task(self._sample_every(seconds), name="stats")

    async def _sample_every(self, seconds: float) -> None:
        # Ends on ``_closing``, not only on cancellation: nats-py swallows a cancellation
        # that lands while it flushes a request, which would leave ``close`` waiting forever.
        while not self._closing.is_set():
            try:
                await self.sample()
            except Exception as err:
                log.warning("sampling the system's figures failed: %r", err)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), seconds)

    async def _consumer(self) -> pb.ConsumerStatus | None:
        try:
            async with asyncio.timeout(CONSUMER_TIMEOUT):
                js = await self.jetstream()
                return await read_consumer(js, self.names, self.tiers)
        except Exception as err:  # the status still shows everything else
            log.warning("could not read the workers' consumer for a status: %r", err)
            return None

    async def jetstream(self) -> JetStreamContext:
        """JetStream over this status's NATS connection (opened on first use); the erasure
        deletes queue messages through it too."""
        async with self._connecting:
            if self._nc is None or self._nc.is_closed:
                self._nc = await nats.connect(
                    self.nats_url, connect_timeout=CONSUMER_TIMEOUT, max_reconnect_attempts=-1
                )
            return self._nc.jetstream(timeout=CONSUMER_TIMEOUT)

    async def close(self) -> None:
        """Stop sampling and close the NATS connection, if one was opened."""
        self._closing.set()
        if self._sampling is not None:
            # Let a sample in flight finish (it is bounded): cancelling nats-py in the middle
            # of connecting leaves its socket open.
            await asyncio.wait({self._sampling}, timeout=CONSUMER_TIMEOUT + 1.0)
            self._sampling.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sampling
        nc, self._nc = self._nc, None
        if nc is not None and not nc.is_closed:
            with contextlib.suppress(Exception):
                await nc.close()
