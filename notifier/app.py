"""Wiring of the notifier process: NATS, the archive channel, the watch hub, the server."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import grpc
import grpc.aio
from grpc_health.v1.health import HealthServicer

from assay.archive.v1 import archive_service_pb2_grpc as archive_grpc
from assay.notifier.v1 import notifier_service_pb2_grpc as pb_grpc
from assaylib.auth import service_token
from assaylib.channels import open_channel
from assaylib.config import Settings
from assaylib.server import create_server, shutdown
from assaylib.streams import StreamNames
from notifier.events_source import EventsSource
from notifier.hub import WatchHub
from notifier.server import SERVICE_NAME, NotifierServicer
from notifier.watch import WatchLimits

log = logging.getLogger(__name__)


@dataclass
class NotifierApp:
    """A running notifier: serves WatchJobs until stopped."""

    server: grpc.aio.Server
    port: int
    health: HealthServicer
    hub: WatchHub
    source: EventsSource
    archive_channel: grpc.aio.Channel
    _stopped: bool = False

    @classmethod
    async def start(cls, settings: Settings, bind: str) -> NotifierApp:
        """Connect to NATS, open the archive channel and serve on ``bind`` (port 0: any)."""
        source = EventsSource(
            settings.nats_url,
            StreamNames(settings.stream_prefix),
            events_max_age=settings.events_max_age,
            stream_replicas=settings.stream_replicas,
        )
        await source.connect()
        channel = open_channel(
            settings.archive_addr,
            settings,
            token=service_token(settings, "notifier"),
        )
        hub = WatchHub(
            source,
            archive_grpc.ArchiveServiceStub(channel),
            WatchLimits(
                buffer=settings.watch_buffer,
                bookmark_interval=settings.bookmark_interval,
                stall_timeout=settings.watch_stall_timeout,
            ),
        )
        await hub.start()
        servicer = NotifierServicer(hub)
        try:
            server, port, health = await create_server(
                bind,
                settings=settings,
                register=[lambda s: pb_grpc.add_NotifierServiceServicer_to_server(servicer, s)],
                service_names=[SERVICE_NAME],
            )
        except BaseException:
            await hub.stop()
            await channel.close()
            await source.close()
            raise
        log.info("notifier serving on port %d", port)
        return cls(server, port, health, hub, source, channel)

    async def stop(self, grace: float) -> None:
        """End every open stream (clients resume elsewhere), stop serving within ``grace``,
        then drain NATS and close the archive channel. A second call does nothing."""
        if self._stopped:
            return
        self._stopped = True
        await self.health.enter_graceful_shutdown()
        self.hub.close()
        await shutdown(
            self.server,
            self.health,
            grace=grace,
            on_stop=[self.hub.stop, self.source.close, self.archive_channel.close],
        )
