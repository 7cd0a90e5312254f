"""The batcher: calls made while a batch is in flight leave together, and each item's wait for
its batch is measured."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from prometheus_client import REGISTRY

from assaylib.batching import Batcher

HOLD = 0.05
"""How long the test keeps the first batch in flight."""


def _waits(rpc: str) -> tuple[float, float, float]:
    """(count, sum, count within 1 ms) of the batch wait histogram for ``rpc``."""

    def value(suffix: str, **extra: str) -> float:
        found = REGISTRY.get_sample_value(
            f"assay_rpc_batch_wait_seconds_{suffix}", {"rpc": rpc, **extra}
        )
        return found or 0.0

    return value("count"), value("sum"), value("bucket", le="0.001")


async def test_items_queued_behind_a_batch_in_flight_leave_together_and_their_wait_counts() -> None:
    sent: list[list[int]] = []
    release = asyncio.Event()
    first_sent = asyncio.Event()

    async def send(items: Sequence[int]) -> Sequence[int]:
        sent.append(list(items))
        first_sent.set()
        await release.wait()
        return [item * 10 for item in items]

    batcher: Batcher[int, int] = Batcher("test-wait", send, key=lambda item: item, max_in_flight=1)
    first = asyncio.create_task(batcher.submit(1))
    await asyncio.wait_for(first_sent.wait(), 5)
    queued_at = time.perf_counter()
    behind = [asyncio.create_task(batcher.submit(n)) for n in (2, 3)]
    await asyncio.sleep(HOLD)  # the first batch stays in flight while 2 and 3 queue
    held = time.perf_counter() - queued_at
    release.set()
    assert await asyncio.wait_for(asyncio.gather(first, *behind), 5) == [10, 20, 30]

    assert sent == [[1], [2, 3]]  # the two queued calls left as one batch
    count, total, within_1ms = _waits("test-wait")
    assert count == 3  # one wait per item
    assert within_1ms == 1  # only the first left at once
    # each queued item waited about as long as the batch was held (queued a moment after
    # queued_at, within a millisecond)
    assert total >= 2 * (held - 0.001)
