"""Insights, skill suggestions, role models and development activities, chosen by the Holland
code, the leading virtue and the most distinctive Big Five trait."""

from __future__ import annotations

from assay.common.v1 import assessment_pb2
from worker.analyzers.challenges import trait_challenges
from worker.analyzers.knowledge import BookEntry
from worker.analyzers.reading import Reading
from worker.analyzers.scores import RIASEC_ORDER

TRAIT_SKILLS = 2
INDUSTRY_INSIGHT_COUNT = 2


def _hexagon_distance(first: str, second: str) -> int:
    # Holland's hexagon is R-I-A-S-E-C in a ring: 1 = adjacent, 2 = alternate, 3 = opposite.
    gap = abs(RIASEC_ORDER.index(first) - RIASEC_ORDER.index(second))
    return min(gap, len(RIASEC_ORDER) - gap)


def _consistency_insight(reading: Reading) -> str:
    first, second = reading.code[0], reading.code[1]
    knowledge = reading.knowledge
    text = knowledge.consistency[_hexagon_distance(first, second)]
    pair = reading.cite_type(first) + knowledge.say("and") + reading.cite_type(second)
    return knowledge.say("consistency_insight", pair=pair, text=text)


def _differentiation_insight(reading: Reading) -> str:
    riasec = reading.scores.riasec
    high = max(RIASEC_ORDER, key=lambda name: riasec[name])
    low = min((name for name in RIASEC_ORDER if name != high), key=lambda name: riasec[name])
    spread = riasec[high] - riasec[low]
    text = next(t for minimum, t in reading.knowledge.differentiation if spread >= minimum)
    return reading.knowledge.say(
        "differentiation_insight",
        spread=spread,
        high=reading.cite_type(high),
        low=reading.cite_type(low),
        text=text,
    )


def _virtue_insight(reading: Reading) -> str:
    virtue = reading.knowledge.virtues[reading.virtues[0]]
    cited = reading.cite_virtue(virtue.key)
    return reading.knowledge.say(
        "virtue_insight", virtue=virtue.label, cited=cited, insight=virtue.insight
    )


def _trait_insight(reading: Reading) -> str:
    trait = reading.distinctive_traits[0]
    text = reading.knowledge.traits[trait].bands[reading.bands[trait]].insight
    return reading.knowledge.say("trait_insight", trait=reading.cite_trait(trait), text=text)


def _industry_insight(reading: Reading) -> str | None:
    industry = reading.scores.industry
    if not industry:
        return None
    # sorted is stable: equal scores keep the IndustryScore field order.
    top = sorted(industry, key=lambda key: -industry[key])[:INDUSTRY_INSIGHT_COUNT]
    knowledge = reading.knowledge
    cited = knowledge.say("and").join(
        knowledge.say("industry_cited", industry=knowledge.industries[k], key=k, score=industry[k])
        for k in top
    )
    return knowledge.say("industry_insight", cited=cited)


def insights(reading: Reading) -> list[str]:
    """Hexagon consistency, differentiation, leading virtue, distinctive trait, and industry
    interests when scored (4–5 items)."""
    items = [
        _consistency_insight(reading),
        _differentiation_insight(reading),
        _virtue_insight(reading),
        _trait_insight(reading),
    ]
    industry = _industry_insight(reading)
    if industry is not None:
        items.append(industry)
    return items


def skill_suggestions(reading: Reading) -> list[str]:
    """Two skills of the primary type, one each of the other two, then one for each of the two
    most distinctive non-moderate traits that has one (4–6 items)."""
    picks = [(reading.interest(0), 0), (reading.interest(0), 1)]
    picks += [(reading.interest(1), 0), (reading.interest(2), 0)]
    knowledge = reading.knowledge
    items = [
        knowledge.say("type_skill", skill=t.skills[i], cited=reading.cite_type(t.key))
        for t, i in picks
    ]
    for trait in trait_challenges(reading)[:TRAIT_SKILLS]:
        skill = knowledge.traits[trait].bands[reading.bands[trait]].skill
        if skill is not None:
            items.append(knowledge.say("trait_skill", skill=skill, cited=reading.cite_trait(trait)))
    return items


def role_models(reading: Reading) -> list[assessment_pb2.RoleModel]:
    """The first role model of each Holland code type (3 people)."""
    return [
        assessment_pb2.RoleModel(name=model.name, title=model.title)
        for model in (reading.interest(rank).role_models[0] for rank in range(3))
    ]


def _extracurriculars(reading: Reading) -> list[str]:
    primary, secondary = reading.interest(0), reading.interest(1)
    virtue = reading.knowledge.virtues[reading.virtues[0]]
    return [
        primary.extracurriculars[0],
        primary.extracurriculars[1],
        secondary.extracurriculars[0],
        virtue.extracurricular,
    ]


def _books(reading: Reading) -> list[tuple[BookEntry, str]]:
    primary, secondary = reading.interest(0), reading.interest(1)
    virtue = reading.knowledge.virtues[reading.virtues[0]]
    books = [
        (primary.books[0], reading.cite_type(primary.key)),
        (secondary.books[0], reading.cite_type(secondary.key)),
        (
            virtue.book,
            reading.knowledge.say(
                "virtue_basis", virtue=virtue.label, cited=reading.cite_virtue(virtue.key)
            ),
        ),
    ]
    trait = reading.distinctive_traits[0]
    trait_book = reading.knowledge.traits[trait].bands[reading.bands[trait]].book
    if trait_book is not None:
        books.append((trait_book, reading.cite_trait(trait)))
    return books


def development_activities(reading: Reading) -> assessment_pb2.DevelopmentActivities:
    """Extracurriculars (4) and books (3–4, each once, each reason citing its scores)."""
    seen: set[str] = set()
    books = []
    for book, basis in _books(reading):
        if book.title in seen:
            continue
        seen.add(book.title)
        books.append(
            assessment_pb2.BookRecommendation(
                title=book.title,
                author=book.author,
                reason=reading.knowledge.say("book_reason", reason=book.reason, basis=basis),
            )
        )
    return assessment_pb2.DevelopmentActivities(
        extracurricular=_extracurriculars(reading), book_recommendations=books
    )
