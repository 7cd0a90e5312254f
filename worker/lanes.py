"""Weighted fair shares of a worker's slots across priority lanes (``assaylib.tiers``).

Each lane's fetch loop fetches only while a slot is free or another lane's message waits for
one (so a lone lane never takes more than it can start, and contended lanes each have a
candidate), holds at most its weight in fetched messages beyond the free slots, and asks the
scheduler for a slot to start each in. A freed slot goes to one of the lanes waiting, by
smooth weighted round robin over the lanes waiting *now*: while every lane is backlogged
each gets slots in proportion to its weight (``premium:4,standard:1``: four premium jobs,
then a standard one), and a lane with nothing waiting takes nothing, so no slot stays idle
while any lane has work and no lane starves while another is backlogged.
"""

from __future__ import annotations

import asyncio
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
        self._weights = {lane.tier: lane.weight for lane in lanes}
        self._current = dict.fromkeys(self._weights, 0)
        self._waiting: dict[str, asyncio.Future[None]] = {}
        self._watchers: list[asyncio.Future[None]] = []

    def may_fetch(self, lane: Lane) -> bool:
        """Whether ``lane`` should fetch now: a slot is free, or another lane waits for one
        (the weights need every backlogged lane's candidate)."""
        return self.free > 0 or any(tier != lane.tier for tier in self._waiting)

    def batch_for(self, lane: Lane) -> int:
        """How many messages ``lane`` may fetch at once: the free slots, or, while another
        lane waits, up to its weight, so that between its fetches it still has a candidate
        each time a slot frees (else the other lanes take the slots its fetch took to come
        back, and shares drift towards equal)."""
        if any(tier != lane.tier for tier in self._waiting):
            return max(self.free, self._weights[lane.tier])
        return self.free

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
        """A future that is done once ``lane`` holds a slot (one request per lane at a
        time); cancelling it before then withdraws the request."""
        earlier = self._waiting.get(lane.tier)
        assert earlier is None or earlier.done(), "one slot request per lane at a time"
        granted = asyncio.get_running_loop().create_future()
        self._waiting[lane.tier] = granted
        granted.add_done_callback(lambda _: self._withdraw(lane.tier, granted))
        self._dispatch()
        self._notify()
        return granted

    def release(self) -> None:
        """A slot was freed (its job ended)."""
        self.free += 1
        self._dispatch()
        self._notify()

    def _withdraw(self, tier: str, granted: asyncio.Future[None]) -> None:
        if self._waiting.get(tier) is granted:
            del self._waiting[tier]

    def _dispatch(self) -> None:
        for tier in [tier for tier, waiter in self._waiting.items() if waiter.done()]:
            del self._waiting[tier]  # withdrawn (cancelled) before its callback ran
        while self.free > 0 and self._waiting:
            tier = self._pick()
            granted = self._waiting.pop(tier)
            self.free -= 1
            LANE_STARTS.labels(tier).inc()
            granted.set_result(None)

    def _pick(self) -> str:
        """The waiting lane next in smooth weighted round robin (nginx's): each waiting lane
        gains its weight, the richest is picked and pays the waiting lanes' total."""
        waiting = list(self._waiting)
        for tier in waiting:
            self._current[tier] += self._weights[tier]
        tier = max(waiting, key=lambda name: self._current[name])
        self._current[tier] -= sum(self._weights[name] for name in waiting)
        return tier
