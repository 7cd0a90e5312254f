"""Strengths, strength summary and core motivators, from the VIA signature strengths, their
virtues, and the primary Holland type."""

from __future__ import annotations

from worker.analyzers.reading import Reading

VIA_STRENGTH_ITEMS = 4
"""Signature strengths listed as strengths; the primary Holland type adds one more."""

VIRTUE_MOTIVATORS = 3
"""At most this many virtues become motivators; the primary Holland type adds one more."""


def _join(items: list[str], conjunction: str) -> str:
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + conjunction + items[-1]


def strengths(reading: Reading) -> list[str]:
    """The top VIA strengths, then the strength of the primary Holland type (5 items)."""
    knowledge = reading.knowledge
    items = []
    for key in reading.signature[:VIA_STRENGTH_ITEMS]:
        strength = knowledge.strengths[key]
        items.append(
            knowledge.say(
                "strength_item",
                label=strength.label,
                score=reading.scores.via[key],
                description=strength.description,
            )
        )
    primary = reading.interest(0)
    items.append(
        knowledge.say("cited_item", text=primary.strength, cited=reading.cite_type(primary.key))
    )
    return items


def strength_summary(reading: Reading) -> str:
    """Names the signature strengths with scores, the leading virtue, and the primary type."""
    knowledge = reading.knowledge
    virtue = knowledge.virtues[reading.virtues[0]]
    primary = reading.interest(0)
    return knowledge.say(
        "strength_summary",
        cited=_join(
            [reading.cite_strength(key) for key in reading.signature], knowledge.say("and")
        ),
        virtue=virtue.label,
        virtue_cited=reading.cite_virtue(virtue.key),
        primary=reading.cite_type(primary.key),
        description=primary.description,
    )


def core_motivators(reading: Reading) -> list[str]:
    """One motivator per leading virtue (up to 3) plus the primary Holland type's (2–4 items)."""
    knowledge = reading.knowledge
    items = []
    for key in reading.virtues[:VIRTUE_MOTIVATORS]:
        virtue = knowledge.virtues[key]
        items.append(
            knowledge.say(
                "virtue_motivator",
                motivator=virtue.motivator,
                virtue=virtue.label,
                cited=reading.cite_virtue(key),
            )
        )
    primary = reading.interest(0)
    items.append(
        knowledge.say("cited_item", text=primary.motivator, cited=reading.cite_type(primary.key))
    )
    return items
