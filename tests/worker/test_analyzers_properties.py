"""Every valid score vector gives a profile, in each locale, within the cardinalities and enums
of ARCHITECTURE §4, with non-empty text whose cited scores are the real ones; and every locale's
shipped knowledge tables are complete enough for that to hold."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator, Mapping

import pytest
from google.protobuf import json_format
from hypothesis import given, settings
from hypothesis import strategies as st

from assay.common.v1 import assessment_pb2
from worker.analyzers import analyze
from worker.analyzers.knowledge import BANDS, LOCALES, Knowledge, load_knowledge
from worker.analyzers.scores import INDUSTRY_ORDER, OCEAN_ORDER, RIASEC_ORDER, VIA_ORDER

PROSPECT_LEVELS = {"super high", "high", "moderate", "low", "super low"}
RISK_LEVELS = {"very high", "high", "moderate", "low", "very low"}

# Small pools alongside the full range make ties (the interesting case) common.
score = st.one_of(st.integers(0, 100), st.sampled_from([0, 39, 40, 50, 60, 61, 100]))


def group(names: tuple[str, ...]) -> st.SearchStrategy[dict[str, int]]:
    return st.fixed_dictionaries({name: score for name in names})


assessment_data = st.builds(
    lambda riasec, ocean, via, industry: assessment_pb2.AssessmentData(
        riasec=assessment_pb2.Riasec(**riasec),
        ocean=assessment_pb2.Ocean(**ocean),
        via_is=assessment_pb2.ViaIs(**via),
        industry_score=assessment_pb2.IndustryScore(**industry) if industry else None,
    ),
    group(RIASEC_ORDER),
    group(OCEAN_ORDER),
    group(VIA_ORDER),
    st.dictionaries(st.sampled_from(INDUSTRY_ORDER), score, max_size=6),
)


def texts(profile: assessment_pb2.PersonaProfile) -> Iterator[str]:
    """Every string in the profile."""
    yield from (profile.archetype, profile.learning_style, profile.short_summary)
    yield from (profile.strength_summary, profile.weakness_summary, profile.work_environment)
    yield from itertools.chain(
        profile.core_motivators,
        profile.strengths,
        profile.weaknesses,
        profile.insights,
        profile.skill_suggestion,
        profile.possible_pitfalls,
        profile.development_activities.extracurricular,
    )
    for career in profile.career_recommendation:
        yield from (career.career_name, career.justification, *career.related_majors)
    for model in profile.role_model:
        yield from (model.name, model.title)
    for book in profile.development_activities.book_recommendations:
        yield from (book.title, book.author, book.reason)


def assert_cardinalities(profile: assessment_pb2.PersonaProfile, locale: str) -> None:
    assert 2 <= len(profile.core_motivators) <= 4
    assert 3 <= len(profile.strengths) <= 6
    assert 3 <= len(profile.weaknesses) <= 6
    assert 3 <= len(profile.career_recommendation) <= 5
    assert 3 <= len(profile.insights) <= 5
    assert 3 <= len(profile.skill_suggestion) <= 6
    assert 2 <= len(profile.possible_pitfalls) <= 5
    assert 2 <= len(profile.role_model) <= 3
    activities = profile.development_activities
    assert 2 <= len(activities.extracurricular) <= 4
    assert 2 <= len(activities.book_recommendations) <= 6
    assert profile.risk_tolerance in RISK_LEVELS
    for career in profile.career_recommendation:
        assert 2 <= len(career.related_majors) <= 5
        prospect = json_format.MessageToDict(career.career_prospect)
        assert len(prospect) == 6
        assert set(prospect.values()) <= PROSPECT_LEVELS
    assert len({c.career_name for c in profile.career_recommendation}) == len(
        profile.career_recommendation
    )
    assert len({m.name for m in profile.role_model}) == len(profile.role_model)
    assert len({b.title for b in activities.book_recommendations}) == len(
        activities.book_recommendations
    )
    analyzer = profile.analyzer
    assert (analyzer.name, analyzer.version, analyzer.locale) == ("talent-mapping", "2", locale)


def score_labels(knowledge: Knowledge) -> dict[str, tuple[str, str]]:
    """Label as printed in text → (group, field)."""
    labels = {t.label: ("riasec", key) for key, t in knowledge.interest_types.items()}
    labels |= {s.label: ("via", key) for key, s in knowledge.strengths.items()}
    labels |= {t.label: ("ocean", key) for key, t in knowledge.traits.items()}
    labels |= {key: ("industry", key) for key in INDUSTRY_ORDER}
    return labels


def citation_pattern(knowledge: Knowledge) -> re.Pattern[str]:
    """A score cited as "Label 82", "Label (82", or with its Big Five band between:
    "high Openness 82" (en), "Openness tinggi 82" (id)."""
    labels = "|".join(sorted(map(re.escape, score_labels(knowledge)), key=len, reverse=True))
    bands = "|".join(map(re.escape, knowledge.band_labels.values()))
    return re.compile(r"\b(" + labels + r") (?:(?:" + bands + r") )?\(?(\d+)\b")


LABELS = {locale: score_labels(load_knowledge(locale)) for locale in LOCALES}
CITATIONS = {locale: citation_pattern(load_knowledge(locale)) for locale in LOCALES}


def assert_citations_are_true(
    text: str, scores: Mapping[str, Mapping[str, int]], locale: str
) -> None:
    for label, value in CITATIONS[locale].findall(text):
        group_name, field = LABELS[locale][label]
        assert scores[group_name][field] == int(value), (label, value, text)


@pytest.mark.parametrize("locale", LOCALES)
@settings(max_examples=200, deadline=None)
@given(data=assessment_data)
def test_every_profile_is_within_the_rules(
    locale: str, data: assessment_pb2.AssessmentData
) -> None:
    profile = analyze("AI-Driven Talent Mapping", data, None, locale)
    assert_cardinalities(profile, locale)
    scores = {
        "riasec": json_format.MessageToDict(data.riasec, preserving_proto_field_name=True),
        "ocean": json_format.MessageToDict(data.ocean, preserving_proto_field_name=True),
        "via": json_format.MessageToDict(data.via_is, preserving_proto_field_name=True),
        "industry": json_format.MessageToDict(
            data.industry_score, preserving_proto_field_name=True
        ),
    }
    citation = CITATIONS[locale]
    for text in texts(profile):
        assert text.strip(), "empty text"
        assert_citations_are_true(text, scores, locale)
    for career in profile.career_recommendation:
        assert citation.search(career.justification)
    for summary in (profile.short_summary, profile.strength_summary, profile.weakness_summary):
        assert citation.search(summary)
    top = {item.split(" (")[0] for item in profile.strengths}
    marker = load_knowledge(locale).phrases["lesser_strength"].split("{label}")[1].split("(")[0]
    lesser = {w.split(marker)[0] for w in profile.weaknesses if marker in w}
    assert lesser and top.isdisjoint(lesser)
    assert profile == analyze("AI-Driven Talent Mapping", data, None, locale)


# --- the knowledge tables ---------------------------------------------------------------------


@pytest.mark.parametrize("locale", LOCALES)
def test_tables_cover_every_score_field(locale: str) -> None:
    knowledge = load_knowledge(locale)
    assert tuple(knowledge.interest_types) == RIASEC_ORDER
    assert [t.letter for t in knowledge.interest_types.values()] == list("RIASEC")
    assert tuple(knowledge.strengths) == VIA_ORDER
    assert tuple(knowledge.traits) == OCEAN_ORDER
    assert tuple(knowledge.industries) == INDUSTRY_ORDER
    assert {s.virtue for s in knowledge.strengths.values()} == set(knowledge.virtues)
    pairs = {a + b for a, b in itertools.permutations("RIASEC", 2)}
    assert set(knowledge.archetypes) == pairs
    assert set(knowledge.consistency) == {1, 2, 3}
    assert knowledge.differentiation[-1][0] == 0
    assert knowledge.risk_levels[-1][0] == 0
    assert {level for _, level in knowledge.risk_levels} == RISK_LEVELS


@pytest.mark.parametrize("locale", LOCALES)
def test_careers_are_well_formed(locale: str) -> None:
    knowledge = load_knowledge(locale)
    names = [c.name for c in knowledge.careers]
    assert len(names) == len(set(names))
    for career in knowledge.careers:
        assert len(career.code) == 3 and set(career.code) <= set("RIASEC"), career.name
        assert len(set(career.code)) == 3, career.name
        assert 2 <= len(career.majors) <= 5, career.name
        assert career.industries and set(career.industries) <= set(INDUSTRY_ORDER), career.name
        assert tuple(career.prospects) == knowledge.prospect_axes, career.name
        assert set(career.prospects.values()) <= PROSPECT_LEVELS, career.name
    for letter in "RIASEC":
        assert sum(c.family == letter for c in knowledge.careers) >= 5, letter


@pytest.mark.parametrize("locale", LOCALES)
def test_interest_types_and_traits_have_enough_entries(locale: str) -> None:
    knowledge = load_knowledge(locale)
    for interest in knowledge.interest_types.values():
        assert len(interest.skills) >= 2 and len(interest.extracurriculars) >= 2
        assert interest.role_models and interest.books
    models = [t.role_models[0].name for t in knowledge.interest_types.values()]
    assert len(models) == len(set(models))
    for trait in knowledge.traits.values():
        assert set(trait.bands) == set(BANDS)
        for name in ("low", "high"):
            extreme = trait.bands[name]
            assert extreme.weakness and extreme.pitfall, (trait.key, name)
        assert trait.bands["moderate"].weakness is None
