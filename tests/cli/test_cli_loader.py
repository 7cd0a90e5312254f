"""The submission loader: our format, the original system's, proto3 JSON, and the mistakes
it reports itself (the service validates scores)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from google.protobuf.json_format import MessageToDict

from assay_cli.loader import SubmissionFileError, load_submission, parse_submission
from assaylib.validation import submission_violations
from tests.archive.helpers import talent_data
from tests.cli.conftest import EXAMPLES

VALID = ["talent-mapping", "teacher-social", "engineer-original-format", "entrepreneur-proto-json"]


def violations_of(name: str) -> list[str]:
    request, warnings = load_submission(EXAMPLES / f"{name}.json")
    assert warnings == []
    found = submission_violations(
        request.assessment_name,
        request.assessment_data,
        request.raw_responses,
        request.ByteSize(),
    )
    return [f"{v.field}: {v.description}" for v in found]


@pytest.mark.parametrize("name", VALID)
def test_examples_are_valid(name: str) -> None:
    assert violations_of(name) == []


def test_invalid_example_has_a_missing_and_an_out_of_range_score() -> None:
    assert violations_of("invalid") == [
        "assessment_data.riasec.conventional: required score is missing",
        "assessment_data.ocean.extraversion: must be an integer 0–100, got 144",
    ]


def test_examples_are_distinct_profiles() -> None:
    scores = {
        name: load_submission(EXAMPLES / f"{name}.json")[0].assessment_data.SerializeToString()
        for name in VALID
    }
    assert len(set(scores.values())) == len(VALID)


def test_original_format_equals_ours() -> None:
    data = talent_data(40)
    ours = {"assessment_data": MessageToDict(data, preserving_proto_field_name=True)}
    original = MessageToDict(data)  # camelCase, groups at the top level
    original["assessmentName"] = "AI-Driven Talent Mapping"
    from_ours, _ = parse_submission(ours)
    from_original, _ = parse_submission(original)
    assert from_ours.assessment_data == from_original.assessment_data == data
    assert from_original.assessment_name == "AI-Driven Talent Mapping"


def test_raw_responses_in_every_shape() -> None:
    request, _ = parse_submission(
        {
            "rawResponses": {
                "riasec": [{"questionId": "R1", "value": 4, "weight": 2}],
                "open": [
                    {"question_id": "why", "value": "because"},
                    {"question_id": "ok", "value": True},
                ],
                "proto": {"items": [{"questionId": "P", "numberValue": 7, "meta": {"k": "v"}}]},
            }
        }
    )
    responses = request.raw_responses.responses
    first = responses["riasec"].items[0]
    assert (first.question_id, first.number_value, first.weight) == ("R1", 4.0, 2.0)
    assert responses["open"].items[0].text_value == "because"
    assert responses["open"].items[1].WhichOneof("value") == "bool_value"
    assert responses["proto"].items[0].meta["k"] == "v"
    wrapped, _ = parse_submission({"raw_responses": {"responses": {"x": {"items": []}}}})
    assert "x" in wrapped.raw_responses.responses


def test_proto3_json_of_a_request_round_trips() -> None:
    request, _ = load_submission(EXAMPLES / "talent-mapping.json")
    again, warnings = parse_submission(json.loads(json.dumps(MessageToDict(request))))
    assert again == request and warnings == []


def test_mistakes_the_request_cannot_hold() -> None:
    with pytest.raises(SubmissionFileError) as caught:
        parse_submission(
            {
                "assessment_data": {
                    "riasec": {"realistic": "high", "social": True, "artistic": 4.5, "nope": 1},
                    "industry": {},
                },
                "raw_responses": {"x": [{"question_id": 3, "value": [1]}]},
            }
        )
    fields = [v.field for v in caught.value.violations]
    assert fields == [
        "assessment_data.riasec.realistic",
        "assessment_data.riasec.social",
        "assessment_data.riasec.artistic",
        "assessment_data.riasec.nope",
        "assessment_data.industry",
        "raw_responses.responses[x].items[0].question_id",
        "raw_responses.responses[x].items[0].value",
    ]


def test_integral_floats_and_nulls_and_unknown_top_level_keys() -> None:
    request, warnings = parse_submission(
        {"riasec": {"realistic": 75.0, "social": None}, "userId": "u1"}
    )
    assert request.assessment_data.riasec.realistic == 75
    assert not request.assessment_data.riasec.HasField("social")
    assert warnings == ["ignoring unknown key 'user_id'"]


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(SubmissionFileError, match="cannot read"):
        load_submission(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_bytes(b"\xff\xfe")
    with pytest.raises(SubmissionFileError, match="cannot read"):
        load_submission(tmp_path / "bad.json")
