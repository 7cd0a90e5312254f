"""A watch that never misses an event: it lists, then watches; resumes from its cursor after a
disconnect (with backoff and jitter); and when the notifier no longer keeps that cursor
(RESUME_TOKEN_EXPIRED, Kubernetes' 410 Gone) it says so with a ``relisted`` item and starts
again from a fresh snapshot — as client-go's informers do.

Each (job, version) is yielded at most once: snapshots and events that repeat what was already
seen are dropped. A ``CursorStore`` keeps the cursor of the last item the subscriber took, so a
subscriber that restarts resumes where it left off.
"""

from __future__ import annotations

import asyncio
import collections
import os
import random
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import grpc
import grpc.aio

from assay.common.v1 import job_pb2
from assay.events.v1 import events_pb2
from assay.notifier.v1 import notifier_service_pb2 as pb
from assay.notifier.v1 import notifier_service_pb2_grpc as pb_grpc
from assay_client.errors import ResumeTokenExpired, from_rpc_error

__all__ = ["CursorStore", "FileCursorStore", "Watch", "WatchItem"]

INITIAL_BACKOFF = 0.1
MAX_BACKOFF = 5.0
REMEMBERED_JOBS = 100_000
"""Jobs whose latest version the watch remembers to drop repeats (oldest forgotten first)."""
FATAL = (
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.UNIMPLEMENTED,
)
"""Errors a reconnect cannot cure: raised to the subscriber."""


@dataclass(frozen=True)
class WatchItem:
    """One thing a watch tells: a job as it is now (``snapshot``), a status change
    (``event``), that the watch lost its place and relists (``relisted``: the snapshots
    that follow replace what the subscriber knew), or, only for a watch opened with
    ``bookmarks=True``, where it stands (``bookmark``: every event up to ``cursor`` was
    yielded; the first bookmark of a watch says it is live)."""

    kind: Literal["snapshot", "event", "relisted", "bookmark"]
    cursor: int
    job: job_pb2.Job | None = None
    event: events_pb2.JobEvent | None = None

    @property
    def job_id(self) -> str:
        """The job this item is about ("" for ``relisted`` and ``bookmark``)."""
        source = self.job or self.event
        return source.job_id if source is not None else ""

    @property
    def status(self) -> job_pb2.JobStatus.ValueType:
        """The job's status as of this item."""
        source = self.job or self.event
        return source.status if source is not None else job_pb2.JOB_STATUS_UNSPECIFIED

    @property
    def version(self) -> int:
        """The job's version as of this item."""
        if self.job is not None:
            return self.job.version
        return self.event.job_version if self.event is not None else 0


class CursorStore(Protocol):
    """Where a watch keeps its cursor between runs."""

    def load(self) -> int | None:
        """The cursor saved last, or None."""

    def save(self, cursor: int) -> None:
        """Keep ``cursor`` (called after the subscriber took the item it belongs to)."""


class FileCursorStore:
    """A cursor in a file, replaced atomically on every save."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def load(self) -> int | None:
        try:
            return int(self.path.read_text().strip())
        except FileNotFoundError:
            return None

    def save(self, cursor: int) -> None:
        staged = self.path.with_name(self.path.name + ".tmp")
        staged.write_text(f"{cursor}\n")
        os.replace(staged, self.path)


class Watch:
    """One subscriber's view of WatchJobs, kept alive across disconnects.

    ``snapshot`` lists the jobs in scope first (when it starts without a cursor, and again
    after a relist); ``resume_after`` (or the ``cursor_store``'s cursor, which wins) starts
    from the events after that cursor instead. ``bookmarks`` yields the notifier's
    bookmarks as ``bookmark`` items (a subscriber that must know the watch is live before
    it acts, e.g. before submitting a job whose first event it wants).
    """

    def __init__(
        self,
        channel: grpc.aio.Channel,
        *,
        user_id: str = "",
        job_id: str = "",
        resume_after: int = 0,
        snapshot: bool = True,
        cursor_store: CursorStore | None = None,
        bookmarks: bool = False,
    ) -> None:
        self._stub = pb_grpc.NotifierServiceStub(channel)
        self._scope = {"user_id": user_id, "job_id": job_id}
        self._store = cursor_store
        self._bookmarks = bookmarks
        stored = cursor_store.load() if cursor_store is not None else None
        self.cursor = stored if stored is not None else resume_after
        # Whether ``cursor`` is a place in the stream to resume after. Zero is one too once a
        # watch went live on an empty stream; unpositioned, a watch starts from now.
        self._positioned = stored is not None or resume_after > 0
        self._listing = snapshot and not self._positioned  # until the first bookmark
        self._versions: collections.OrderedDict[str, int] = collections.OrderedDict()

    async def items(self) -> AsyncGenerator[WatchItem, None]:
        """Snapshots, then events, for ever; reconnecting and resuming as needed."""
        backoff = INITIAL_BACKOFF
        while True:
            request = pb.WatchJobsRequest(
                **self._scope,
                resume_after=self.cursor,
                resume=self._positioned,
                include_snapshot=self._listing,
            )
            call = self._stub.WatchJobs(request)
            try:
                async for response in call:
                    backoff = INITIAL_BACKOFF  # the stream works: the next failure starts over
                    item = self._take(response)
                    if item is not None:
                        yield item
                    if response.HasField("event") or response.HasField("bookmark"):
                        self._save()
            except grpc.aio.AioRpcError as err:
                error = from_rpc_error(err)
                if isinstance(error, ResumeTokenExpired):
                    yield WatchItem("relisted", cursor=self.cursor)
                    self.cursor, self._positioned, self._listing = 0, False, True
                    continue
                if err.code() in FATAL:
                    raise error from None
            finally:
                call.cancel()
            await asyncio.sleep(backoff * random.uniform(0.5, 1.5))  # jitter spreads reconnects
            backoff = min(backoff * 2, MAX_BACKOFF)

    def _take(self, response: pb.WatchJobsResponse) -> WatchItem | None:
        """The item to yield for a response, or None (a bookmark not asked for, or a repeat)."""
        kind = response.WhichOneof("kind")
        if kind == "bookmark":
            self.cursor = max(self.cursor, response.bookmark.cursor)
            self._positioned, self._listing = True, False
            return WatchItem("bookmark", self.cursor) if self._bookmarks else None
        if kind == "event":
            event = response.event
            self.cursor = max(self.cursor, event.cursor)
            self._positioned = True
            fresh = self._fresh(event.job_id, event.job_version)
            return WatchItem("event", self.cursor, event=event) if fresh else None
        job = response.snapshot
        fresh = self._fresh(job.job_id, job.version)
        return WatchItem("snapshot", self.cursor, job=job) if fresh else None

    def _fresh(self, job_id: str, version: int) -> bool:
        """True the first time a job is seen at this version or later."""
        if self._versions.get(job_id, 0) >= version:
            return False
        self._versions[job_id] = version
        self._versions.move_to_end(job_id)
        if len(self._versions) > REMEMBERED_JOBS:
            self._versions.popitem(last=False)
        return True

    def _save(self) -> None:
        if self._store is not None and not self._listing:
            self._store.save(self.cursor)
