"""User tiers and the priority lanes they map to (``ASSAY_TIERS``), in one place.

``ASSAY_TIERS`` lists ``name:weight`` pairs, highest priority first; the last is the default
tier (a user with no tier), whose lane is priority 0 and the contract's subject
``assay.jobs.analysis`` with the durable consumer ``analysis-workers`` — what release 0.1.0's
relay publishes to and its workers serve. Each tier above it is one lane more: priority 1, 2,
… counted up from the default, subject ``assay.jobs.analysis.<name>``, consumer
``analysis-workers-<name>``. Workers serve the lanes by weight (``worker.lanes``): with
``premium:4,standard:1`` a backlogged standard lane still gets one job in five.

A job keeps the priority it was given at submit (``jobs.priority``, migration 0013); a
priority no lane has (a tier removed from the configuration, an imported job) is served by
the nearest lane below it, or the default lane.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_TIERS = "premium:4,standard:1"
TIER_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")


@dataclass(frozen=True)
class Lane:
    """One priority lane: its tier's name, priority (0 = the default lane) and weight."""

    tier: str
    priority: int
    weight: int


@dataclass(frozen=True)
class Tiers:
    """The configured tiers, highest priority first."""

    lanes: tuple[Lane, ...]

    @classmethod
    def parse(cls, text: str) -> Tiers:
        """Tiers from ``ASSAY_TIERS`` (``premium:4,standard:1``); ValueError when malformed."""
        pairs = [part.strip() for part in text.split(",") if part.strip()]
        if not pairs:
            raise ValueError("ASSAY_TIERS lists no tier")
        lanes: list[Lane] = []
        for position, pair in enumerate(pairs):
            name, sep, weight = pair.partition(":")
            name = name.strip()
            if not TIER_NAME.match(name):
                raise ValueError(f"tier name {name!r} must match {TIER_NAME.pattern}")
            if any(lane.tier == name for lane in lanes):
                raise ValueError(f"tier {name!r} is listed twice")
            try:
                share = int(weight) if sep else 1
            except ValueError:
                raise ValueError(
                    f"tier {name!r}: weight {weight!r} is not a whole number"
                ) from None
            if share < 1:
                raise ValueError(f"tier {name!r}: weight must be at least 1")
            lanes.append(Lane(name, len(pairs) - 1 - position, share))
        return cls(tuple(lanes))

    @property
    def default(self) -> Lane:
        """The default tier's lane (priority 0)."""
        return self.lanes[-1]

    @property
    def names(self) -> tuple[str, ...]:
        """Every tier's name, highest first."""
        return tuple(lane.tier for lane in self.lanes)

    def priority_of(self, tier: str) -> int | None:
        """The priority of a tier by name; None for a name not configured."""
        for lane in self.lanes:
            if lane.tier == tier:
                return lane.priority
        return None

    def lane_for(self, priority: int) -> Lane:
        """The lane that serves a job of ``priority``: its own, else the nearest below."""
        for lane in self.lanes:  # highest first
            if lane.priority <= priority:
                return lane
        return self.default

    def share_of(self, lane: Lane) -> float:
        """The fraction of throughput a lane is owed while every lane is backlogged."""
        return lane.weight / sum(other.weight for other in self.lanes)
