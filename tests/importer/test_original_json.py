"""The original's profiles read field by field: exact when the profile's proto3 JSON is the
original object, refused (the general road then) when anything would be lost or changed."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from google.protobuf import json_format

from archive_svc.import_rows import Rejected, stored_profile
from archive_svc.original_json import read_exact, to_document
from assay.common.v1 import assessment_pb2
from bench import original_source


def sample() -> dict[str, Any]:
    return original_source.persona_profile(random.Random(5))


def test_an_original_profile_reads_exactly() -> None:
    document = sample()
    profile = assessment_pb2.PersonaProfile()
    assert read_exact(document, profile)
    assert json_format.MessageToDict(profile) == document == to_document(profile)


@pytest.mark.parametrize(
    "change",
    [
        {"careerRecommendations": []},  # a key no field has (an older profile's)
        {"archetype": ""},  # proto3 JSON leaves empty strings out
        {"strengths": []},
        {"strengths": ["a", 3]},
        {"riskTolerance": 5},
        {"roleModel": [{"name": "x", "title": "y", "born": "1900"}]},
    ],
)
def test_anything_a_profile_cannot_hold_exactly_is_not_exact(change: dict[str, Any]) -> None:
    document = {**sample(), **change}
    assert not read_exact(document, assessment_pb2.PersonaProfile())


def test_a_profile_with_more_than_a_profile_holds_is_kept_whole() -> None:
    document = {**sample(), "riasec": {"realistic": 40}}
    stored, profile = stored_profile(json.dumps(document).encode())
    assert stored.startswith(b"{") and json.loads(stored) == document
    assert profile.archetype == document["archetype"]


@pytest.mark.parametrize("text", [b'"a string"', b"{archetype", b"[1, 2]", b'{"strengths": 5}'])
def test_a_profile_that_is_no_profile_is_rejected(text: bytes) -> None:
    with pytest.raises(Rejected):
        stored_profile(text)
