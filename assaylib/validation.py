"""Validation of submissions and identifiers, shared by the assessment service (which
validates before anything is written) and the archive (which never trusts its caller).

Every check returns field violations with the request's field paths, such as
`assessment_data.riasec.realistic`, so a caller learns every bad field at once.
"""

from __future__ import annotations

import functools
import math
import uuid
from typing import Literal

from google.protobuf import struct_pb2
from google.protobuf.descriptor import Descriptor
from google.protobuf.message import Message

from assay.common.v1 import assessment_pb2
from assaylib.errors import FieldViolation, InvalidArgument
from assaylib.jobs import ASSESSMENT_NAMES, CUSTOM, IQ_TEST, LOCALES

MAX_SUBMISSION_BYTES = 1024 * 1024
MAX_TEXT_CHARS = 1000
MAX_ID_CHARS = 200
SCORE_MIN, SCORE_MAX = 0, 100
MAX_PAGE_SIZE = 1000

# Talent Mapping needs these three score groups, every score present.
REQUIRED_GROUPS: tuple[Literal["riasec", "ocean", "via_is"], ...] = ("riasec", "ocean", "via_is")


def score_fields(message: Message) -> list[str]:
    """The score field names of a score group message, in declaration order."""
    return list(_field_names(message.DESCRIPTOR))


@functools.cache
def _field_names(descriptor: Descriptor) -> tuple[str, ...]:
    # Read once per message type: walking a descriptor's fields builds a wrapper per field.
    return tuple(field.name for field in descriptor.fields)


def _check_group(group: Message, path: str, *, required: bool) -> list[FieldViolation]:
    present = group.ListFields()
    if (not required or len(present) == len(_field_names(group.DESCRIPTOR))) and all(
        SCORE_MIN <= value <= SCORE_MAX for _, value in present
    ):
        return []  # the usual case, said at once: every score needed is there, all in range
    violations = []
    for name in _field_names(group.DESCRIPTOR):
        if not group.HasField(name):
            if required:
                violations.append(FieldViolation(f"{path}.{name}", "required score is missing"))
            continue
        value = getattr(group, name)
        if not SCORE_MIN <= value <= SCORE_MAX:
            violations.append(
                FieldViolation(f"{path}.{name}", f"must be an integer 0–100, got {value}")
            )
    return violations


def assessment_data_violations(
    data: assessment_pb2.AssessmentData, assessment_name: str, path: str = "assessment_data"
) -> list[FieldViolation]:
    """Violations in the scores: every required score present, every score 0–100."""
    # An unknown name is reported on its own; its scores are still checked as Talent Mapping.
    required = assessment_name not in (IQ_TEST, CUSTOM)
    violations = []
    for group_name in REQUIRED_GROUPS:
        if data.HasField(group_name):
            group = getattr(data, group_name)
            violations += _check_group(group, f"{path}.{group_name}", required=required)
        elif required:
            violations.append(FieldViolation(f"{path}.{group_name}", "required for Talent Mapping"))
    if data.HasField("industry_score"):
        violations += _check_group(data.industry_score, f"{path}.industry_score", required=False)
    return violations


NUL = "\x00"
NUL_VIOLATION = "must not contain the NUL character (U+0000)"


def text_violations(text: str, path: str) -> list[FieldViolation]:
    """A violation when text holds U+0000, which PostgreSQL cannot store in text or jsonb."""
    return [FieldViolation(path, NUL_VIOLATION)] if NUL in text else []


def struct_violations(struct: struct_pb2.Struct, path: str) -> list[FieldViolation]:
    """Violations anywhere inside a free-form Struct: NUL in a key or a string, or a number
    that JSON cannot hold (NaN, ±Infinity). Walked without recursion, so depth costs nothing
    but time (the protobuf decoder already bounds it)."""
    violations: list[FieldViolation] = []
    pending: list[tuple[struct_pb2.Struct | struct_pb2.ListValue, str]] = [(struct, path)]
    while pending:
        container, where = pending.pop()
        if isinstance(container, struct_pb2.Struct):
            entries = [(f"{where}.{key}", key, value) for key, value in container.fields.items()]
        else:
            entries = [(f"{where}[{i}]", "", value) for i, value in enumerate(container.values)]
        for field, key, value in entries:
            violations += text_violations(key, field)
            kind = value.WhichOneof("kind")
            if kind == "string_value":
                violations += text_violations(value.string_value, field)
            elif kind == "number_value" and not math.isfinite(value.number_value):
                violations.append(FieldViolation(field, "must be a finite number"))
            elif kind == "struct_value":
                pending.append((value.struct_value, field))
            elif kind == "list_value":
                pending.append((value.list_value, field))
    return violations


def _item_violations(item: assessment_pb2.RawResponseItem, path: str) -> list[FieldViolation]:
    violations = []
    if not item.question_id:
        violations.append(FieldViolation(f"{path}.question_id", "required"))
    violations += text_violations(item.question_id, f"{path}.question_id")
    kind = item.WhichOneof("value")
    if kind is None:
        violations.append(FieldViolation(f"{path}.value", "required: a number, text or bool"))
    elif kind == "number_value" and not (
        math.isfinite(item.number_value) and SCORE_MIN <= item.number_value <= SCORE_MAX
    ):
        violations.append(FieldViolation(f"{path}.number_value", "must be a number 0–100"))
    elif kind == "text_value" and len(item.text_value) > MAX_TEXT_CHARS:
        violations.append(
            FieldViolation(f"{path}.text_value", f"must be at most {MAX_TEXT_CHARS} characters")
        )
    elif kind == "text_value":
        violations += text_violations(item.text_value, f"{path}.text_value")
    if item.HasField("weight") and not math.isfinite(item.weight):
        violations.append(FieldViolation(f"{path}.weight", "must be a finite number"))
    if item.HasField("meta"):
        violations += struct_violations(item.meta, f"{path}.meta")
    return violations


def raw_responses_violations(
    raw: assessment_pb2.RawResponses, path: str = "raw_responses"
) -> list[FieldViolation]:
    """Violations in the raw answers: each item has a question id and a valid value, and no
    text anywhere holds NUL."""
    violations = []
    for key in sorted(raw.responses):
        if not key.strip():
            violations.append(FieldViolation(f"{path}.responses", "type keys must be non-empty"))
        violations += text_violations(key, f"{path}.responses")
        for index, item in enumerate(raw.responses[key].items):
            violations += _item_violations(item, f"{path}.responses[{key}].items[{index}]")
    return violations


def message_text_violations(message: Message, path: str) -> list[FieldViolation]:
    """Violations for every string anywhere in ``message`` that holds NUL (repeated fields,
    maps and nested messages included): for messages stored as JSON, and the profile (stored
    as protobuf since migration 0009, its strings still free of NUL as the contract had them)."""
    violations: list[FieldViolation] = []
    for field, value in message.ListFields():
        where = f"{path}.{field.name}" if path else field.name
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            for key, entry in value.items():
                violations += text_violations(str(key), where)
                violations += _value_text_violations(entry, f"{where}[{key}]")
        elif field.is_repeated:
            for index, entry in enumerate(value):
                violations += _value_text_violations(entry, f"{where}[{index}]")
        else:
            violations += _value_text_violations(value, where)
    return violations


def _value_text_violations(value: object, path: str) -> list[FieldViolation]:
    if isinstance(value, struct_pb2.Struct):
        return struct_violations(value, path)
    if isinstance(value, Message):
        return message_text_violations(value, path)
    if isinstance(value, str):
        return text_violations(value, path)
    return []


def assessment_name_violations(name: str, path: str = "assessment_name") -> list[FieldViolation]:
    """A violation when the name is not one of the known assessments (empty means default)."""
    if name and name not in ASSESSMENT_NAMES:
        known = ", ".join(repr(n) for n in ASSESSMENT_NAMES)
        return [FieldViolation(path, f"unknown assessment {name!r}; known: {known}")]
    return []


def locale_violations(locale: str, path: str = "locale") -> list[FieldViolation]:
    """A violation unless the locale is one a profile can be written in (empty means the
    default). Tags are matched exactly: "id" and "en", not "ID" or "en-US"."""
    if locale and locale not in LOCALES:
        known = ", ".join(repr(tag) for tag in LOCALES)
        return [FieldViolation(path, f"unknown locale {locale!r}; known: {known}")]
    return []


def submission_violations(
    assessment_name: str,
    data: assessment_pb2.AssessmentData,
    raw: assessment_pb2.RawResponses,
    size_bytes: int,
) -> list[FieldViolation]:
    """Every violation of a submission: name, scores, raw answers and the 1 MiB limit."""
    violations = assessment_name_violations(assessment_name)
    if size_bytes > MAX_SUBMISSION_BYTES:
        violations.append(
            FieldViolation("assessment_data", f"submission is {size_bytes} bytes; limit 1 MiB")
        )
        return violations
    violations += assessment_data_violations(data, assessment_name)
    violations += raw_responses_violations(raw)
    return violations


def uuid_violations(value: str, path: str, *, required: bool = True) -> list[FieldViolation]:
    """A violation unless value is a UUID (or empty and optional)."""
    if not value:
        return [FieldViolation(path, "required")] if required else []
    try:
        uuid.UUID(value)
    except ValueError:
        return [FieldViolation(path, "must be a UUID")]
    return []


def id_violations(value: str, path: str, *, required: bool = True) -> list[FieldViolation]:
    """A violation unless value is a plausible identifier (user id, worker id, request id)."""
    if not value:
        return [FieldViolation(path, "required")] if required else []
    if len(value) > MAX_ID_CHARS or not value.isprintable():
        return [FieldViolation(path, f"must be printable, at most {MAX_ID_CHARS} characters")]
    return []


def page_size_violations(page_size: int, path: str = "page_size") -> list[FieldViolation]:
    """A violation unless 0 <= page_size <= MAX_PAGE_SIZE (0 means the default)."""
    if not 0 <= page_size <= MAX_PAGE_SIZE:
        return [FieldViolation(path, f"must be between 0 and {MAX_PAGE_SIZE}")]
    return []


def require_valid(violations: list[FieldViolation]) -> None:
    """Raise InvalidArgument listing every violation, if there are any."""
    if violations:
        raise InvalidArgument(violations)
