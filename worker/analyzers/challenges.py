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
    knowledge = reading.knowledge
    items = []
    for trait in trait_challenges(reading):
        weakness = knowledge.traits[trait].bands[reading.bands[trait]].weakness
        items.append(knowledge.say("cited_item", text=weakness, cited=reading.cite_trait(trait)))
    for key in lesser_strengths(reading):
        strength = knowledge.strengths[key]
        items.append(
            knowledge.say(
                "lesser_strength",
                label=strength.label,
                score=reading.scores.via[key],
                lesser=strength.lesser,
            )
        )
    return items


def weakness_summary(reading: Reading) -> str:
    """Names the traits and lowest VIA strengths the weaknesses rest on, with their scores."""
    knowledge = reading.knowledge
    lesser = ", ".join(reading.cite_strength(key) for key in lesser_strengths(reading))
    traits = trait_challenges(reading)
    if not traits:
        moderate = ", ".join(
            knowledge.say(
                "cite_score", label=knowledge.traits[trait].label, score=reading.scores.ocean[trait]
            )
            for trait in reading.distinctive_traits
        )
        return knowledge.say("weakness_summary_moderate", moderate=moderate, lesser=lesser)
    cited = ", ".join(reading.cite_trait(trait) for trait in traits)
    return knowledge.say("weakness_summary", cited=cited, lesser=lesser)


def possible_pitfalls(reading: Reading) -> list[str]:
    """The primary type's pitfall, trait pitfalls, then the secondary type's if needed (2–4)."""
    knowledge = reading.knowledge
    primary = reading.interest(0)
    items = [
        knowledge.say("cited_item", text=primary.pitfall, cited=reading.cite_type(primary.key))
    ]
    for trait in trait_challenges(reading):
        pitfall = knowledge.traits[trait].bands[reading.bands[trait]].pitfall
        if pitfall is not None:
            items.append(knowledge.say("cited_item", text=pitfall, cited=reading.cite_trait(trait)))
    if len(items) < MIN_PITFALLS:
        secondary = reading.interest(1)
        cited = reading.cite_type(secondary.key)
        items.append(knowledge.say("cited_item", text=secondary.pitfall, cited=cited))
    return items
