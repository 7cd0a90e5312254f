"""The analyzer entry point, its errors, ordering rules, determinism, sensitivity and JSON form."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
from google.protobuf import json_format

from assay.common.v1 import assessment_pb2
from worker.analyzers import (
    REGISTRY,
    AnalysisError,
    AnalyzerRegistry,
    InvalidAssessmentData,
    TalentMappingAnalyzer,
    UnsupportedAssessmentType,
    analyze,
)
from worker.analyzers.knowledge import load_knowledge
from worker.analyzers.reading import band, rank_virtues
from worker.analyzers.scores import (
    OCEAN_ORDER,
    RIASEC_ORDER,
    VIA_ORDER,
    Scores,
    holland_code,
    lowest_strengths,
    strengths_by_rank,
    traits_by_distinctiveness,
)

TALENT_MAPPING = "AI-Driven Talent Mapping"


def make_data(
    riasec: Mapping[str, int] | None = None,
    ocean: Mapping[str, int] | None = None,
    via: Mapping[str, int] | None = None,
    industry: Mapping[str, int] | None = None,
    default: int = 50,
) -> assessment_pb2.AssessmentData:
    """Assessment data with every required score ``default`` unless overridden."""
    data = assessment_pb2.AssessmentData(
        riasec=assessment_pb2.Riasec(**{k: default for k in RIASEC_ORDER} | dict(riasec or {})),
        ocean=assessment_pb2.Ocean(**{k: default for k in OCEAN_ORDER} | dict(ocean or {})),
        via_is=assessment_pb2.ViaIs(**{k: default for k in VIA_ORDER} | dict(via or {})),
    )
    if industry is not None:
        data.industry_score.CopyFrom(assessment_pb2.IndustryScore(**industry))
    return data


HELPER = make_data(
    riasec={"social": 92, "artistic": 70, "enterprising": 65, "realistic": 20, "conventional": 25},
    ocean={"agreeableness": 90, "extraversion": 75, "conscientiousness": 55},
    via={"kindness": 95, "love": 90, "social_intelligence": 88, "teamwork": 85},
)
TECHNICIAN = make_data(
    riasec={"realistic": 92, "conventional": 85, "investigative": 60, "social": 15, "artistic": 20},
    ocean={"agreeableness": 25, "conscientiousness": 88, "extraversion": 30},
    via={"prudence": 92, "perseverance": 90, "self_regulation": 85, "judgment": 80},
)


# --- entry point and errors -------------------------------------------------------------------


@pytest.mark.parametrize("locale", ["id", "en"])
def test_analyze_records_the_analyzer_and_its_locale(locale: str) -> None:
    profile = analyze(TALENT_MAPPING, HELPER, None, locale)
    analyzer = profile.analyzer
    assert (analyzer.name, analyzer.version, analyzer.locale) == ("talent-mapping", "2", locale)


def test_the_default_locale_is_indonesian_as_in_the_original() -> None:
    assert analyze(TALENT_MAPPING, HELPER, None) == analyze(TALENT_MAPPING, HELPER, None, "id")


def test_empty_name_means_talent_mapping() -> None:
    assert analyze("", HELPER, None) == analyze(TALENT_MAPPING, HELPER, None)


def test_raw_responses_are_accepted() -> None:
    raw = assessment_pb2.RawResponses()
    raw.responses["riasec"].items.add(question_id="q1", number_value=80)
    assert analyze(TALENT_MAPPING, HELPER, raw) == analyze(TALENT_MAPPING, HELPER, None)


@pytest.mark.parametrize(
    "name", ["AI-Based IQ Test", "Custom Assessment", "Astrology", "ai-driven"]
)
def test_unsupported_assessment_is_a_permanent_error(name: str) -> None:
    with pytest.raises(UnsupportedAssessmentType) as caught:
        analyze(name, HELPER, None)
    error = caught.value
    assert isinstance(error, AnalysisError)
    assert error.error_code == "UNSUPPORTED_ASSESSMENT_TYPE"
    assert error.permanent is True
    assert name in str(error)


def test_registry_serves_only_talent_mapping_for_now() -> None:
    assert REGISTRY.names() == (TALENT_MAPPING,)
    assert isinstance(REGISTRY.get(""), TalentMappingAnalyzer)


def test_a_registry_takes_new_analyzers() -> None:
    registry = AnalyzerRegistry()
    analyzer = TalentMappingAnalyzer()
    registry.register("Custom Assessment", analyzer)
    assert registry.get("Custom Assessment") is analyzer
    with pytest.raises(UnsupportedAssessmentType):
        registry.get("")


def test_missing_score_is_invalid_data_not_a_crash() -> None:
    data = make_data()
    data.riasec.ClearField("social")
    data.via_is.ClearField("hope")
    with pytest.raises(InvalidAssessmentData) as caught:
        analyze(TALENT_MAPPING, data, None)
    assert caught.value.error_code == "INVALID_ASSESSMENT_DATA"
    assert caught.value.permanent is True
    assert caught.value.problems == ("riasec.social is missing", "via_is.hope is missing")


def test_missing_group_names_every_score() -> None:
    data = make_data()
    data.ClearField("ocean")
    with pytest.raises(InvalidAssessmentData) as caught:
        analyze(TALENT_MAPPING, data, None)
    assert caught.value.problems == tuple(f"ocean.{name} is missing" for name in OCEAN_ORDER)


@pytest.mark.parametrize("value", [-1, 101])
def test_out_of_range_score_is_invalid(value: int) -> None:
    with pytest.raises(InvalidAssessmentData, match=r"ocean\.openness"):
        analyze(TALENT_MAPPING, make_data(ocean={"openness": value}), None)
    with pytest.raises(InvalidAssessmentData, match=r"industry_score\.media"):
        analyze(TALENT_MAPPING, make_data(industry={"media": value}), None)


def test_zero_is_a_present_score() -> None:
    profile = analyze(TALENT_MAPPING, make_data(default=0), None)
    assert profile.archetype


# --- ordering rules and ties ------------------------------------------------------------------


def riasec(**scores: int) -> dict[str, int]:
    return {name: 0 for name in RIASEC_ORDER} | scores


@pytest.mark.parametrize(
    ("scores", "code"),
    [
        (riasec(social=90, artistic=80, investigative=70), ("social", "artistic", "investigative")),
        ({name: 50 for name in RIASEC_ORDER}, ("realistic", "investigative", "artistic")),
        (
            riasec(conventional=90, realistic=50, investigative=50),
            ("conventional", "realistic", "investigative"),
        ),
        (
            riasec(investigative=90, artistic=70, social=70, enterprising=70),
            ("investigative", "artistic", "social"),
        ),
        (
            riasec(enterprising=60, social=60, conventional=60),
            ("social", "enterprising", "conventional"),
        ),
        (riasec(conventional=1), ("conventional", "realistic", "investigative")),
    ],
)
def test_holland_code_ordering_and_ties(scores: dict[str, int], code: tuple[str, ...]) -> None:
    assert holland_code(scores) == code


def test_via_ordering_breaks_ties_by_classification_order() -> None:
    via = {name: 50 for name in VIA_ORDER} | {"spirituality": 90, "hope": 80, "creativity": 80}
    assert strengths_by_rank(via)[:5] == (
        "spirituality",
        "creativity",
        "hope",
        "curiosity",
        "judgment",
    )
    assert lowest_strengths(via, 2) == ("humor", "gratitude")
    flat = {name: 70 for name in VIA_ORDER}
    assert strengths_by_rank(flat) == VIA_ORDER
    assert lowest_strengths(flat, 2) == ("spirituality", "humor")
    assert lowest_strengths(flat | {"humor": 10, "love": 10}, 3) == (
        "humor",
        "love",
        "spirituality",
    )


def test_virtues_rank_by_count_then_total_then_order() -> None:
    knowledge = load_knowledge("en")
    via = {name: 50 for name in VIA_ORDER}
    scores = Scores(riasec={}, ocean={}, via=via, industry={})
    # Two temperance strengths beat one wisdom strength with a higher score.
    assert (
        rank_virtues(("creativity", "prudence", "humility"), scores, knowledge)[0] == "temperance"
    )
    # Equal count: the higher total wins.
    high = Scores(riasec={}, ocean={}, via=via | {"kindness": 90}, industry={})
    assert rank_virtues(("creativity", "kindness"), high, knowledge) == ("humanity", "wisdom")
    # Equal count and total: VIA order (wisdom before humanity before transcendence).
    order = rank_virtues(("hope", "kindness", "creativity"), scores, knowledge)
    assert order == ("wisdom", "humanity", "transcendence")


@pytest.mark.parametrize(
    ("score", "expected"),
    [(0, "low"), (39, "low"), (40, "moderate"), (60, "moderate"), (61, "high"), (100, "high")],
)
def test_big_five_bands(score: int, expected: str) -> None:
    assert band(score, load_knowledge("en")) == expected


def test_trait_distinctiveness_ties_keep_ocean_order() -> None:
    ocean = {
        "openness": 50,
        "conscientiousness": 20,
        "extraversion": 80,
        "agreeableness": 50,
        "neuroticism": 80,
    }
    assert traits_by_distinctiveness(ocean)[:3] == (
        "conscientiousness",
        "extraversion",
        "neuroticism",
    )


def test_flat_profile_uses_the_documented_tie_breaks() -> None:
    profile = analyze(TALENT_MAPPING, make_data(), None, "en")
    assert profile.archetype == "The Hands-On Problem Solver"  # R then I
    assert profile.strengths[0].startswith("Creativity (50)")
    assert profile.risk_tolerance == "moderate"
    indonesian = analyze(TALENT_MAPPING, make_data(), None, "id")
    assert indonesian.archetype == "Pemecah Masalah yang Praktis"
    assert indonesian.strengths[0].startswith("Kreativitas (50)")
    assert indonesian.risk_tolerance == "moderate"


# --- determinism and sensitivity --------------------------------------------------------------


def test_same_input_same_profile() -> None:
    first = analyze(TALENT_MAPPING, HELPER, None)
    second = TalentMappingAnalyzer().analyze(
        make_data(
            riasec={
                "social": 92,
                "artistic": 70,
                "enterprising": 65,
                "realistic": 20,
                "conventional": 25,
            },
            ocean={"agreeableness": 90, "extraversion": 75, "conscientiousness": 55},
            via={"kindness": 95, "love": 90, "social_intelligence": 88, "teamwork": 85},
        ),
        None,
    )
    assert first == second
    assert first.SerializeToString(deterministic=True) == second.SerializeToString(
        deterministic=True
    )


def test_helper_and_technician_get_different_careers() -> None:
    helper = analyze(TALENT_MAPPING, HELPER, None, "en")
    technician = analyze(TALENT_MAPPING, TECHNICIAN, None, "en")
    helper_careers = {c.career_name for c in helper.career_recommendation}
    technician_careers = {c.career_name for c in technician.career_recommendation}
    assert helper_careers.isdisjoint(technician_careers)
    assert helper.archetype != technician.archetype
    assert {"Counsellor", "Teacher"} & helper_careers
    assert {"Mechanical Engineer", "Electrical Technician"} & technician_careers
    assert helper.work_environment != technician.work_environment
    assert helper.strengths != technician.strengths


def test_industry_scores_rerank_careers() -> None:
    analyst = {"investigative": 90, "conventional": 70, "social": 65}
    plain = analyze(TALENT_MAPPING, make_data(riasec=analyst), None, "en")
    health = analyze(
        TALENT_MAPPING, make_data(riasec=analyst, industry={"kesehatan": 100}), None, "en"
    )
    finance = analyze(
        TALENT_MAPPING, make_data(riasec=analyst, industry={"keuangan": 100}), None, "en"
    )
    knowledge = load_knowledge("en")
    industries = {c.name: c.industries for c in knowledge.careers}
    assert "kesehatan" in industries[health.career_recommendation[0].career_name]
    assert "keuangan" in industries[finance.career_recommendation[0].career_name]
    assert [c.career_name for c in health.career_recommendation] != [
        c.career_name for c in plain.career_recommendation
    ]
    assert "kesehatan 100" in health.career_recommendation[0].justification


def test_justifications_cite_the_scores() -> None:
    profile = analyze(TALENT_MAPPING, HELPER, None, "en")
    assert "Social 92" in profile.short_summary
    assert "Kindness 95" in profile.strength_summary
    assert "high Agreeableness 90" in profile.weakness_summary
    for career in profile.career_recommendation:
        assert "Social 92" in career.justification or "Artistic 70" in career.justification


# --- JSON form --------------------------------------------------------------------------------

PROFILE_KEYS = {
    "archetype",
    "coreMotivators",
    "learningStyle",
    "shortSummary",
    "strengthSummary",
    "strengths",
    "weaknessSummary",
    "weaknesses",
    "careerRecommendation",
    "insights",
    "skillSuggestion",
    "possiblePitfalls",
    "riskTolerance",
    "workEnvironment",
    "roleModel",
    "developmentActivities",
    "analyzer",
}
CAREER_KEYS = {"careerName", "justification", "relatedMajors", "careerProspect"}
PROSPECT_KEYS = {
    "jobAvailability",
    "salaryPotential",
    "careerProgression",
    "industryGrowth",
    "skillDevelopment",
    "aiOvertake",
}


def test_json_form_has_the_original_field_names() -> None:
    document = json_format.MessageToDict(analyze(TALENT_MAPPING, HELPER, None, "en"))
    assert set(document) == PROFILE_KEYS
    for career in document["careerRecommendation"]:
        assert set(career) == CAREER_KEYS
        assert set(career["careerProspect"]) == PROSPECT_KEYS
    for model in document["roleModel"]:
        assert set(model) == {"name", "title"}
    activities = document["developmentActivities"]
    assert set(activities) == {"extracurricular", "bookRecommendations"}
    for book in activities["bookRecommendations"]:
        assert set(book) == {"title", "author", "reason"}
    assert document["analyzer"] == {"name": "talent-mapping", "version": "2", "locale": "en"}
    assert json_format.ParseDict(document, assessment_pb2.PersonaProfile()) == analyze(
        TALENT_MAPPING, HELPER, None, "en"
    )
