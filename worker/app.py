"""Wiring of one worker process: NATS, the archive channel, the consumer, the advisory
watcher and the gRPC health server, started and stopped together."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeAlias

import grpc.aio
import nats
from grpc_health.v1 import health_pb2
from grpc_health.v1.health import HealthServicer
from nats.aio.client import Client as NatsClient

from assay.archive.v1 import archive_service_pb2_grpc as pb_grpc
from assaylib.auth import service_token
from assaylib.channels import open_channel
from assaylib.config import Settings, listen_addr
from assaylib.server import create_server, shutdown
from assaylib.streams import (
    NATS_TRANSIENT,
    StreamNames,
    ensure_streams,
    ensure_worker_consumer,
)
from worker.advisories import MaxDeliveriesWatcher
from worker.analyzers import analyze as default_analyze
from worker.archive_client import ArchiveClient
from worker.consumer import JobConsumer, LaneSubscription, Observer
from worker.job_runner import AnalyzeFn, JobRunner

log = logging.getLogger(__name__)

SERVICE_NAME = "assay.worker"
"""The health-check name of a worker (it serves no RPCs of its own)."""
ServingStatus: TypeAlias = health_pb2.HealthCheckResponse.ServingStatus.ValueType
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def new_worker_id() -> str:
    """``hostname-pid-random``: unique per process, and readable in logs and job rows."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


def max_deliver_for(max_attempts: int) -> int:
    """JetStream's delivery limit for a job message.

    A job needs ``max_attempts`` deliveries that each start an attempt (a first start, a
    transient-error retry or a takeover after a dead worker), plus one that finds the last
    attempt expired and lets StartJob fail it (ATTEMPTS_EXHAUSTED). Deliveries that start
    nothing (a redelivery that arrives while another attempt's lease is still live, or a
    start that the archive refused while unreachable) get as many again. Beyond that the
    max-deliveries advisory fails the job.
    """
    return 2 * max_attempts + 1


def rpc_timeout_for(settings: Settings) -> float:
    """Deadline of one archive call: a heartbeat must not outlive its interval by much."""
    return min(10.0, max(1.0, settings.heartbeat_interval))


@dataclass
class WorkerApp:
    """A running worker; ``start`` it, then ``stop`` it (e.g. on SIGTERM)."""

    settings: Settings
    worker_id: str
    nc: NatsClient
    channel: grpc.aio.Channel
    consumer: JobConsumer
    advisories: MaxDeliveriesWatcher
    server: grpc.aio.Server
    port: int
    health: HealthServicer
    executor: ThreadPoolExecutor
    stopped: bool = False

    @classmethod
    async def start(
        cls,
        settings: Settings,
        *,
        bind: str | None = None,
        analyze: AnalyzeFn = default_analyze,
        observer: Observer | None = None,
        worker_id: str | None = None,
    ) -> WorkerApp:
        """Connect, declare the streams and the consumer, serve health on ``bind`` (default
        the worker address; port 0 picks one) and begin pulling jobs."""
        worker_id = worker_id or new_worker_id()
        names = StreamNames(settings.stream_prefix)
        server, port, health = await create_server(
            bind or listen_addr(settings.worker_addr),
            settings=settings,
            register=[],
            service_names=[SERVICE_NAME],
            transient_errors=NATS_TRANSIENT,
        )
        await set_health(health, NOT_SERVING)  # until NATS and the consumer are ready
        try:
            nc, lanes = await join_jobs_stream(settings, names, health)
        except BaseException:  # cancelled while NATS is unreachable, or it refused us
            await server.stop(0)
            raise
        js = nc.jetstream()
        channel = open_channel(
            settings.archive_addr,
            settings,
            token=service_token(settings, "worker"),
        )
        archive = ArchiveClient(
            pb_grpc.ArchiveServiceStub(channel), timeout=rpc_timeout_for(settings)
        )
        executor = ThreadPoolExecutor(settings.worker_concurrency, thread_name_prefix="analyze")
        runner = JobRunner(archive, settings, worker_id, analyze, executor, asyncio.Event())
        consumer = JobConsumer(
            lanes,
            runner,
            settings.worker_concurrency,
            keepalive=settings.heartbeat_interval,
            observer=observer,
        )
        advisories = MaxDeliveriesWatcher(
            nc,
            js,
            names,
            archive,
            retry_for=settings.stuck_after,
            consumers=[names.lane_consumer(held.lane) for held in lanes],
        )
        await advisories.start()
        await consumer.start()
        await set_health(health, SERVING)
        log.info(
            "worker %s pulling %s (concurrency %d, health on port %d)",
            worker_id,
            ", ".join(names.lane_consumer(held.lane) for held in lanes),
            settings.worker_concurrency,
            port,
        )
        return cls(
            settings, worker_id, nc, channel, consumer, advisories, server, port, health, executor
        )

    async def stop(self, grace: float | None = None) -> None:
        """Stop fetching; let held jobs finish within ``grace`` (default the shutdown grace)
        and hand back the rest; then stop serving health and drain NATS."""
        if self.stopped:
            return
        self.stopped = True
        grace = self.settings.shutdown_grace if grace is None else grace
        await self.health.enter_graceful_shutdown()
        await self.consumer.stop(grace)
        await self.advisories.stop()
        await shutdown(self.server, self.health, grace=0, on_stop=[self._close])

    async def _close(self) -> None:
        await self.nc.drain()
        await self.channel.close()
        self.executor.shutdown(wait=False, cancel_futures=True)


async def join_jobs_stream(
    settings: Settings, names: StreamNames, health: HealthServicer
) -> tuple[NatsClient, list[LaneSubscription]]:
    """Connect to NATS, declare the streams and the workers' consumer of every priority lane,
    and bind to each."""
    nc = await connect_nats(settings, health)
    lanes = settings.tier_lanes.lanes
    try:
        js = nc.jetstream()
        await ensure_streams(
            js, names, events_max_age=settings.events_max_age, replicas=settings.stream_replicas
        )
        await ensure_worker_consumer(
            js,
            names,
            ack_wait=settings.lease_timeout,
            max_deliver=max_deliver_for(settings.max_attempts),
            lanes=lanes,
        )
        subscriptions = [
            LaneSubscription(
                lane,
                await js.pull_subscribe_bind(
                    durable=names.lane_consumer(lane), stream=names.jobs_stream
                ),
            )
            for lane in lanes
        ]
    except BaseException:
        await nc.close()
        raise
    return nc, subscriptions


async def set_health(health: HealthServicer, status: ServingStatus) -> None:
    """Set the worker's overall and named health status."""
    for name in ("", SERVICE_NAME):
        await health.set(name, status)


async def connect_nats(settings: Settings, health: HealthServicer) -> NatsClient:
    """Connect to NATS, retrying forever; health is NOT_SERVING while disconnected."""

    async def disconnected() -> None:
        log.warning("NATS disconnected")
        await set_health(health, NOT_SERVING)

    async def reconnected() -> None:
        log.info("NATS reconnected")
        await set_health(health, SERVING)

    async def error(err: Exception) -> None:
        log.warning("NATS error: %s", err)

    return await nats.connect(
        settings.nats_url.split(","),
        max_reconnect_attempts=-1,
        reconnect_time_wait=1,
        disconnected_cb=disconnected,
        reconnected_cb=reconnected,
        error_cb=error,
        name="assay-worker",
    )
