"""Errors raised by analyzers; every one carries the error code a failed job records."""

from __future__ import annotations

from typing import ClassVar


class AnalysisError(Exception):
    """Root of every analyzer error.

    ``error_code`` is the code a failed job records; ``permanent`` tells the worker whether a
    retry could ever succeed (a deterministic analyzer fails the same way every time).
    """

    error_code: ClassVar[str] = "ANALYSIS_FAILED"
    permanent: ClassVar[bool] = False


class UnsupportedAssessmentType(AnalysisError):
    """No analyzer is registered for the submitted assessment name."""

    error_code: ClassVar[str] = "UNSUPPORTED_ASSESSMENT_TYPE"
    permanent: ClassVar[bool] = True

    def __init__(self, assessment_name: str) -> None:
        super().__init__(f"no analyzer for assessment type {assessment_name!r}")
        self.assessment_name = assessment_name


class UnsupportedLocale(AnalysisError):
    """The job asks for a language the analyzer has no tables for."""

    error_code: ClassVar[str] = "UNSUPPORTED_LOCALE"
    permanent: ClassVar[bool] = True

    def __init__(self, locale: str) -> None:
        super().__init__(f"no profile texts for locale {locale!r}")
        self.locale = locale


class InvalidAssessmentData(AnalysisError):
    """A score the analyzer needs is missing or outside 0–100."""

    error_code: ClassVar[str] = "INVALID_ASSESSMENT_DATA"
    permanent: ClassVar[bool] = True

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid assessment data: " + "; ".join(problems))
        self.problems = tuple(problems)
