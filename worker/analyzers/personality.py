"""Learning style, work environment and risk tolerance, from the Big Five bands and the
primary Holland type."""

from __future__ import annotations

from worker.analyzers.reading import Reading

LEARNING_TRAITS = ("openness", "conscientiousness", "extraversion")
ENVIRONMENT_TRAITS = (
    "openness",
    "conscientiousness",
    "extraversion",
    "agreeableness",
    "neuroticism",
)


def learning_style(reading: Reading) -> str:
    """The primary type's way of learning, then one clause per learning-relevant trait."""
    knowledge = reading.knowledge
    primary = reading.interest(0)
    sentences = [
        knowledge.say(
            "trait_learning",
            cited=reading.cite_trait_sentence(trait),
            learning=knowledge.traits[trait].bands[reading.bands[trait]].learning,
        )
        for trait in LEARNING_TRAITS
    ]
    opening = knowledge.say(
        "learning_style", cited=reading.cite_type(primary.key), learning=primary.learning
    )
    return opening + " ".join(sentences)


def work_environment(reading: Reading) -> str:
    """The primary type's setting, refined by one clause per Big Five trait."""
    knowledge = reading.knowledge
    primary = reading.interest(0)
    clauses = [
        knowledge.say(
            "trait_environment",
            environment=knowledge.traits[trait].bands[reading.bands[trait]].environment,
            cited=reading.cite_trait(trait),
        )
        for trait in ENVIRONMENT_TRAITS
    ]
    return knowledge.say(
        "work_environment",
        environment=primary.environment,
        cited=reading.cite_type(primary.key),
        clauses="; ".join(clauses),
    )


def risk_index_total(reading: Reading) -> int:
    """Five times the risk index: Openness + Extraversion + (100 − Neuroticism) + Bravery +
    (100 − Prudence)."""
    ocean, via = reading.scores.ocean, reading.scores.via
    return (
        ocean["openness"]
        + ocean["extraversion"]
        + (100 - ocean["neuroticism"])
        + via["bravery"]
        + (100 - via["prudence"])
    )


def risk_tolerance(reading: Reading) -> str:
    """The level of the risk index: the first table row whose minimum it reaches."""
    total = risk_index_total(reading)
    for min_index, level in reading.knowledge.risk_levels:
        if total >= 5 * min_index:
            return level
    return reading.knowledge.risk_levels[-1][1]
