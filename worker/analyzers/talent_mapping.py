"""The built-in ``talent-mapping`` analyzer: a deterministic persona engine over RIASEC, Big
Five and VIA scores, driven by the knowledge tables in ``tables/``."""

from __future__ import annotations

from collections.abc import Mapping

from assay.common.v1 import assessment_pb2
from assaylib.jobs import DEFAULT_LOCALE
from worker.analyzers import challenges, character, guidance, personality
from worker.analyzers.careers import career_messages, recommend_careers
from worker.analyzers.errors import UnsupportedLocale
from worker.analyzers.knowledge import LOCALES, Knowledge, load_knowledge
from worker.analyzers.reading import Reading, read_scores
from worker.analyzers.scores import extract_scores

ANALYZER_NAME = "talent-mapping"
ANALYZER_VERSION = "2"
"""2: profiles in Bahasa Indonesia or English (the locale); English text unchanged from 1."""


def archetype(reading: Reading) -> str:
    """The archetype named by the first two letters of the Holland code."""
    return reading.knowledge.archetypes[reading.letters[:2]]


def short_summary(reading: Reading) -> str:
    """Archetype, Holland code with scores, two top strengths and the most distinctive trait."""
    knowledge = reading.knowledge
    return knowledge.say(
        "short_summary",
        archetype=archetype(reading),
        letters=reading.letters,
        code=", ".join(reading.cite_type(key) for key in reading.code),
        top=knowledge.say("and").join(reading.cite_strength(k) for k in reading.signature[:2]),
        trait=reading.cite_trait(reading.distinctive_traits[0]),
    )


class TalentMappingAnalyzer:
    """Builds a ``PersonaProfile`` from RIASEC, Big Five and VIA scores (industry optional),
    in the language of the locale's knowledge tables: one engine, a set of tables per locale."""

    name = ANALYZER_NAME
    version = ANALYZER_VERSION

    def __init__(self, knowledge: Mapping[str, Knowledge] | None = None) -> None:
        self._knowledge = (
            dict(knowledge)
            if knowledge is not None
            else {locale: load_knowledge(locale) for locale in LOCALES}
        )

    @property
    def locales(self) -> tuple[str, ...]:
        """The locales this analyzer writes."""
        return tuple(self._knowledge)

    def analyze(
        self,
        assessment_data: assessment_pb2.AssessmentData,
        raw_responses: assessment_pb2.RawResponses | None,
        locale: str = DEFAULT_LOCALE,
    ) -> assessment_pb2.PersonaProfile:
        """The profile of ``assessment_data`` written in ``locale``; raw responses are not used
        by this version. ``UnsupportedLocale`` for a locale without tables."""
        knowledge = self._knowledge.get(locale)
        if knowledge is None:
            raise UnsupportedLocale(locale)
        reading = read_scores(extract_scores(assessment_data), knowledge)
        careers = recommend_careers(reading.scores, reading.code, knowledge)
        return assessment_pb2.PersonaProfile(
            archetype=archetype(reading),
            core_motivators=character.core_motivators(reading),
            learning_style=personality.learning_style(reading),
            short_summary=short_summary(reading),
            strength_summary=character.strength_summary(reading),
            strengths=character.strengths(reading),
            weakness_summary=challenges.weakness_summary(reading),
            weaknesses=challenges.weaknesses(reading),
            career_recommendation=career_messages(
                careers, reading.scores, knowledge, reading.letters
            ),
            insights=guidance.insights(reading),
            skill_suggestion=guidance.skill_suggestions(reading),
            possible_pitfalls=challenges.possible_pitfalls(reading),
            risk_tolerance=personality.risk_tolerance(reading),
            work_environment=personality.work_environment(reading),
            role_model=guidance.role_models(reading),
            development_activities=guidance.development_activities(reading),
            analyzer=assessment_pb2.AnalyzerInfo(
                name=self.name, version=self.version, locale=locale
            ),
        )
