"""Reading scores out of ``AssessmentData`` and the ordering rules applied to them.

Tie-breaks are fixed so that the same scores always give the same profile: equal RIASEC scores
keep Holland's order R, I, A, S, E, C; equal VIA scores keep the VIA classification order (the
field order of ``ViaIs``, creativity first, spirituality last), and the lowest strengths are the
bottom of that same ranking; equal Big Five distances keep
O, C, E, A, N.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from google.protobuf.message import Message

from assay.common.v1 import assessment_pb2
from worker.analyzers.errors import InvalidAssessmentData

RIASEC_ORDER: tuple[str, ...] = tuple(f.name for f in assessment_pb2.Riasec.DESCRIPTOR.fields)
OCEAN_ORDER: tuple[str, ...] = tuple(f.name for f in assessment_pb2.Ocean.DESCRIPTOR.fields)
VIA_ORDER: tuple[str, ...] = tuple(f.name for f in assessment_pb2.ViaIs.DESCRIPTOR.fields)
INDUSTRY_ORDER: tuple[str, ...] = tuple(
    f.name for f in assessment_pb2.IndustryScore.DESCRIPTOR.fields
)

MIN_SCORE = 0
MAX_SCORE = 100


@dataclass(frozen=True, slots=True)
class Scores:
    """The scores of one assessment, keyed by proto field name; ``industry`` holds only those
    present."""

    riasec: Mapping[str, int]
    ocean: Mapping[str, int]
    via: Mapping[str, int]
    industry: Mapping[str, int]


def _present(message: Message) -> dict[str, int]:
    # ListFields reports exactly the optional scores that were set, 0 included.
    return {field.name: value for field, value in message.ListFields()}


def _required(group: str, message: Message, order: tuple[str, ...], problems: list[str]) -> None:
    present = _present(message)
    problems.extend(f"{group}.{name} is missing" for name in order if name not in present)


def _out_of_range(group: str, values: Mapping[str, int], problems: list[str]) -> None:
    problems.extend(
        f"{group}.{name} is {value}, outside {MIN_SCORE}–{MAX_SCORE}"
        for name, value in values.items()
        if not MIN_SCORE <= value <= MAX_SCORE
    )


def extract_scores(data: assessment_pb2.AssessmentData) -> Scores:
    """Read every score; raise ``InvalidAssessmentData`` naming each missing or bad one."""
    problems: list[str] = []
    groups: dict[str, tuple[Message, tuple[str, ...]]] = {
        "riasec": (data.riasec, RIASEC_ORDER),
        "ocean": (data.ocean, OCEAN_ORDER),
        "via_is": (data.via_is, VIA_ORDER),
    }
    for group, (message, order) in groups.items():
        _required(group, message, order, problems)
    scores = Scores(
        riasec=_present(data.riasec),
        ocean=_present(data.ocean),
        via=_present(data.via_is),
        industry=_present(data.industry_score),
    )
    for group, values in (
        ("riasec", scores.riasec),
        ("ocean", scores.ocean),
        ("via_is", scores.via),
        ("industry_score", scores.industry),
    ):
        _out_of_range(group, values, problems)
    if problems:
        raise InvalidAssessmentData(problems)
    return scores


def holland_code(riasec: Mapping[str, int]) -> tuple[str, str, str]:
    """The three highest RIASEC types, highest first; ties keep the order R, I, A, S, E, C."""
    first, second, third = sorted(RIASEC_ORDER, key=lambda name: -riasec[name])[:3]
    return first, second, third


def strengths_by_rank(via: Mapping[str, int]) -> tuple[str, ...]:
    """All 24 VIA strengths, highest first; ties keep the VIA classification order."""
    return tuple(sorted(VIA_ORDER, key=lambda name: -via[name]))


def lowest_strengths(via: Mapping[str, int], count: int) -> tuple[str, ...]:
    """The bottom ``count`` of the same ranking, lowest first: among equal scores the strength
    later in the classification order counts as lower, so these never overlap the top ones."""
    return strengths_by_rank(via)[::-1][:count]


def traits_by_distinctiveness(ocean: Mapping[str, int]) -> tuple[str, ...]:
    """Big Five traits ordered by distance from the midpoint 50; ties keep O, C, E, A, N."""
    return tuple(sorted(OCEAN_ORDER, key=lambda name: -abs(ocean[name] - 50)))
