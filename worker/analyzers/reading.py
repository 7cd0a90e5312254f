"""A ``Reading``: the facts derived once from the scores that every profile section uses."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from worker.analyzers.knowledge import Band, InterestType, Knowledge
from worker.analyzers.scores import (
    Scores,
    holland_code,
    strengths_by_rank,
    traits_by_distinctiveness,
)

SIGNATURE_STRENGTH_COUNT = 5
"""How many top VIA strengths count as signature strengths."""


@dataclass(frozen=True, slots=True)
class Reading:
    """Scores plus the derived facts: Holland code, signature strengths, virtues, bands."""

    scores: Scores
    knowledge: Knowledge
    code: tuple[str, str, str]
    """The Holland code as RIASEC field names, highest first."""
    signature: tuple[str, ...]
    """The top VIA strengths, highest first."""
    virtues: tuple[str, ...]
    """Virtues of the signature strengths, most represented first."""
    bands: Mapping[str, Band]
    distinctive_traits: tuple[str, ...]
    """Big Five traits, farthest from 50 first."""
    # Citations are written once per profile and reused (a profile cites ~75 times).
    _type_cites: dict[str, str] = field(default_factory=dict, repr=False, compare=False)
    _strength_cites: dict[str, str] = field(default_factory=dict, repr=False, compare=False)
    _trait_cites: dict[str, str] = field(default_factory=dict, repr=False, compare=False)

    @property
    def letters(self) -> str:
        """The Holland code as letters, e.g. "IAS"."""
        return "".join(self.interest(rank).letter for rank in range(3))

    def interest(self, rank: int) -> InterestType:
        """The interest type at ``rank`` (0 = primary) of the Holland code."""
        return self.knowledge.interest_types[self.code[rank]]

    def cite_type(self, key: str) -> str:
        """E.g. "Investigative 86"."""
        cited = self._type_cites.get(key)
        if cited is None:
            label = self.knowledge.interest_types[key].label
            cited = self.knowledge.say("cite_score", label=label, score=self.scores.riasec[key])
            self._type_cites[key] = cited
        return cited

    def cite_strength(self, key: str) -> str:
        """E.g. "Curiosity 92"."""
        cited = self._strength_cites.get(key)
        if cited is None:
            label = self.knowledge.strengths[key].label
            cited = self.knowledge.say("cite_score", label=label, score=self.scores.via[key])
            self._strength_cites[key] = cited
        return cited

    def cite_virtue(self, key: str) -> str:
        """Signature strengths of virtue ``key`` with scores, e.g. "Curiosity 92, Judgment 80"."""
        return ", ".join(
            self.cite_strength(strength)
            for strength in self.signature
            if self.knowledge.strengths[strength].virtue == key
        )

    def cite_trait_sentence(self, key: str) -> str:
        """``cite_trait`` capitalised to open a sentence, e.g. "High Openness 82"."""
        cited = self.cite_trait(key)
        return cited[0].upper() + cited[1:]

    def cite_trait(self, key: str) -> str:
        """E.g. "high Openness 82"."""
        cited = self._trait_cites.get(key)
        if cited is None:
            cited = self.knowledge.say(
                "cite_trait",
                band=self.knowledge.band_labels[self.bands[key]],
                label=self.knowledge.traits[key].label,
                score=self.scores.ocean[key],
            )
            self._trait_cites[key] = cited
        return cited


def band(score: int, knowledge: Knowledge) -> Band:
    """The Big Five band of ``score``: low ≤ low_max < moderate < high_min ≤ high."""
    if score <= knowledge.band_low_max:
        return "low"
    if score >= knowledge.band_high_min:
        return "high"
    return "moderate"


def rank_virtues(
    signature: tuple[str, ...], scores: Scores, knowledge: Knowledge
) -> tuple[str, ...]:
    """Virtues of the signature strengths: most strengths first, then highest total score,
    then the VIA order (wisdom, courage, humanity, justice, temperance, transcendence)."""
    count: dict[str, int] = {}
    total: dict[str, int] = {}
    for key in signature:
        virtue = knowledge.strengths[key].virtue
        count[virtue] = count.get(virtue, 0) + 1
        total[virtue] = total.get(virtue, 0) + scores.via[key]
    present = [v for v in knowledge.virtues if v in count]
    return tuple(sorted(present, key=lambda v: (-count[v], -total[v])))


def read_scores(scores: Scores, knowledge: Knowledge) -> Reading:
    """Derive the ``Reading`` of ``scores``."""
    signature = strengths_by_rank(scores.via)[:SIGNATURE_STRENGTH_COUNT]
    return Reading(
        scores=scores,
        knowledge=knowledge,
        code=holland_code(scores.riasec),
        signature=signature,
        virtues=rank_virtues(signature, scores, knowledge),
        bands={trait: band(value, knowledge) for trait, value in scores.ocean.items()},
        distinctive_traits=traits_by_distinctiveness(scores.ocean),
    )
