"""Analyzers: turn a submission's scores into a ``PersonaProfile``.

``analyze(assessment_name, assessment_data, raw_responses, locale)`` is the one entry point; it
picks the analyzer registered for the assessment name, which writes in the locale's language.
See docs/analyzer.md.
"""

from __future__ import annotations

from worker.analyzers.errors import (
    AnalysisError,
    InvalidAssessmentData,
    UnsupportedAssessmentType,
    UnsupportedLocale,
)
from worker.analyzers.registry import (
    REGISTRY,
    Analyzer,
    AnalyzerRegistry,
    analyze,
)
from worker.analyzers.talent_mapping import TalentMappingAnalyzer

__all__ = [
    "REGISTRY",
    "AnalysisError",
    "Analyzer",
    "AnalyzerRegistry",
    "InvalidAssessmentData",
    "TalentMappingAnalyzer",
    "UnsupportedAssessmentType",
    "UnsupportedLocale",
    "analyze",
]
