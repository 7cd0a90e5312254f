"""One WatchJobs stream: registered with the hub's shared feed, snapshot, a bounded buffer,
bookmarks, and catch-up from the events stream when it is behind.

Order of a stream: the snapshot (if asked for), then a bookmark whose cursor is where the
events start (the watch is live from here), then events in stream order, with a bookmark now
and then. The watch is registered with the hub *before* the snapshot is read, so an event
committed in between is delivered (possibly also reflected in the snapshot; clients compare
``job_version``), never lost.

Live events come from the notifier's one shared subscription (``WatchHub``): a watch costs no
JetStream consumer while it keeps up. A watch that resumes from an earlier cursor, or whose
buffer is full when an event arrives, *catches up*: a consumer of its own replays the stream
from the first event it lacks, waiting for the client as it goes (flow control holds the
server, so a burst to a client that keeps reading never overflows), until it has reached the
end of the stream; then the watch is live again and the consumer is gone. A client that takes
nothing for ``stall_timeout`` while its buffer is full gets RESOURCE_EXHAUSTED and resumes
from its last cursor: nothing is dropped silently, and no watcher ever slows another.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from google.protobuf.timestamp_pb2 import Timestamp
from prometheus_client import Counter, Histogram

from assay.archive.v1 import archive_service_pb2 as archive_pb
from assay.archive.v1 import archive_service_pb2_grpc as archive_grpc
from assay.events.v1 import events_pb2
from assay.notifier.v1 import notifier_service_pb2 as pb
from assaylib import errors
from assaylib.validation import MAX_PAGE_SIZE
from notifier.events_source import DeliveredEvent, EventsSource, EventSubscription
from notifier.scope import WatchScope, check_resume, resumes

log = logging.getLogger(__name__)

EVENTS_SENT = Counter("assay_notifier_events_sent", "Events handed to WatchJobs streams")
SNAPSHOTS_SENT = Counter("assay_notifier_snapshots_sent", "Jobs sent as WatchJobs snapshots")
BOOKMARKS_SENT = Counter("assay_notifier_bookmarks_sent", "Bookmarks written to WatchJobs")
OVERFLOWS = Counter(
    "assay_notifier_watch_overflows", "WatchJobs streams ended because the client fell behind"
)
CATCH_UPS = Counter(
    "assay_notifier_catch_ups", "Replays from the events stream (resumes and full buffers)"
)
DELIVERY_SECONDS = Histogram(
    "assay_notifier_event_delivery_seconds",
    "From a transition's commit (the event's occurred_at) to its write to a WatchJobs stream;"
    " replays after a resume count too.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
ARCHIVE_TIMEOUT = 10.0  # seconds per snapshot call to the archive
CAUGHT_UP_CHECK = 0.05  # seconds a catch-up waits for more before asking if it is done

Write = Callable[[pb.WatchJobsResponse], Awaitable[None]]
Ending = Callable[[int], errors.AssayError]
"""Builds the status a watch ends with, given the last cursor the client was sent."""


@dataclass(frozen=True)
class WatchLimits:
    """How much a watch buffers, how long a full buffer may wait for the client, and how
    often it bookmarks."""

    buffer: int
    bookmark_interval: float
    stall_timeout: float


def overflow(buffer: int) -> Ending:
    """The ending of a watch whose client fell more than ``buffer`` events behind."""
    why = f"the watcher fell more than {buffer} events behind"
    return _resumable(errors.ResourceExhausted, why)


def _resumable(kind: type[errors.AssayError], why: str) -> Ending:
    """An ending of ``kind`` saying ``why`` and where to watch again from."""

    def build(cursor: int) -> errors.AssayError:
        return kind(
            f"{why}; watch again with resume_after set to the last cursor received "
            f"(at least {cursor})",
            metadata={"resume_after": str(cursor)},
        )

    return build


def bookmark(cursor: int) -> pb.WatchJobsResponse:
    """A bookmark carrying ``cursor``, stamped now."""
    sent_at = Timestamp()
    sent_at.GetCurrentTime()
    return pb.WatchJobsResponse(bookmark=pb.Bookmark(cursor=cursor, sent_at=sent_at))


class Watch:
    """One WatchJobs call: ``run`` streams until the client leaves or ``end`` is called."""

    __slots__ = (
        "_archive",
        "_catch_up",
        "_ending",
        "_limits",
        "_live_cursor",
        "_on_ending",
        "_pending",
        "_pending_lost",
        "_queue",
        "_room",
        "_source",
        "_waiter",
        "queued_cursor",
        "request",
        "scope",
        "sent_cursor",
    )

    def __init__(
        self,
        request: pb.WatchJobsRequest,
        scope: WatchScope,
        *,
        source: EventsSource,
        archive: archive_grpc.ArchiveServiceAsyncStub,
        limits: WatchLimits,
        live_cursor: Callable[[], int],
    ) -> None:
        self.request = request
        self.scope = scope
        self._source = source
        self._archive = archive
        self._limits = limits
        self._live_cursor = live_cursor
        # An idle watch holds no deque and no Event (each keeps a deque of its own): a list
        # (bounded by the buffer) and a future made only while ``run`` waits.
        self._queue: list[pb.WatchJobsResponse] = []
        self._waiter: asyncio.Future[None] | None = None
        self._ending: Ending | None = None
        self._on_ending: list[Callable[[], None]] = []
        self.queued_cursor = 0  # the newest event queued (or the start of the watch)
        self.sent_cursor = 0  # the newest cursor written to the client
        self._catch_up: asyncio.Task[None] | None = None
        self._pending: list[events_pb2.JobEvent] = []  # live events that came mid-catch-up
        self._pending_lost = False
        self._room: asyncio.Event | None = None  # made by a replay waiting for room

    # ---- state -----------------------------------------------------------------------

    @property
    def ending(self) -> bool:
        """Whether the watch is ending (it may still be finishing its last write)."""
        return self._ending is not None

    @property
    def catching_up(self) -> bool:
        """Whether the watch replays from the stream instead of taking live events."""
        return self._catch_up is not None

    def on_ending(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` when the watch starts ending."""
        self._on_ending.append(callback)

    def end(self, ending: Ending) -> None:
        """End the stream with the status ``ending`` builds (first call wins)."""
        if self._ending is not None:
            return
        self._ending = ending
        self._wake()
        if self._room is not None:
            self._room.set()
        for callback in self._on_ending:
            callback()

    # ---- the hub's side: live events and bookmarks ------------------------------------

    def offer(self, event: events_pb2.JobEvent) -> None:
        """A live event in this watch's scope (from the shared feed; never blocks)."""
        if self._ending is not None or event.cursor <= self.queued_cursor:
            return
        if self._catch_up is not None:
            if len(self._pending) < self._limits.buffer:
                self._pending.append(event)
            else:
                self._pending_lost = True  # the replay will read them from the stream
            return
        if len(self._queue) >= self._limits.buffer:
            self._start_catch_up()  # full: replay from the first event it lacks, waiting
            self._pending.append(event)
            return
        self._enqueue_event(event)

    def offer_bookmark(self) -> None:
        """A periodic bookmark, when the watch is live and has nothing waiting: its cursor is
        the newest the shared feed has dispatched (everything before it in scope was sent)."""
        if self._ending is not None or self._catch_up is not None or self._queue:
            return
        self._queue.append(bookmark(max(self.queued_cursor, self._live_cursor())))
        self._wake()

    def _enqueue_event(self, event: events_pb2.JobEvent) -> None:
        self.queued_cursor = event.cursor
        self._queue.append(pb.WatchJobsResponse(event=event))
        self._wake()

    def _wake(self) -> None:
        """Wake ``run`` if it waits for something to send."""
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # ---- catching up from the events stream --------------------------------------------

    def _start_catch_up(self) -> None:
        CATCH_UPS.inc()
        self._pending, self._pending_lost = [], False
        self._catch_up = asyncio.get_running_loop().create_task(
            self._replay(self.queued_cursor + 1), name="watch-catch-up"
        )

    async def _replay(self, start_seq: int) -> None:
        """Deliver every event in scope from ``start_seq`` until the stream has nothing more
        and no live event was missed meanwhile; then go live."""
        arrived = asyncio.Event()
        last: list[DeliveredEvent] = []

        async def deliver(delivered: DeliveredEvent) -> None:
            last[:] = [delivered]
            arrived.set()
            if delivered.cursor > self.queued_cursor:
                await self._wait_for_room()
                if self._ending is None:
                    self._enqueue_event(delivered.event)

        subscription: EventSubscription | None = None
        try:
            subscription = await self._source.subscribe(
                self.scope.filter_subject(self._source.names), start_seq, deliver
            )
            while self._ending is None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(arrived.wait(), CAUGHT_UP_CHECK)
                    arrived.clear()
                    continue
                if not await subscription.delivered_all(last[0] if last else None):
                    continue
                if self._pending_lost:  # live events were dropped: read on
                    self._pending, self._pending_lost = [], False
                    continue
                self._go_live()
                return
        except Exception as err:  # the stream or NATS failed: the client resumes elsewhere
            log.warning("watch catch-up failed: %r", err)
            self.end(unavailable("the watch could not read the events stream"))
        finally:
            if subscription is not None:
                await subscription.close()

    def _go_live(self) -> None:
        pending, self._pending = self._pending, []
        self._catch_up = None
        for event in pending:
            if event.cursor > self.queued_cursor:
                self._enqueue_event(event)

    async def _wait_for_room(self) -> None:
        """Wait while the buffer is full; end the watch if the client takes nothing for the
        whole ``stall_timeout``."""
        while len(self._queue) >= self._limits.buffer and self._ending is None:
            if self._room is None:
                self._room = asyncio.Event()
            self._room.clear()
            try:
                await asyncio.wait_for(self._room.wait(), self._limits.stall_timeout)
            except TimeoutError:
                OVERFLOWS.inc()
                log.warning(
                    "watch overflowed: %d events buffered, none taken for %.1fs; ending it",
                    self._limits.buffer,
                    self._limits.stall_timeout,
                )
                self.end(overflow(self._limits.buffer))

    # ---- the client's side ---------------------------------------------------------------

    async def run(self, write: Write, start_cursor: int) -> None:
        """Snapshot, then the first bookmark, then events and bookmarks through ``write``.

        ``start_cursor`` is the cursor the watch starts after (the resume point, or the
        shared feed's position when it registered). Returns never; raises the ending's
        AssayError, or what the archive raised.
        """
        self.queued_cursor = self.sent_cursor = start_cursor
        try:
            if start_cursor < self._live_cursor():
                self._start_catch_up()
            if resumes(self.request):
                # Events may have aged out while the watch was being set up.
                check_resume(self.request.resume_after, await self._source.bounds())
            await self._snapshot(write)
            await self._send(write, bookmark(start_cursor))
            while True:
                if self._ending is not None:
                    raise self._ending(self.sent_cursor)
                if not self._queue:
                    self._waiter = asyncio.get_running_loop().create_future()
                    try:
                        await self._waiter
                    finally:
                        self._waiter = None
                    continue
                await self._send(write, self._queue.pop(0))
                if self._room is not None:
                    self._room.set()
        finally:
            if self._catch_up is not None:
                self._catch_up.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._catch_up

    async def _send(self, write: Write, item: pb.WatchJobsResponse) -> None:
        """Write one item; counted as it is handed to the stream, since a caller that hangs
        up on its last item cancels the write that delivered it (the count would miss it)."""
        kind = item.WhichOneof("kind")
        if kind == "event":
            EVENTS_SENT.inc()
            DELIVERY_SECONDS.observe(
                max(time.time() - item.event.occurred_at.ToNanoseconds() / 1e9, 0.0)
            )
        elif kind == "bookmark":
            BOOKMARKS_SENT.inc()
        else:
            SNAPSHOTS_SENT.inc()
        await write(item)
        if kind == "event":
            self.sent_cursor = item.event.cursor
        elif kind == "bookmark":
            self.sent_cursor = max(self.sent_cursor, item.bookmark.cursor)

    async def _snapshot(self, write: Write) -> None:
        """The current jobs in scope; for a job watch, also the ownership check (NOT_FOUND)."""
        if self.scope.job_id:
            reply = await self._archive.GetJob(
                archive_pb.GetJobRequest(job_id=self.scope.job_id, user_id=self.scope.user_id),
                timeout=ARCHIVE_TIMEOUT,
            )
            if self.request.include_snapshot:
                await self._send(write, pb.WatchJobsResponse(snapshot=reply.job))
            return
        if not self.request.include_snapshot:
            return
        page_token = ""
        while True:
            page = await self._archive.ListJobs(
                archive_pb.ListJobsRequest(
                    user_id=self.scope.user_id, page_size=MAX_PAGE_SIZE, page_token=page_token
                ),
                timeout=ARCHIVE_TIMEOUT,
            )
            for job in page.jobs:
                await self._send(write, pb.WatchJobsResponse(snapshot=job))
            page_token = page.next_page_token
            if not page_token:
                return


def unavailable(why: str) -> Ending:
    """An ending telling the client to watch again from its last cursor."""
    return _resumable(errors.Unavailable, why)


def matches(scope: WatchScope, event: events_pb2.JobEvent) -> bool:
    """Whether an event is in a watch's scope."""
    if scope.job_id and event.job_id != scope.job_id:
        return False
    return not scope.user_id or event.user_id == scope.user_id
