"""One engine, two languages: every locale's tables hold the same keys and the same
language-neutral facts; Indonesian profiles address the reader as "Anda" and keep career names
in English; English profiles are byte-for-byte those of analyzer version 1; an unknown locale
is refused."""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format

from assay.common.v1 import assessment_pb2
from assay_cli.loader import load_submission
from assaylib import jobs
from worker.analyzers import REGISTRY, TalentMappingAnalyzer, UnsupportedLocale, analyze
from worker.analyzers.knowledge import LOCALES, TABLE_FILES, load_knowledge, read_table
from worker.analyzers.scores import INDUSTRY_ORDER, OCEAN_ORDER, RIASEC_ORDER, VIA_ORDER

TALENT_MAPPING = "AI-Driven Talent Mapping"
PROFILES_PER_LOCALE = 400

ENGLISH_DIGEST = "9d655d9a8f07bc7b98a143fdb624daa6cfcfedd24b6d2fd75993e939896338b5"
"""SHA-256 of the 400 English profiles of ``seeded_submissions`` (``analyzer`` cleared), one
sorted-key JSON document per line, as analyzer version 1 wrote them before locales existed."""

LIST_LENGTHS_MAY_DIFFER = frozenset({"majors"})
"""Lists whose length is free per locale (related majors are 2–5 in any language)."""


def seeded_submissions(count: int = PROFILES_PER_LOCALE) -> Iterator[assessment_pb2.AssessmentData]:
    """The same ``count`` valid submissions every run; ties (0, 39, 40, 50, 60, 61, 100) are
    common and half carry a few industry scores."""
    rng = random.Random(21)

    def score() -> int:
        if rng.random() < 0.3:
            return rng.choice([0, 39, 40, 50, 60, 61, 100])
        return rng.randint(0, 100)

    for _ in range(count):
        data = assessment_pb2.AssessmentData(
            riasec=assessment_pb2.Riasec(**{k: score() for k in RIASEC_ORDER}),
            ocean=assessment_pb2.Ocean(**{k: score() for k in OCEAN_ORDER}),
            via_is=assessment_pb2.ViaIs(**{k: score() for k in VIA_ORDER}),
        )
        if rng.random() < 0.5:
            chosen = rng.sample(INDUSTRY_ORDER, rng.randint(1, 6))
            data.industry_score.CopyFrom(
                assessment_pb2.IndustryScore(**{k: score() for k in chosen})
            )
        yield data


def profile_line(profile: assessment_pb2.PersonaProfile) -> str:
    """The profile as one sorted-key JSON line, without ``analyzer``."""
    unstamped = assessment_pb2.PersonaProfile()
    unstamped.CopyFrom(profile)
    unstamped.ClearField("analyzer")
    document = json_format.MessageToDict(unstamped)
    return json.dumps(document, sort_keys=True, ensure_ascii=False)


# --- the tables -------------------------------------------------------------------------------


def structure_differences(first: Any, second: Any, path: str = "") -> Iterator[str]:
    """Where two parsed tables differ in shape: a key in one and not the other, a list of
    another length, a value of another JSON type."""
    if isinstance(first, dict) and isinstance(second, dict):
        for key in sorted(first.keys() ^ second.keys()):
            yield f"{path}.{key}: in one locale only"
        for key in sorted(first.keys() & second.keys()):
            yield from structure_differences(first[key], second[key], f"{path}.{key}")
    elif isinstance(first, list) and isinstance(second, list):
        name = path.rsplit(".", 1)[-1].split("[")[0]
        if len(first) != len(second) and name not in LIST_LENGTHS_MAY_DIFFER:
            yield f"{path}: {len(first)} items against {len(second)}"
        for index, (a, b) in enumerate(zip(first, second, strict=False)):
            yield from structure_differences(a, b, f"{path}[{index}]")
    elif type(first) is not type(second):
        yield f"{path}: {type(first).__name__} against {type(second).__name__}"


def test_structure_differences_finds_a_missing_key() -> None:
    english = {"types": {"realistic": {"label": "Realistic", "skills": ["a", "b"]}}}
    indonesian = {"types": {"realistic": {"skills": ["a"]}}}
    assert list(structure_differences(english, indonesian)) == [
        ".types.realistic.label: in one locale only",
        ".types.realistic.skills: 2 items against 1",
    ]


@pytest.mark.parametrize("name", TABLE_FILES)
def test_every_locale_has_the_same_keys(name: str) -> None:
    tables = {locale: read_table(locale, name) for locale in LOCALES}
    english = tables["en"]
    for locale, table in tables.items():
        assert list(structure_differences(english, table)) == [], (locale, name)


def test_the_locales_share_every_language_neutral_fact() -> None:
    english, indonesian = load_knowledge("en"), load_knowledge("id")
    for key, interest in english.interest_types.items():
        assert indonesian.interest_types[key].letter == interest.letter
    assert [(c.name, c.code, c.industries, dict(c.prospects)) for c in english.careers] == [
        (c.name, c.code, c.industries, dict(c.prospects)) for c in indonesian.careers
    ]
    assert english.prospect_axes == indonesian.prospect_axes
    assert {k: s.virtue for k, s in english.strengths.items()} == {
        k: s.virtue for k, s in indonesian.strengths.items()
    }
    assert (english.band_low_max, english.band_high_min) == (
        indonesian.band_low_max,
        indonesian.band_high_min,
    )
    assert english.risk_levels == indonesian.risk_levels  # the rated words stay the contract's
    assert [m for m, _ in english.differentiation] == [m for m, _ in indonesian.differentiation]
    assert set(english.phrases) == set(indonesian.phrases)
    for phrase, template in english.phrases.items():
        fields = set(re.findall(r"{(\w+)", template))
        assert set(re.findall(r"{(\w+)", indonesian.phrases[phrase])) <= fields, phrase


def test_the_analyzer_writes_exactly_the_contract_locales() -> None:
    assert LOCALES == jobs.LOCALES
    analyzer = REGISTRY.get(TALENT_MAPPING)
    assert isinstance(analyzer, TalentMappingAnalyzer)
    assert analyzer.locales == jobs.LOCALES
    assert jobs.DEFAULT_LOCALE == "id"


def test_indonesian_role_models_include_indonesian_figures() -> None:
    indonesian = load_knowledge("id")
    models = {m.name: m.title for t in indonesian.interest_types.values() for m in t.role_models}
    assert models["B.J. Habibie"] == "Former President of Indonesia, Engineer"
    for name in ("Susi Pudjiastuti", "Nadiem Makarim", "Sri Mulyani Indrawati"):
        assert name in models
    assert "Raden Ajeng Kartini" in models


# --- the profiles -----------------------------------------------------------------------------


def test_english_profiles_are_byte_for_byte_those_of_version_1() -> None:
    lines = [profile_line(analyze(TALENT_MAPPING, d, None, "en")) for d in seeded_submissions()]
    digest = hashlib.sha256("\n".join(lines).encode()).hexdigest()
    assert digest == ENGLISH_DIGEST


ENGLISH_WORDS = re.compile(r"\b(you|your|yours|the|and|with|of)\b", re.IGNORECASE)


def indonesian_prose(profile: assessment_pb2.PersonaProfile) -> Iterator[str]:
    """The texts written in the locale's language (not names, titles or English terms)."""
    yield from (profile.archetype, profile.short_summary, profile.strength_summary)
    yield from (profile.weakness_summary, profile.learning_style, profile.work_environment)
    yield from profile.core_motivators
    yield from profile.strengths
    yield from profile.weaknesses
    yield from profile.insights
    yield from profile.possible_pitfalls
    yield from profile.skill_suggestion
    yield from profile.development_activities.extracurricular
    for career in profile.career_recommendation:
        yield career.justification
        yield from career.related_majors
    for book in profile.development_activities.book_recommendations:
        yield book.reason


def test_indonesian_profiles_address_the_reader_as_anda_and_keep_career_names() -> None:
    english_careers = {c.name for c in load_knowledge("en").careers}
    for data in seeded_submissions():
        profile = analyze(TALENT_MAPPING, data, None, "id")
        sentences = (
            profile.short_summary,
            profile.strength_summary,
            profile.weakness_summary,
            profile.learning_style,
            profile.work_environment,
        )
        for text in sentences:
            assert "Anda" in text, text
        for text in indonesian_prose(profile):
            assert not ENGLISH_WORDS.search(text), text
            assert not re.search(r"\b(kamu|kau|engkau|anda)\b", text), text
        names = [c.career_name for c in profile.career_recommendation]
        assert set(names) <= english_careers
        assert len(names) == len(set(names))
        english = analyze(TALENT_MAPPING, data, None, "en")
        assert names == [c.career_name for c in english.career_recommendation]
        assert profile.risk_tolerance == english.risk_tolerance
        assert [c.career_prospect for c in profile.career_recommendation] == [
            c.career_prospect for c in english.career_recommendation
        ]


@pytest.mark.parametrize("locale", LOCALES)
def test_each_locale_is_deterministic(locale: str) -> None:
    first = [analyze(TALENT_MAPPING, d, None, locale) for d in seeded_submissions(50)]
    again = [analyze(TALENT_MAPPING, d, None, locale) for d in seeded_submissions(50)]
    assert [p.SerializeToString(deterministic=True) for p in first] == [
        p.SerializeToString(deterministic=True) for p in again
    ]


def test_the_locales_differ_only_in_their_texts() -> None:
    data = next(seeded_submissions(1))
    english = analyze(TALENT_MAPPING, data, None, "en")
    indonesian = analyze(TALENT_MAPPING, data, None, "id")
    assert english.short_summary != indonesian.short_summary
    assert len(english.strengths) == len(indonesian.strengths)
    assert len(english.weaknesses) == len(indonesian.weaknesses)
    assert len(english.insights) == len(indonesian.insights)


@pytest.mark.parametrize("locale", ["", "fr", "ID", "en-US", "id_ID"])
def test_an_unknown_locale_is_a_permanent_error(locale: str) -> None:
    with pytest.raises(UnsupportedLocale) as caught:
        analyze(TALENT_MAPPING, next(seeded_submissions(1)), None, locale)
    assert caught.value.error_code == "UNSUPPORTED_LOCALE"
    assert caught.value.permanent is True


# --- the documentation ------------------------------------------------------------------------

DOCS = Path(__file__).resolve().parents[2] / "docs" / "analyzer.md"
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "talent-mapping.json"


def test_the_documented_profiles_are_what_the_analyzer_writes() -> None:
    text = DOCS.read_text(encoding="utf-8")
    section = text.split("## One profile in each language", 1)[1].split("\n## ", 1)[0]
    documented = [json.loads(block) for block in re.findall(r"```json\n(.*?)\n```", section, re.S)]
    request, _ = load_submission(EXAMPLE)
    written = [
        json_format.MessageToDict(
            analyze(request.assessment_name, request.assessment_data, None, locale)
        )
        for locale in ("id", "en")
    ]
    assert documented == written
