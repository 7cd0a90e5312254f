"""Career recommendations: candidates from the career families of the Holland code, ranked by
fit, optionally re-ranked toward the industries the person scored highest.

Fit is the weighted mean of the person's scores on the career's own three-letter code,
``(3·first + 2·second + third) / 6``. With industry scores, the rank is ``0.7·fit + 0.3·industry``,
where ``industry`` is the person's highest score among the career's industries, or a neutral 50
when none of them was scored. Ranks are compared as exact integers (scaled by 60); equal ranks
keep the table order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from assay.common.v1 import assessment_pb2
from worker.analyzers.knowledge import Career, Knowledge
from worker.analyzers.scores import Scores

CAREER_COUNT = 5
NEUTRAL_INDUSTRY_SCORE = 50
_FIT_WEIGHTS = (3, 2, 1)


@dataclass(frozen=True, slots=True)
class CareerMatch:
    """A career chosen for a person, with the numbers its justification cites."""

    career: Career
    weighted_fit: int
    """``3·first + 2·second + third`` over the career's code; divide by 6 for 0–100."""
    industry: tuple[str, int] | None
    """The person's best-scored industry of this career, as ``(key, score)``."""
    rank: int


def _weighted_fit(career: Career, riasec: Mapping[str, int], knowledge: Knowledge) -> int:
    letters = career.code
    return sum(
        weight * riasec[knowledge.type_by_letter[letter].key]
        for weight, letter in zip(_FIT_WEIGHTS, letters, strict=True)
    )


def _best_industry(career: Career, industry: Mapping[str, int]) -> tuple[str, int] | None:
    scored = [(key, industry[key]) for key in career.industries if key in industry]
    if not scored:
        return None
    # max keeps the first of equal scores, i.e. the career's own industry order.
    return max(scored, key=lambda pair: pair[1])


def _match(career: Career, scores: Scores, knowledge: Knowledge) -> CareerMatch:
    fit = _weighted_fit(career, scores.riasec, knowledge)
    if not scores.industry:
        return CareerMatch(career=career, weighted_fit=fit, industry=None, rank=fit * 10)
    best = _best_industry(career, scores.industry)
    industry_score = best[1] if best is not None else NEUTRAL_INDUSTRY_SCORE
    # 60·(0.7·fit/6 + 0.3·industry) = 7·fit + 18·industry, kept integral for exact ties.
    return CareerMatch(
        career=career, weighted_fit=fit, industry=best, rank=7 * fit + 18 * industry_score
    )


def recommend_careers(
    scores: Scores, code: Sequence[str], knowledge: Knowledge
) -> tuple[CareerMatch, ...]:
    """The best ``CAREER_COUNT`` careers from the families of the Holland ``code``."""
    families = {knowledge.interest_types[name].letter for name in code}
    candidates = [
        _match(career, scores, knowledge)
        for career in knowledge.careers
        if career.family in families
    ]
    candidates.sort(key=lambda match: -match.rank)
    return tuple(candidates[:CAREER_COUNT])


def _justification(match: CareerMatch, scores: Scores, knowledge: Knowledge, code: str) -> str:
    types = [knowledge.type_by_letter[letter] for letter in match.career.code]
    text = knowledge.say(
        "justification",
        summary=match.career.summary,
        code=code,
        career_code=match.career.code,
        cited=", ".join(
            knowledge.say("cite_score", label=t.label, score=scores.riasec[t.key]) for t in types
        ),
        fit=f"{match.weighted_fit / 6:.0f}",
    )
    if match.industry is not None:
        key, score = match.industry
        effect = "industry_up" if score >= NEUTRAL_INDUSTRY_SCORE else "industry_down"
        text += knowledge.say(effect, industry=knowledge.industries[key], key=key, score=score)
    return text


def career_messages(
    matches: Sequence[CareerMatch], scores: Scores, knowledge: Knowledge, code: str
) -> list[assessment_pb2.CareerRecommendation]:
    """The proto form of the chosen careers, each with a justification citing its scores."""
    return [
        assessment_pb2.CareerRecommendation(
            career_name=match.career.name,
            justification=_justification(match, scores, knowledge, code),
            related_majors=match.career.majors,
            career_prospect=assessment_pb2.CareerProspect(**match.career.prospects),
        )
        for match in matches
    ]
