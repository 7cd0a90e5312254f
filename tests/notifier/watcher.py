"""A WatchJobs client for tests: reads in the background, waits with timeouts."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

import grpc
import grpc.aio

from assay.events.v1 import events_pb2
from assay.notifier.v1 import notifier_service_pb2 as pb
from assay.notifier.v1 import notifier_service_pb2_grpc as pb_grpc
from assaylib.auth import bearer_token_interceptors
from tests.conftest import token

TIMEOUT = 15.0

# A receiver that never reads holds the server's writes after a few small messages.
SLOW_CLIENT_OPTIONS = [("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", 1024)]


class Watcher:
    """One WatchJobs call whose items are read as they arrive (unless ``read=False``)."""

    def __init__(self, call: Any, *, read: bool = True) -> None:
        self.call = call
        self.items: asyncio.Queue[pb.WatchJobsResponse] = asyncio.Queue()
        self.error: grpc.aio.AioRpcError | None = None
        self.ended = asyncio.Event()
        self._reader = asyncio.create_task(self._read()) if read else None
        self.last_cursor = 0

    async def _read(self) -> None:
        try:
            async for item in self.call:
                self.items.put_nowait(item)
        except grpc.aio.AioRpcError as err:
            self.error = err
        finally:
            self.ended.set()

    def start_reading(self) -> None:
        """Start reading (a watcher opened with ``read=False`` was a slow subscriber)."""
        if self._reader is None:
            self._reader = asyncio.create_task(self._read())

    async def next(self, within: float = TIMEOUT) -> pb.WatchJobsResponse:
        """The next item; fails the test after ``within`` seconds."""
        item = await asyncio.wait_for(self.items.get(), within)
        kind = item.WhichOneof("kind")
        if kind == "event":
            self.last_cursor = item.event.cursor
        elif kind == "bookmark":
            self.last_cursor = max(self.last_cursor, item.bookmark.cursor)
        return item

    async def live(self, within: float = TIMEOUT) -> list[pb.WatchJobsResponse]:
        """Wait for the first bookmark (the watch is subscribed); return what came before."""
        before: list[pb.WatchJobsResponse] = []
        while True:
            item = await self.next(within)
            if item.HasField("bookmark"):
                return before
            before.append(item)

    async def events(self, count: int, within: float = TIMEOUT) -> list[events_pb2.JobEvent]:
        """The next ``count`` events, skipping bookmarks."""
        found: list[events_pb2.JobEvent] = []
        while len(found) < count:
            item = await self.next(within)
            if item.HasField("event"):
                found.append(item.event)
        return found

    def drained(self) -> list[pb.WatchJobsResponse]:
        """Everything received and not yet taken, without waiting."""
        taken = []
        while not self.items.empty():
            taken.append(self.items.get_nowait())
        return taken

    async def failure(self, within: float = TIMEOUT) -> grpc.aio.AioRpcError:
        """Wait for the call to fail; return its error."""
        self.start_reading()
        await asyncio.wait_for(self.ended.wait(), within)
        assert self.error is not None, "the stream ended without an error"
        return self.error

    async def close(self) -> None:
        """Cancel the call."""
        self.call.cancel()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader


class Watchers:
    """Opens WatchJobs calls on one notifier with a token per role and user."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._channels: list[grpc.aio.Channel] = []
        self._watchers: list[Watcher] = []

    def stub(
        self,
        role: str = "user",
        user: str = "alice",
        *,
        auth: bool = True,
        options: Sequence[tuple[str, Any]] = (),
    ) -> pb_grpc.NotifierServiceAsyncStub:
        """A client stub authenticated as ``user`` with ``role`` (none if not ``auth``)."""
        interceptors = bearer_token_interceptors(token(role, user)) if auth else None
        channel = grpc.aio.insecure_channel(
            f"127.0.0.1:{self.port}", interceptors=interceptors, options=list(options)
        )
        self._channels.append(channel)
        return pb_grpc.NotifierServiceStub(channel)

    def open(
        self,
        role: str = "user",
        user: str = "alice",
        *,
        read: bool = True,
        auth: bool = True,
        options: Sequence[tuple[str, Any]] = (),
        **request: Any,
    ) -> Watcher:
        """Start a WatchJobs call as ``user`` with ``role``."""
        stub = self.stub(role, user, auth=auth, options=options)
        watcher = Watcher(stub.WatchJobs(pb.WatchJobsRequest(**request)), read=read)
        self._watchers.append(watcher)
        return watcher

    async def close(self) -> None:
        """Cancel every call and close every channel."""
        for watcher in self._watchers:
            await watcher.close()
        for channel in self._channels:
            await channel.close()
