"""Coalesce calls made at the same moment into batch RPCs (the worker's starts, reports and
heartbeats; the assessment service's submissions).

Every task still makes its own call (``await batcher.submit(item)``); the calls made in
the same turn of the event loop, and those made while a batch is in flight, leave together
as one batch RPC. Nothing waits on a timer: an idle worker's call leaves at once, and under
load batches grow by themselves. A batch never names a job twice (one statement locks a job
once); a second call for the same job waits for the next batch.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Generic, TypeVar

from prometheus_client import Histogram

Item = TypeVar("Item")
Result = TypeVar("Result")

BATCH_SIZES = Histogram(
    "assay_rpc_batch_size",
    "Items per batch RPC sent (by RPC)",
    ["rpc"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)

BATCH_WAITS = Histogram(
    "assay_rpc_batch_wait_seconds",
    "How long an item waited before its batch RPC left (by RPC): behind the batches in"
    " flight, the part of a call's time spent queued in the caller.",
    ["rpc"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)


class Batcher(Generic[Item, Result]):
    """Sends items in batches through ``send`` (which returns, per item in order, its result
    or the exception to raise in its caller)."""

    def __init__(
        self,
        name: str,
        send: Callable[[Sequence[Item]], Awaitable[Sequence[Result | BaseException]]],
        key: Callable[[Item], Hashable],
        *,
        max_batch: int = 256,
        max_in_flight: int = 2,
    ) -> None:
        self.name = name
        self._send = send
        self._key = key
        self._max_batch = max_batch
        self._max_in_flight = max_in_flight
        self._pending: list[tuple[Item, asyncio.Future[Result], float]] = []
        self._in_flight = 0
        self._scheduled = False
        self._waits = BATCH_WAITS.labels(name)

    async def submit(self, item: Item) -> Result:
        """Send ``item`` in the next batch; its result, or its error raised."""
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future, time.perf_counter()))
        self._schedule()
        return await future

    def _schedule(self) -> None:
        if self._scheduled or not self._pending or self._in_flight >= self._max_in_flight:
            return
        self._scheduled = True
        asyncio.get_running_loop().call_soon(self._start_batch)

    def _start_batch(self) -> None:
        self._scheduled = False
        batch: list[tuple[Item, asyncio.Future[Result]]] = []
        rest: list[tuple[Item, asyncio.Future[Result], float]] = []
        keys: set[Hashable] = set()
        now = time.perf_counter()
        for entry in self._pending:
            item, future, queued = entry
            key = self._key(item)
            if future.cancelled():
                continue
            if len(batch) < self._max_batch and key not in keys:
                keys.add(key)
                batch.append((item, future))
                self._waits.observe(now - queued)
            else:
                rest.append(entry)
        self._pending = rest
        if batch:
            self._in_flight += 1
            asyncio.get_running_loop().create_task(self._deliver(batch))
        self._schedule()

    async def _deliver(self, batch: list[tuple[Item, asyncio.Future[Result]]]) -> None:
        BATCH_SIZES.labels(self.name).observe(len(batch))
        try:
            results = await self._send([item for item, _ in batch])
        except Exception as err:  # the whole call failed: every caller sees it
            for _, future in batch:
                if not future.done():
                    future.set_exception(err)
        except BaseException:
            for _, future in batch:
                future.cancel()
            raise
        else:
            for (_, future), result in zip(batch, results, strict=True):
                if future.done():
                    continue
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)
        finally:
            self._in_flight -= 1
            self._schedule()
