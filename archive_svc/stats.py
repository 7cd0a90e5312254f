"""What the archive samples for operators, every STATS_EVERY seconds, in the replica that
holds the relay lock (so each figure is exported once): jobs in flight and their oldest age,
the outbox backlog, and the workers' JetStream consumer. ``assay status`` reads the same."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field

import asyncpg
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from archive_svc import metrics
from assaylib.streams import StreamNames

log = logging.getLogger(__name__)

STATS_EVERY = 15.0  # seconds between samples


@dataclass
class Sample:
    """One look at the system."""

    jobs: dict[str, int] = field(default_factory=dict)
    oldest_age: dict[str, float] = field(default_factory=dict)
    outbox_unsent: int = 0
    outbox_oldest_age: float = 0.0
    consumer_pending: int = 0
    consumer_ack_pending: int = 0
    consumer_redelivered: int = 0


async def sample_database(db: asyncpg.Pool | asyncpg.Connection) -> Sample:
    """Jobs in flight (with the oldest's age) and the outbox backlog, from PostgreSQL."""
    found = Sample()
    rows = await db.fetch(
        "SELECT status::text AS status, count(*) AS jobs, coalesce(extract(epoch FROM now()"
        " - min(CASE status WHEN 'QUEUED' THEN updated_at ELSE started_at END)), 0) AS age"
        " FROM jobs WHERE status IN ('QUEUED', 'PROCESSING') GROUP BY status"
    )
    for status in ("QUEUED", "PROCESSING"):
        found.jobs[status], found.oldest_age[status] = 0, 0.0
    for row in rows:
        found.jobs[row["status"]] = int(row["jobs"])
        found.oldest_age[row["status"]] = float(row["age"])
    outbox = await db.fetchrow(
        "SELECT count(*) AS unsent, coalesce(extract(epoch FROM now() - min(created_at)), 0)"
        " AS age FROM outbox WHERE sent_at IS NULL"
    )
    found.outbox_unsent, found.outbox_oldest_age = int(outbox["unsent"]), float(outbox["age"])
    return found


async def sample_consumer(js: JetStreamContext, names: StreamNames, found: Sample) -> None:
    """The workers' consumer: pending, delivered but unacked, redelivered."""
    with contextlib.suppress(NotFoundError):  # no worker has declared it yet
        info = await js.consumer_info(names.jobs_stream, names.worker_consumer)
        found.consumer_pending = info.num_pending or 0
        found.consumer_ack_pending = info.num_ack_pending or 0
        found.consumer_redelivered = info.num_redelivered or 0


def export(found: Sample) -> None:
    """Set the gauges from a sample."""
    for status, count in found.jobs.items():
        metrics.JOBS.labels(status).set(count)
        metrics.OLDEST.labels(status).set(found.oldest_age[status])
    metrics.UNSENT.set(found.outbox_unsent)
    metrics.OUTBOX_OLDEST.set(found.outbox_oldest_age)
    metrics.CONSUMER_PENDING.set(found.consumer_pending)
    metrics.CONSUMER_ACK_PENDING.set(found.consumer_ack_pending)
    metrics.CONSUMER_REDELIVERED.set(found.consumer_redelivered)


async def sample(db: asyncpg.Pool, js: JetStreamContext, names: StreamNames) -> Sample:
    """Take a sample and export it."""
    found = await sample_database(db)
    await sample_consumer(js, names, found)
    export(found)
    return found
