"""JetStream streams, subjects and the worker consumer (ARCHITECTURE §5), in one place.

A non-empty prefix namespaces every stream, subject and consumer, so each test gets its
own; production runs with the empty prefix and the names of the contract.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import BadRequestError

from assaylib.tiers import Lane

NATS_TRANSIENT: tuple[type[BaseException], ...] = (
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError,  # the server went away; the client reconnects
    nats.errors.ConnectionDrainingError,  # shutting down
    nats.errors.OutboundBufferLimitError,  # publishing while disconnected, buffer full
    nats.errors.NoServersError,
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.errors.StaleConnectionError,
    nats.js.errors.ServiceUnavailableError,
    nats.js.errors.APIError,  # the server refused for now (limits, leadership change)
)
"""NATS errors that mean "try again later": a server answers UNAVAILABLE."""
DUPLICATE_WINDOW = 600.0  # seconds; ≥ 2 min, long enough to cover a relay restart
WORKER_CONSUMER = "analysis-workers"


def encode_user(user_id: str) -> str:
    """A subject-safe token for a user id, which may hold '.', '*', '>' or spaces."""
    return "u" + base64.urlsafe_b64encode(user_id.encode()).decode().rstrip("=")


@dataclass(frozen=True)
class StreamNames:
    """The names of Assay's streams and subjects under an optional test prefix."""

    prefix: str = ""

    def _subject(self, rest: str) -> str:
        return f"{self.prefix}.{rest}" if self.prefix else rest

    def _stream(self, name: str) -> str:
        return f"{self.prefix.upper()}_{name}" if self.prefix else name

    @property
    def jobs_stream(self) -> str:
        """The work-queue stream of analysis jobs."""
        return self._stream("ASSAY_JOBS")

    @property
    def jobs_subjects(self) -> str:
        """Every subject the jobs stream holds."""
        return self._subject("assay.jobs.>")

    @property
    def analysis_subject(self) -> str:
        """The subject of analysis job messages."""
        return self._subject("assay.jobs.analysis")

    def lane_subject(self, lane: Lane) -> str:
        """The subject of a priority lane's job messages: the default lane's is
        ``analysis_subject`` (release 0.1.0's), each higher one ``assay.jobs.analysis.<tier>``."""
        if lane.priority == 0:
            return self.analysis_subject
        return self._subject(f"assay.jobs.analysis.{lane.tier}")

    def lane_consumer(self, lane: Lane) -> str:
        """The durable consumer of a priority lane: ``worker_consumer`` for the default lane,
        ``analysis-workers-<tier>`` above it."""
        if lane.priority == 0:
            return self.worker_consumer
        return f"{self.worker_consumer}-{lane.tier}"

    def max_deliveries_advisory_of(self, consumer: str) -> str:
        """The advisory JetStream publishes when ``consumer`` gives up on a message."""
        return f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{self.jobs_stream}.{consumer}"

    @property
    def events_stream(self) -> str:
        """The limits stream of job status events (the WatchJobs resume window)."""
        return self._stream("ASSAY_EVENTS")

    @property
    def events_subjects(self) -> str:
        """Every subject the events stream holds."""
        return self._subject("assay.events.>")

    def event_subject(self, user_id: str, job_id: str) -> str:
        """The subject of one job's events."""
        return self._subject(f"assay.events.{encode_user(user_id)}.{job_id}")

    def events_filter(self, user_id: str = "", job_id: str = "") -> str:
        """A subject filter for the events of one user, one job, or everything."""
        user = encode_user(user_id) if user_id else "*"
        return self._subject(f"assay.events.{user}.{job_id or '*'}")

    @property
    def worker_consumer(self) -> str:
        """The durable pull consumer the workers share."""
        return f"{self.prefix}-{WORKER_CONSUMER}" if self.prefix else WORKER_CONSUMER

    @property
    def max_deliveries_advisory(self) -> str:
        """The advisory JetStream publishes when it gives up on a worker message."""
        return self.max_deliveries_advisory_of(self.worker_consumer)


async def _ensure_stream(js: JetStreamContext, config: StreamConfig) -> None:
    try:
        await js.add_stream(config)
    except BadRequestError:
        # It exists with another configuration: bring it to ours.
        await js.update_stream(config)


async def ensure_streams(
    js: JetStreamContext, names: StreamNames, *, events_max_age: float, replicas: int = 1
) -> None:
    """Create (or update) both streams; safe to call from every service at start-up."""
    await _ensure_stream(
        js,
        StreamConfig(
            name=names.jobs_stream,
            subjects=[names.jobs_subjects],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
            duplicate_window=DUPLICATE_WINDOW,
            num_replicas=replicas,
        ),
    )
    await _ensure_stream(
        js,
        StreamConfig(
            name=names.events_stream,
            subjects=[names.events_subjects],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            max_age=events_max_age,
            duplicate_window=DUPLICATE_WINDOW,
            num_replicas=replicas,
        ),
    )


def worker_consumer_config(
    names: StreamNames, *, ack_wait: float, max_deliver: int, lane: Lane | None = None
) -> ConsumerConfig:
    """A lane's shared pull consumer (the default lane's without ``lane``): explicit ack,
    ack_wait equal to the lease, filtered on the lane's subject alone (the work-queue stream
    needs the lanes' filters not to overlap)."""
    return ConsumerConfig(
        durable_name=names.lane_consumer(lane) if lane else names.worker_consumer,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=ack_wait,
        max_deliver=max_deliver,
        filter_subject=names.lane_subject(lane) if lane else names.analysis_subject,
        max_ack_pending=1000,
    )


async def ensure_worker_consumer(
    js: JetStreamContext,
    names: StreamNames,
    *,
    ack_wait: float,
    max_deliver: int,
    lanes: Sequence[Lane] = (),
) -> None:
    """Create the workers' durable consumer of each lane (the default lane's when none are
    given), or update it to this configuration."""
    for lane in lanes or (None,):
        config = worker_consumer_config(
            names, ack_wait=ack_wait, max_deliver=max_deliver, lane=lane
        )
        await js.add_consumer(names.jobs_stream, config)
