"""Submission files: our format or the original system's, read into a SubmitAssessmentRequest.

Accepted shapes (keys in snake_case or lowerCamelCase, interchangeably):

* ours — ``{assessment_name, assessment_data: {riasec, ocean, via_is, industry_score},
  raw_responses, request_id, locale}``, including the proto3 JSON form of SubmitAssessmentRequest;
* the original system's — the score groups at the top level: ``{assessmentName, riasec,
  ocean, viaIs, industryScore, rawResponses}``.

Raw responses are ``{type: [{question_id, value, weight?, meta?}]}`` (value a number, text
or boolean), or the proto3 JSON ``{responses: {type: {items: [...]}}}``.

The loader checks only what the request message cannot hold (wrong types, unknown score
names); the service validates the rest (missing and out-of-range scores), so its rules
live in one place.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from google.protobuf.message import Message
from google.protobuf.struct_pb2 import Struct

from assay.assessment.v1 import assessment_service_pb2 as pb
from assay.common.v1 import assessment_pb2
from assaylib.errors import FieldViolation

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
GROUPS = ("riasec", "ocean", "via_is", "industry_score")
VALUE_KEYS = {"number_value", "text_value", "bool_value", "value"}
ITEM_KEYS = VALUE_KEYS | {"question_id", "weight", "meta"}

_CAMEL = re.compile(r"(?<=[a-z0-9])([A-Z])")


class SubmissionFileError(Exception):
    """The file cannot be read or turned into a request; violations name the bad fields."""

    def __init__(self, message: str, violations: list[FieldViolation] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.violations = violations or []


def snake(key: str) -> str:
    """``loveOfLearning`` → ``love_of_learning``; snake_case keys are unchanged."""
    return _CAMEL.sub(r"_\1", key).lower()


def load_submission(path: Path) -> tuple[pb.SubmitAssessmentRequest, list[str]]:
    """Read a submission file; returns the request and warnings (ignored keys)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise SubmissionFileError(f"cannot read {path}: {reason}") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as err:
        raise SubmissionFileError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(document, dict):
        raise SubmissionFileError(f"{path}: expected a JSON object, got {type(document).__name__}")
    return parse_submission(document)


def parse_submission(document: dict[str, Any]) -> tuple[pb.SubmitAssessmentRequest, list[str]]:
    """Build the request from a decoded submission document (either format)."""
    top = {snake(key): value for key, value in document.items()}
    data = top.pop("assessment_data", None)
    if data is None:  # the original format: score groups at the top level
        data = {group: top.pop(group) for group in GROUPS if group in top}
    request = pb.SubmitAssessmentRequest()
    violations: list[FieldViolation] = []
    request.assessment_name = _text(top.pop("assessment_name", ""), "assessment_name", violations)
    request.request_id = _text(top.pop("request_id", ""), "request_id", violations)
    request.locale = _text(top.pop("locale", ""), "locale", violations)
    _fill_data(request.assessment_data, data, violations)
    raw = top.pop("raw_responses", None)
    if raw is not None:
        _fill_raw(request.raw_responses, raw, violations)
    if violations:
        raise SubmissionFileError("the file has fields the request cannot hold", violations)
    return request, [f"ignoring unknown key {key!r}" for key in top]


def _text(value: Any, path: str, violations: list[FieldViolation]) -> str:
    if isinstance(value, str):
        return value
    violations.append(FieldViolation(path, "must be a string"))
    return ""


def _fill_data(
    data: assessment_pb2.AssessmentData, source: Any, violations: list[FieldViolation]
) -> None:
    path = "assessment_data"
    if not isinstance(source, dict):
        violations.append(FieldViolation(path, "must be an object of score groups"))
        return
    for key, scores in source.items():
        group = snake(key)
        if group not in GROUPS:
            violations.append(FieldViolation(f"{path}.{key}", f"unknown score group {key!r}"))
            continue
        _fill_group(getattr(data, group), scores, f"{path}.{group}", violations)


def _fill_group(group: Message, source: Any, path: str, violations: list[FieldViolation]) -> None:
    if not isinstance(source, dict):
        violations.append(FieldViolation(path, "must be an object of scores"))
        return
    known = {field.name for field in group.DESCRIPTOR.fields}
    for key, value in source.items():
        name = snake(key)
        if name not in known:
            violations.append(FieldViolation(f"{path}.{key}", f"unknown score {key!r}"))
        elif value is None:
            continue  # absent: the service reports a required one as missing
        elif not _is_integer(value) or not INT32_MIN <= value <= INT32_MAX:
            violations.append(
                FieldViolation(f"{path}.{name}", f"must be an integer 0–100, got {value!r}")
            )
        else:
            setattr(group, name, int(value))


def _is_integer(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and value.is_integer())


def _fill_raw(
    raw: assessment_pb2.RawResponses, source: Any, violations: list[FieldViolation]
) -> None:
    path = "raw_responses"
    if not isinstance(source, dict):
        violations.append(FieldViolation(path, "must be an object of response lists"))
        return
    if set(source) == {"responses"} and isinstance(source["responses"], dict):
        source = source["responses"]  # the proto3 JSON form
    for kind, items in source.items():
        if isinstance(items, dict) and set(items) <= {"items"}:
            items = items.get("items", [])
        item_path = f"{path}.responses[{kind}]"
        if not isinstance(items, list):
            violations.append(FieldViolation(item_path, "must be a list of answers"))
            continue
        answers = raw.responses[str(kind)]
        for index, item in enumerate(items):
            _fill_item(answers.items.add(), item, f"{item_path}.items[{index}]", violations)


def _fill_item(
    item: assessment_pb2.RawResponseItem, source: Any, path: str, violations: list[FieldViolation]
) -> None:
    if not isinstance(source, dict):
        violations.append(FieldViolation(path, "must be an object {question_id, value}"))
        return
    fields = {snake(key): value for key, value in source.items()}
    for key in sorted(set(fields) - ITEM_KEYS):
        violations.append(FieldViolation(f"{path}.{key}", f"unknown answer field {key!r}"))
    item.question_id = _text(fields.get("question_id", ""), f"{path}.question_id", violations)
    for key in sorted(set(fields) & VALUE_KEYS):
        _set_value(item, fields[key], f"{path}.{key}", violations)
    weight = fields.get("weight")
    if weight is not None:
        if isinstance(weight, bool) or not isinstance(weight, int | float):
            violations.append(FieldViolation(f"{path}.weight", "must be a number"))
        else:
            item.weight = float(weight)
    meta = fields.get("meta")
    if meta is not None:
        _set_meta(item.meta, meta, f"{path}.meta", violations)


def _set_value(
    item: assessment_pb2.RawResponseItem, value: Any, path: str, violations: list[FieldViolation]
) -> None:
    if isinstance(value, bool):
        item.bool_value = value
    elif isinstance(value, int | float):
        item.number_value = float(value)
    elif isinstance(value, str):
        item.text_value = value
    elif value is not None:
        violations.append(FieldViolation(path, "must be a number, a text or a boolean"))


def _set_meta(meta: Struct, value: Any, path: str, violations: list[FieldViolation]) -> None:
    if not isinstance(value, dict):
        violations.append(FieldViolation(path, "must be an object"))
        return
    try:
        meta.update(value)
    except (ValueError, TypeError) as err:
        violations.append(FieldViolation(path, f"cannot be stored: {err}"))
