"""The analyzer interface and the registry that maps an assessment name to its analyzer."""

from __future__ import annotations

from typing import Protocol

from assay.common.v1 import assessment_pb2
from assaylib.jobs import DEFAULT_ASSESSMENT, DEFAULT_LOCALE, TALENT_MAPPING
from worker.analyzers.errors import UnsupportedAssessmentType
from worker.analyzers.talent_mapping import TalentMappingAnalyzer


class Analyzer(Protocol):
    """Turns one assessment's data into a persona profile; must be pure and deterministic."""

    @property
    def name(self) -> str:
        """The analyzer's name, recorded in ``PersonaProfile.analyzer``."""
        ...

    @property
    def version(self) -> str:
        """The analyzer's version, recorded in ``PersonaProfile.analyzer``."""
        ...

    def analyze(
        self,
        assessment_data: assessment_pb2.AssessmentData,
        raw_responses: assessment_pb2.RawResponses | None,
        locale: str = DEFAULT_LOCALE,
    ) -> assessment_pb2.PersonaProfile:
        """The profile of ``assessment_data``, written in ``locale``."""
        ...


class AnalyzerRegistry:
    """Analyzers keyed by assessment name; the empty name means the default assessment."""

    def __init__(self) -> None:
        self._analyzers: dict[str, Analyzer] = {}

    def register(self, assessment_name: str, analyzer: Analyzer) -> None:
        """Serve ``assessment_name`` with ``analyzer``, replacing any earlier one."""
        self._analyzers[assessment_name or DEFAULT_ASSESSMENT] = analyzer

    def get(self, assessment_name: str) -> Analyzer:
        """The analyzer for ``assessment_name``; ``UnsupportedAssessmentType`` if none."""
        name = assessment_name or DEFAULT_ASSESSMENT
        analyzer = self._analyzers.get(name)
        if analyzer is None:
            raise UnsupportedAssessmentType(name)
        return analyzer

    def names(self) -> tuple[str, ...]:
        """The assessment names that have an analyzer, in registration order."""
        return tuple(self._analyzers)


def default_registry() -> AnalyzerRegistry:
    """A registry with the built-in analyzers: talent mapping only, for now."""
    registry = AnalyzerRegistry()
    registry.register(TALENT_MAPPING, TalentMappingAnalyzer())
    return registry


REGISTRY = default_registry()
"""The process-wide registry ``analyze`` uses."""


def analyze(
    assessment_name: str,
    assessment_data: assessment_pb2.AssessmentData,
    raw_responses: assessment_pb2.RawResponses | None,
    locale: str = DEFAULT_LOCALE,
) -> assessment_pb2.PersonaProfile:
    """Analyze one submission with the analyzer registered for its assessment name, writing
    the profile in ``locale`` ("id" or "en").

    Raises ``UnsupportedAssessmentType`` for a name without an analyzer,
    ``UnsupportedLocale`` for a locale without tables and ``InvalidAssessmentData`` when a
    required score is missing or out of range; all are permanent subclasses of
    ``AnalysisError``.
    """
    return REGISTRY.get(assessment_name).analyze(assessment_data, raw_responses, locale)
