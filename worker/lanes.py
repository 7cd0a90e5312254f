"""Weighted fair shares of a worker's slots across priority lanes (``assaylib.tiers``).

Each lane's fetch loop fetches only while a slot is free or another lane's message waits for
one (so a lone lane never takes more than it can start, and contended lanes each have
candidates), and asks the scheduler for a slot for each message it fetched. A freed slot goes
to one of the lanes waiting, by smooth weighted round robin over the lanes waiting *now*: while
every lane is backlogged each gets slots in proportion to its weight (``premium:4,standard:1``:
four premium jobs, then a standard one), and a lane with nothing waiting takes nothing, so no
slot stays idle while any lane has work and no lane starves while another is backlogged.

Slots free in bursts (a worker's reports to the archive travel in batches, so many jobs end at
once). A burst is shared by weight only if every backlogged lane holds its share of it in
waiting messages: while another lane waits, a lane keeps up to its share of all the slots in
messages waiting (``room_for``), and fetches again as soon as it holds fewer.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Sequence

from prometheus_client import Counter

from assaylib.tiers import Lane

LANE_STARTS = Counter(
    "assay_worker_lane_starts", "Job messages given a slot, by priority lane.", ["lane"]
)


class LaneScheduler:
    """``concurrency`` slots shared by the lanes by weight (smooth weighted round robin)."""

    def __init__(self, lanes: Sequence[Lane], concurrency: int) -> None:
        self.free = concurrency
        self.concurrency = concurrency
        self._weights = {lane.tier: lane.weight for lane in lanes}
        self._current = dict.fromkeys(self._weights, 0)
        self._waiting: dict[str, deque[asyncio.Future[None]]] = {
            tier: deque() for tier in self._weights
        }
        self._watchers: list[asyncio.Future[None]] = []

    def room_for(self, lane: Lane) -> int:
        """How many more messages ``lane`` should fetch now: the free slots, or, while
        another lane waits, up to its share of all the slots (at least its weight) less its
        own messages waiting, so that a burst of freed slots finds candidates of every lane
        in proportion (else the lane that fetches first takes the burst, and shares drift
        towards equal). 0 while no slot is free and no other lane waits."""
        counts = {tier: self._count(tier) for tier in self._waiting}
        if not any(count for tier, count in counts.items() if tier != lane.tier):
            return self.free
        waiting = {lane.tier} | {tier for tier, count in counts.items() if count}
        weight = self._weights[lane.tier]
        share = math.ceil(self.concurrency * weight / sum(self._weights[t] for t in waiting))
        return max(self.free, weight, share) - counts[lane.tier]

    def _count(self, tier: str) -> int:
        return sum(1 for granted in self._waiting[tier] if not granted.done())

    def changed(self) -> asyncio.Future[None]:
        """A future done at the next change of slots or waiting lanes."""
        watcher = asyncio.get_running_loop().create_future()
        self._watchers.append(watcher)
        return watcher

    def _notify(self) -> None:
        watchers, self._watchers = self._watchers, []
        for watcher in watchers:
            if not watcher.done():
                watcher.set_result(None)

    def try_acquire(self, lane: Lane) -> asyncio.Future[None]:
        """A future that is done once ``lane`` holds a slot for one message; a lane's
        requests are granted in the order made. Cancelling one before then withdraws it."""
        granted = asyncio.get_running_loop().create_future()
        self._waiting[lane.tier].append(granted)
        self._dispatch()
        self._notify()
        return granted

    def release(self) -> None:
        """A slot was freed (its job ended)."""
        self.free += 1
        self._dispatch()
        self._notify()

    def _dispatch(self) -> None:
        for requests in self._waiting.values():
            _drop_withdrawn(requests)
        while self.free > 0 and any(self._waiting.values()):
            tier = self._pick()
            requests = self._waiting[tier]
            granted = requests.popleft()
            _drop_withdrawn(requests)  # so a lane is waiting only while its head waits
            self.free -= 1
            LANE_STARTS.labels(tier).inc()
            granted.set_result(None)

    def _pick(self) -> str:
        """The waiting lane next in smooth weighted round robin (nginx's): each waiting lane
        gains its weight, the richest is picked and pays the waiting lanes' total."""
        waiting = [tier for tier, requests in self._waiting.items() if requests]
        for tier in waiting:
            self._current[tier] += self._weights[tier]
        tier = max(waiting, key=lambda name: self._current[name])
        self._current[tier] -= sum(self._weights[name] for name in waiting)
        return tier


def _drop_withdrawn(requests: deque[asyncio.Future[None]]) -> None:
    """Drop the requests at the head of a lane's queue withdrawn (cancelled) before a slot
    came."""
    while requests and requests[0].done():
        requests.popleft()
