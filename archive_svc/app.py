"""Wiring of the archive process: pool, domain, gRPC server and outbox relay."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import asyncpg
import grpc
from grpc_health.v1.health import HealthServicer

from archive_svc.checks import Policy
from archive_svc.db import TRANSIENT, create_pool, libpq_dsn
from archive_svc.relay import OutboxRelay, RelayWake
from archive_svc.sealing import DataKeys
from archive_svc.server import SERVICE_NAME, Archive, ArchiveServicer
from archive_svc.stats import SystemStatus
from assay.archive.v1 import archive_service_pb2_grpc as pb_grpc
from assaylib.config import Settings
from assaylib.server import create_server, shutdown
from assaylib.streams import StreamNames

log = logging.getLogger(__name__)


def policy_of(settings: Settings) -> Policy:
    """The archive's rules from the settings."""
    return Policy(
        token_cost=settings.token_cost,
        lease_timeout=settings.lease_timeout,
        max_attempts=settings.max_attempts,
        default_locale=settings.default_locale,
        data_keys=DataKeys.load(settings.data_key_file),
        tiers=settings.tier_lanes,
    )


@dataclass
class ArchiveApp:
    """A running archive: serve RPCs and relay the outbox until stopped."""

    server: grpc.aio.Server
    port: int
    health: HealthServicer
    relay: OutboxRelay
    wake: RelayWake
    pool: asyncpg.Pool
    archive: Archive

    @classmethod
    async def start(cls, settings: Settings, bind: str) -> ArchiveApp:
        """Start the server on `bind` (port 0 picks a free one) and the relay."""
        names = StreamNames(settings.stream_prefix)
        policy = policy_of(settings)
        pool = await create_pool(settings.database_url, min_size=0, max_size=settings.db_pool_size)
        archive = Archive.build(
            pool,
            libpq_dsn(settings.database_url),
            policy,
            SystemStatus(pool, settings.nats_url, names, policy.tiers),
        )
        relay = OutboxRelay(
            pool,
            settings.database_url,
            settings.nats_url,
            names,
            events_max_age=settings.events_max_age,
            stream_replicas=settings.stream_replicas,
            data_keys=policy.data_keys,
            tiers=policy.tiers,
            queued_per_user=settings.queued_per_user,
        )
        wake = RelayWake(pool, relay)
        servicer = ArchiveServicer(archive, wake.written)
        server, port, health = await create_server(
            bind,
            settings=settings,
            register=[lambda s: pb_grpc.add_ArchiveServiceServicer_to_server(servicer, s)],
            service_names=[SERVICE_NAME],
            transient_errors=TRANSIENT,
        )
        await relay.start()
        archive.status.start_sampling()
        log.info("archive serving on port %d", port)
        return cls(server, port, health, relay, wake, pool, archive)

    async def stop(self, grace: float) -> None:
        """Stop serving (draining calls within grace), then the relay, then the pool."""
        await shutdown(
            self.server,
            self.health,
            grace=grace,
            on_stop=[self.relay.stop, self.wake.close, self.archive.status.close, self.pool.close],
        )
