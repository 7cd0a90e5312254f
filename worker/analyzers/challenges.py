"""Weaknesses, weakness summary and possible pitfalls, from the Big Five bands, the lowest VIA
strengths, and the Holland code."""

from __future__ import annotations

from worker.analyzers.reading import Reading
from worker.analyzers.scores import lowest_strengths

TRAIT_ITEMS = 3
"""At most this many Big Five traits (the most distinctive outside the moderate band) count."""

MIN_WEAKNESSES = 4
MIN_LESSER_STRENGTHS = 2
MIN_PITFALLS = 2


def trait_challenges(reading: Reading) -> list[str]:
    """The most distinctive traits whose band carries a weakness, in order (at most 3)."""
    found = [
        trait
        for trait in reading.distinctive_traits
        if reading.knowledge.traits[trait].bands[reading.bands[trait]].weakness is not None
    ]
    return found[:TRAIT_ITEMS]


def lesser_strengths(reading: Reading) -> tuple[str, ...]:
    """The lowest VIA strengths, enough to bring the weaknesses to at least four."""
    count = max(MIN_LESSER_STRENGTHS, MIN_WEAKNESSES - len(trait_challenges(reading)))
    return lowest_strengths(reading.scores.via, count)


def weaknesses(reading: Reading) -> list[str]:
    """Trait weaknesses, then lesser-strength weaknesses (4–5 items)."""
    items = []
    for trait in trait_challenges(reading):
        weakness = reading.knowledge.traits[trait].bands[reading.bands[trait]].weakness
        items.append(f"{weakness} ({reading.cite_trait(trait)})")
    for key in lesser_strengths(reading):
        strength = reading.knowledge.strengths[key]
        items.append(
            f"{strength.label} is among your lowest VIA scores ({reading.scores.via[key]}), "
            f"so {strength.lesser}"
        )
    return items


def weakness_summary(reading: Reading) -> str:
    """Names the traits and lowest VIA strengths the weaknesses rest on, with their scores."""
    lesser = ", ".join(reading.cite_strength(key) for key in lesser_strengths(reading))
    traits = trait_challenges(reading)
    if not traits:
        moderate = ", ".join(
            f"{reading.knowledge.traits[trait].label} {reading.scores.ocean[trait]}"
            for trait in reading.distinctive_traits
        )
        return (
            f"Your Big Five scores all sit in the moderate band ({moderate}), so your "
            f"development areas come mainly from your lowest VIA strengths: {lesser}."
        )
    cited = ", ".join(reading.cite_trait(trait) for trait in traits)
    return (
        f"Your development areas come from your most distinctive Big Five scores ({cited}) "
        f"and your lowest VIA strengths ({lesser}). None of these is a fixed flaw; each is a "
        "habit you can practise."
    )


def possible_pitfalls(reading: Reading) -> list[str]:
    """The primary type's pitfall, trait pitfalls, then the secondary type's if needed (2–4)."""
    primary = reading.interest(0)
    items = [f"{primary.pitfall} ({reading.cite_type(primary.key)})"]
    for trait in trait_challenges(reading):
        pitfall = reading.knowledge.traits[trait].bands[reading.bands[trait]].pitfall
        if pitfall is not None:
            items.append(f"{pitfall} ({reading.cite_trait(trait)})")
    if len(items) < MIN_PITFALLS:
        secondary = reading.interest(1)
        items.append(f"{secondary.pitfall} ({reading.cite_type(secondary.key)})")
    return items
