"""The notifier's watches and its one subscription to the events stream.

The hub follows the whole events stream with a single ordered consumer and hands each event
to the watches whose scope holds it (indexed by user and by job), so an open watch costs no
JetStream consumer and no task of its own while it keeps up. One ticker sends every live,
idle watch its periodic bookmark. The hub ends every watch (with a resumable status) when
the notifier stops or loses NATS for good.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict

from opentelemetry.trace import SpanKind
from prometheus_client import Counter, Gauge

from assay.archive.v1 import archive_service_pb2_grpc as archive_grpc
from assay.notifier.v1 import notifier_service_pb2 as pb
from assaylib import tracing
from notifier.events_source import DeliveredEvent, EventsSource, EventSubscription
from notifier.scope import WatchScope, resumes, start_sequence
from notifier.watch import Ending, Watch, WatchLimits, Write, matches, unavailable

log = logging.getLogger(__name__)

ACTIVE_WATCHES = Gauge("assay_notifier_active_watches", "WatchJobs streams open now")
EVENTS_DISPATCHED = Counter(
    "assay_notifier_events_dispatched", "Events the shared feed read from the stream"
)


class WatchHub:
    """Opens, tracks, feeds and ends the watches of one notifier process."""

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
        self._by_user: defaultdict[str, set[Watch]] = defaultdict(set)
        self._by_job: defaultdict[str, set[Watch]] = defaultdict(set)
        self._everything: set[Watch] = set()
        self._closing: Ending | None = None
        self._changed = asyncio.Event()
        self._feed: EventSubscription | None = None
        self._ticker: asyncio.Task[None] | None = None
        self.live_cursor = 0
        """The newest stream sequence the shared feed has handed out."""
        source.on_closed(self._nats_closed)

    async def start(self) -> None:
        """Follow the events stream from its end, and start the bookmark ticker."""
        bounds = await self._source.bounds()
        self.live_cursor = bounds.last_seq
        self._feed = await self._source.subscribe(
            self._source.names.events_filter(), bounds.last_seq + 1, self._dispatch
        )
        self._ticker = asyncio.create_task(self._bookmarks(), name="watch-bookmarks")

    async def stop(self) -> None:
        """Stop following the stream (after ``close``)."""
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        if self._feed is not None:
            await self._feed.close()

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

    async def _dispatch(self, delivered: DeliveredEvent) -> None:
        event = delivered.event
        if event.cursor <= self.live_cursor:
            return  # an ordered consumer re-created from an earlier sequence repeats itself
        self.live_cursor = event.cursor
        EVENTS_DISPATCHED.inc()
        with tracing.span(
            f"notifier deliver {event.event_type}",
            __name__,
            parent=delivered.headers,
            kind=SpanKind.CONSUMER,
        ) as span:
            offered = 0
            for group in (
                self._everything,
                self._by_user.get(event.user_id, ()),
                self._by_job.get(event.job_id, ()),
            ):
                for watch in group:
                    if matches(watch.scope, event):
                        watch.offer(event)
                        offered += 1
            span.set_attributes({"assay.job_id": event.job_id, "assay.watches": offered})

    def _index(self, watch: Watch) -> set[Watch]:
        if watch.scope.job_id:
            return self._by_job[watch.scope.job_id]
        if watch.scope.user_id:
            return self._by_user[watch.scope.user_id]
        return self._everything

    async def watch(self, request: pb.WatchJobsRequest, scope: WatchScope, write: Write) -> None:
        """Serve one watch through ``write`` until it ends (always by raising)."""
        if self._closing is not None:
            raise self._closing(request.resume_after)
        if resumes(request):
            start = start_sequence(request, await self._source.bounds()) - 1
        else:
            start = self.live_cursor
        watch = Watch(
            request,
            scope,
            source=self._source,
            archive=self._archive,
            limits=self._limits,
            live_cursor=lambda: self.live_cursor,
        )
        watch.on_ending(self._notify)
        group = self._index(watch)
        group.add(watch)
        self._watches.add(watch)
        ACTIVE_WATCHES.inc()
        self._notify()
        try:
            await watch.run(write, start)
        finally:
            group.discard(watch)
            if not group:
                self._drop_empty(watch.scope)
            self._watches.discard(watch)
            ACTIVE_WATCHES.dec()
            self._notify()

    def _drop_empty(self, scope: WatchScope) -> None:
        if scope.job_id:
            self._by_job.pop(scope.job_id, None)
        elif scope.user_id:
            self._by_user.pop(scope.user_id, None)

    async def _bookmarks(self) -> None:
        while True:
            await asyncio.sleep(self._limits.bookmark_interval)
            for watch in list(self._watches):
                watch.offer_bookmark()

    def close(self, ending: Ending | None = None) -> None:
        """Refuse new watches and end the open ones with ``ending``."""
        self._closing = ending or unavailable("the notifier is shutting down")
        for watch in list(self._watches):
            watch.end(self._closing)
        log.info("ending %d open watches", len(self._watches))

    async def _nats_closed(self) -> None:
        log.error("the NATS connection closed for good; ending every watch")
        self.close(unavailable("the notifier lost its NATS connection"))
