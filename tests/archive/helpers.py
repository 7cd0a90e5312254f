"""Builders and invariant checks shared by the archive tests."""

from __future__ import annotations

from assay.common.v1 import assessment_pb2
from assaylib.validation import score_fields


def talent_data(score: int = 60) -> assessment_pb2.AssessmentData:
    """A complete Talent Mapping payload with every score set."""
    data = assessment_pb2.AssessmentData()
    for group in ("riasec", "ocean", "via_is"):
        message = getattr(data, group)
        for index, name in enumerate(score_fields(message)):
            setattr(message, name, (score + 7 * index) % 101)
    return data
