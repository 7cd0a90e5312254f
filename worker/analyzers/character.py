"""Strengths, strength summary and core motivators, from the VIA signature strengths, their
virtues, and the primary Holland type."""

from __future__ import annotations

from worker.analyzers.reading import Reading

VIA_STRENGTH_ITEMS = 4
"""Signature strengths listed as strengths; the primary Holland type adds one more."""

VIRTUE_MOTIVATORS = 3
"""At most this many virtues become motivators; the primary Holland type adds one more."""


def _join(items: list[str]) -> str:
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + " and " + items[-1]


def strengths(reading: Reading) -> list[str]:
    """The top VIA strengths, then the strength of the primary Holland type (5 items)."""
    items = []
    for key in reading.signature[:VIA_STRENGTH_ITEMS]:
        strength = reading.knowledge.strengths[key]
        items.append(f"{strength.label} ({reading.scores.via[key]}): {strength.description}")
    primary = reading.interest(0)
    items.append(f"{primary.strength} ({reading.cite_type(primary.key)})")
    return items


def strength_summary(reading: Reading) -> str:
    """Names the signature strengths with scores, the leading virtue, and the primary type."""
    cited = _join([reading.cite_strength(key) for key in reading.signature])
    virtue = reading.knowledge.virtues[reading.virtues[0]]
    primary = reading.interest(0)
    return (
        f"Your signature strengths are {cited}. Your leading virtue is {virtue.label} "
        f"({reading.cite_virtue(virtue.key)}). Together with your leading interest, "
        f"{reading.cite_type(primary.key)}, they point to strength in {primary.description}."
    )


def core_motivators(reading: Reading) -> list[str]:
    """One motivator per leading virtue (up to 3) plus the primary Holland type's (2–4 items)."""
    items = []
    for key in reading.virtues[:VIRTUE_MOTIVATORS]:
        virtue = reading.knowledge.virtues[key]
        items.append(f"{virtue.motivator} ({virtue.label}: {reading.cite_virtue(key)})")
    primary = reading.interest(0)
    items.append(f"{primary.motivator} ({reading.cite_type(primary.key)})")
    return items
