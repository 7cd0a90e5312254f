"""One WatchJobs stream: subscribe, snapshot, replay, a bounded buffer, periodic bookmarks.

Order of a stream: the snapshot (if asked for), then a bookmark whose cursor is where the
events start (the watch is live from here), then events in stream order with a bookmark
every ``bookmark_interval``. The consumer is created *before* the snapshot is read, so an
event committed in between is delivered (possibly also reflected in the snapshot; clients
compare ``job_version``), never lost.

Events wait in a buffer of ``buffer`` entries while the client reads; when it is full the
consumer waits too (JetStream flow control holds the server), so a replay burst to a
client that keeps reading never overflows. A client that takes nothing for
``stall_timeout`` while the buffer is full gets RESOURCE_EXHAUSTED and resumes from its
last cursor: nothing is dropped silently, and no watcher ever slows another (each has its
own consumer).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from prometheus_client import Counter

from assay.archive.v1 import archive_service_pb2 as archive_pb
from assay.archive.v1 import archive_service_pb2_grpc as archive_grpc
from assay.notifier.v1 import notifier_service_pb2 as pb
from assaylib import errors
from assaylib.validation import MAX_PAGE_SIZE
from notifier.events_source import DeliveredEvent, EventsSource, EventSubscription
from notifier.scope import WatchScope, check_resume, start_sequence

log = logging.getLogger(__name__)

EVENTS_SENT = Counter("assay_notifier_events_sent", "Events written to WatchJobs streams")
SNAPSHOTS_SENT = Counter("assay_notifier_snapshots_sent", "Jobs sent as WatchJobs snapshots")
BOOKMARKS_SENT = Counter("assay_notifier_bookmarks_sent", "Bookmarks written to WatchJobs")
OVERFLOWS = Counter(
    "assay_notifier_watch_overflows", "WatchJobs streams ended because the client fell behind"
)
ARCHIVE_TIMEOUT = 10.0  # seconds per snapshot call to the archive

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


class _Ended(Exception):
    """The watch is ending: the writer stops at this message boundary."""


def overflow(buffer: int) -> Ending:
    """The ending of a watch whose client fell more than ``buffer`` events behind."""

    def build(cursor: int) -> errors.AssayError:
        return errors.ResourceExhausted(
            f"the watcher fell more than {buffer} events behind; watch again with "
            f"resume_after set to the last cursor received (at least {cursor})",
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

    def __init__(
        self,
        request: pb.WatchJobsRequest,
        scope: WatchScope,
        *,
        source: EventsSource,
        archive: archive_grpc.ArchiveServiceAsyncStub,
        limits: WatchLimits,
    ) -> None:
        self.request = request
        self.scope = scope
        self._source = source
        self._archive = archive
        self._limits = limits
        # Events wait here for the client; a bookmark, too, when there is room.
        self._queue: asyncio.Queue[pb.WatchJobsResponse] = asyncio.Queue(limits.buffer)
        self._bookmark_queued = False
        self._ending: asyncio.Future[Ending] = asyncio.get_running_loop().create_future()
        self._start_seq = 1
        self._last_received: DeliveredEvent | None = None  # for the consumer's accounting
        self._last_cursor = 0  # the newest event queued
        self._sent_cursor = 0  # the newest cursor written to the client
        self._writing = False  # a write is in flight (and must not be cancelled)

    @property
    def ending(self) -> bool:
        """Whether the watch is ending (it may still be finishing its last write)."""
        return self._ending.done()

    def on_ending(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` when the watch starts ending."""
        self._ending.add_done_callback(lambda _: callback())

    def end(self, ending: Ending) -> None:
        """End the stream with the status ``ending`` builds (first call wins)."""
        if not self._ending.done():
            self._ending.set_result(ending)

    async def run(self, write: Write) -> None:
        """Subscribe, then snapshot, then stream events and bookmarks through ``write``.

        Returns never; raises the ending's AssayError, or what the archive raised.
        """
        bounds = await self._source.bounds()
        self._start_seq = start_sequence(self.request.resume_after, bounds)
        self._sent_cursor = self._start_seq - 1
        subscription = await self._source.subscribe(
            self.scope.filter_subject(self._source.names), self._start_seq, self._deliver
        )
        try:
            if self.request.resume_after:
                # Events may have aged out while the consumer was being created.
                check_resume(self.request.resume_after, await self._source.bounds())
            await self._serve(write, subscription)
        finally:
            await subscription.close()

    async def _serve(self, write: Write, subscription: EventSubscription) -> None:
        writer = asyncio.create_task(self._write_all(write), name="watch-writer")
        ticker = asyncio.create_task(self._bookmarks(subscription), name="watch-bookmarks")
        try:
            racing: list[asyncio.Future[Any]] = [writer, self._ending]
            await asyncio.wait(racing, return_when=asyncio.FIRST_COMPLETED)
            if writer.done():
                writer.result()  # the writer ends early only by raising (the archive's error)
            ending = self._ending.result()
            ticker.cancel()
            await subscription.close()
            self._queue = asyncio.Queue()  # free the buffer while the last write finishes
            await self._stop_writer(writer)
            raise ending(self._sent_cursor)
        finally:
            for task in (writer, ticker):
                task.cancel()
            await asyncio.gather(writer, ticker, return_exceptions=True)

    async def _stop_writer(self, writer: asyncio.Task[None]) -> None:
        """Stop the writer at a message boundary: grpc cannot end a call while a write is
        in flight, so a write to a slow client is finished (the client reads it right
        before the status), and only an idle writer is cancelled."""
        if not self._writing:
            writer.cancel()
        await asyncio.gather(writer, return_exceptions=True)

    # ---- the subscription's side -------------------------------------------------------

    async def _deliver(self, delivered: DeliveredEvent) -> None:
        """Called in stream order for each event the consumer receives; waits while the
        buffer is full, and ends the watch if the client takes nothing for a whole
        ``stall_timeout`` (a replay burst to a reading client never overflows)."""
        cursor = delivered.cursor
        if cursor < self._start_seq or cursor <= self._last_cursor or self._ending.done():
            self._last_received = delivered
            return  # a consumer re-created from an earlier sequence repeats itself
        try:
            await asyncio.wait_for(
                self._queue.put(pb.WatchJobsResponse(event=delivered.event)),
                self._limits.stall_timeout,
            )
        except TimeoutError:
            OVERFLOWS.inc()
            log.warning(
                "watch overflowed: %d events buffered, none taken for %.1fs; ending it",
                self._limits.buffer,
                self._limits.stall_timeout,
                extra={"job_id": delivered.event.job_id},
            )
            self.end(overflow(self._limits.buffer))
            return
        self._last_cursor = cursor
        self._last_received = delivered

    # ---- the client's side -------------------------------------------------------------

    async def _write_all(self, write: Write) -> None:
        with contextlib.suppress(_Ended):
            await self._write_items(write)

    async def _write_items(self, write: Write) -> None:
        await self._snapshot(write)
        await self._send(write, bookmark(self._start_seq - 1))
        while not self._ending.done():
            item = await self._queue.get()
            if item.HasField("bookmark"):
                self._bookmark_queued = False
            await self._send(write, item)

    async def _send(self, write: Write, item: pb.WatchJobsResponse) -> None:
        if self._ending.done():
            raise _Ended
        self._writing = True
        try:
            await write(item)
        finally:
            self._writing = False
        kind = item.WhichOneof("kind")
        if kind == "event":
            EVENTS_SENT.inc()
            self._sent_cursor = item.event.cursor
        elif kind == "bookmark":
            BOOKMARKS_SENT.inc()
            self._sent_cursor = max(self._sent_cursor, item.bookmark.cursor)
        else:
            SNAPSHOTS_SENT.inc()

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

    # ---- bookmarks ---------------------------------------------------------------------

    async def _bookmarks(self, subscription: EventSubscription) -> None:
        while True:
            await asyncio.sleep(self._limits.bookmark_interval)
            if self._bookmark_queued or self._queue.full():
                continue  # the client has not taken the last one yet, or is behind
            cursor = await self._bookmark_cursor(subscription)
            self._bookmark_queued = True
            self._queue.put_nowait(bookmark(max(cursor, self._last_cursor)))

    async def _bookmark_cursor(self, subscription: EventSubscription) -> int:
        """The newest cursor a resume may start after without missing an event in scope.

        Once the consumer has handed over everything the stream held at some moment, the
        stream's last sequence then is safe even if none of it was ours: an idle watcher's
        cursor keeps up with the stream and does not expire.
        """
        cursor = max(self._last_cursor, self._start_seq - 1)
        try:
            bounds = await self._source.bounds()
            if await subscription.delivered_all(self._last_received):
                cursor = max(cursor, bounds.last_seq)
        except Exception as err:  # a bookmark is best effort; the next one retries
            log.debug("bookmark cursor lookup failed: %r", err)
        return cursor
