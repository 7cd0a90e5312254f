"""The notifier's watches: each call opens one, the hub tracks them, and ends them all
(with a resumable status) when the notifier stops or loses NATS for good."""

from __future__ import annotations

import asyncio
import logging

from prometheus_client import Gauge

from assay.archive.v1 import archive_service_pb2_grpc as archive_grpc
from assay.notifier.v1 import notifier_service_pb2 as pb
from assaylib import errors
from notifier.events_source import EventsSource
from notifier.scope import WatchScope
from notifier.watch import Ending, Watch, WatchLimits, Write

log = logging.getLogger(__name__)

ACTIVE_WATCHES = Gauge("assay_notifier_active_watches", "WatchJobs streams open now")


def unavailable(why: str) -> Ending:
    """An ending telling the client to watch again from its last cursor."""

    def build(cursor: int) -> errors.AssayError:
        return errors.Unavailable(
            f"{why}; watch again with resume_after set to the last cursor received "
            f"(at least {cursor})",
            metadata={"resume_after": str(cursor)},
        )

    return build


class WatchHub:
    """Opens, tracks and ends the watches of one notifier process."""

    def __init__(
        self,
        source: EventsSource,
        archive: archive_grpc.ArchiveServiceAsyncStub,
        limits: WatchLimits,
    ) -> None:
        self._source = source
        self._archive = archive
        self._limits = limits
        self._watches: set[Watch] = set()
        self._closing: Ending | None = None
        self._changed = asyncio.Event()
        source.on_closed(self._nats_closed)

    @property
    def active(self) -> int:
        """How many watches are open."""
        return len(self._watches)

    async def wait_active(self, count: int) -> None:
        """Return once exactly ``count`` watches are streaming (open and not ending)."""
        while sum(not watch.ending for watch in self._watches) != count:
            changed = self._changed
            await changed.wait()

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def watch(self, request: pb.WatchJobsRequest, scope: WatchScope, write: Write) -> None:
        """Serve one watch through ``write`` until it ends (always by raising)."""
        if self._closing is not None:
            raise self._closing(request.resume_after)
        watch = Watch(
            request, scope, source=self._source, archive=self._archive, limits=self._limits
        )
        watch.on_ending(self._notify)
        self._watches.add(watch)
        ACTIVE_WATCHES.inc()
        self._notify()
        try:
            await watch.run(write)
        finally:
            self._watches.discard(watch)
            ACTIVE_WATCHES.dec()
            self._notify()

    def close(self, ending: Ending | None = None) -> None:
        """Refuse new watches and end the open ones with ``ending``."""
        self._closing = ending or unavailable("the notifier is shutting down")
        for watch in list(self._watches):
            watch.end(self._closing)
        log.info("ending %d open watches", len(self._watches))

    async def _nats_closed(self) -> None:
        log.error("the NATS connection closed for good; ending every watch")
        self.close(unavailable("the notifier lost its NATS connection"))
