"""Run by each build's own interpreter (``<venv>/bin/python message_probe.py write|read``): it
imports only that build's code, so a message written by one release is read by the other's.

``write OUT`` writes JSON: for each case, the bytes as that build's producer makes them (the
relay's ``encode_event`` for ASSAY_EVENTS, ``queue_message`` for ASSAY_JOBS; also the
message with every field set from its own generated code) and each set field by number.
``read IN OUT`` parses each case as that build's consumer does — the worker's
``parse_message`` and then its analyzer on the message, the notifier's ``JobEvent`` decode —
and writes what it read by field number, or the error. The comparison is
``tools.upgrade.messages``.

Standalone on purpose: no import from the tree's tools (the release's venv has none).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import sys
import uuid
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from assay.common.v1 import assessment_pb2
from assay.events.v1 import events_pb2

JOB = uuid.UUID("0b5c0b5c-0000-4000-8000-000000000001")
RESULT = uuid.UUID("0b5c0b5c-0000-4000-8000-000000000002")
AT = dt.datetime(2026, 12, 3, 8, 0, tzinfo=dt.UTC)


def fields(message: Message) -> dict[str, list[Any]]:
    """Each set field of ``message``: number → [name, its value in the JSON mapping]."""
    as_json = json_format.MessageToDict(message, preserving_proto_field_name=True)
    return {
        str(field.number): [field.name, as_json[field.name]]
        for field in message.DESCRIPTOR.fields
        if field.name in as_json
    }


def scores() -> assessment_pb2.AssessmentData:
    """A complete Talent Mapping payload (every score field of every group, 0–100)."""
    data = assessment_pb2.AssessmentData()
    for group in ("riasec", "ocean", "via_is"):
        message = getattr(data, group)
        for index, field in enumerate(message.DESCRIPTOR.fields):
            if field.type in (FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_INT64):
                setattr(message, field.name, (index * 17 + 5) % 101)
    return data


def every_field(message: Message, depth: int = 0) -> Message:
    """``message`` with every scalar, enum and nested field set (a generated-code round trip:
    what either release's code could write in these fields, the other must read)."""
    # Any: the stubs type descriptors twice over (upb's and the pure-Python ones).
    declared: list[Any] = list(message.DESCRIPTOR.fields)
    for index, field in enumerate(declared):
        repeated = field.label == FieldDescriptor.LABEL_REPEATED
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            if depth < 3 and not field.message_type.GetOptions().map_entry and not repeated:
                every_field(getattr(message, field.name), depth + 1)
            continue
        value: Any
        if field.type == FieldDescriptor.TYPE_STRING:
            value = f"{field.name}-{index}"
        elif field.type == FieldDescriptor.TYPE_BYTES:
            value = f"{field.name}".encode()
        elif field.type == FieldDescriptor.TYPE_BOOL:
            value = True
        elif field.type == FieldDescriptor.TYPE_ENUM:
            value = field.enum_type.values[-1].number
        elif field.type in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
            value = 0.5 + index
        else:
            value = 7 + index
        if repeated:
            getattr(message, field.name).append(value)
        else:
            setattr(message, field.name, value)
    return message


def event_rows() -> list[dict[str, Any]]:
    """Outbox event rows as the archive writes them (a superset of every release's columns)."""
    base = {
        "id": 4711,
        "user_id": "upgrade-user",
        "job_id": JOB,
        "result_id": RESULT,
        "assessment_name": "AI-Driven Talent Mapping",
        "occurred_at": AT,
        "error_code": None,
        "error_message": None,
        "processing_time_ms": None,
        "attempt": 1,
        "kind": "event",
        "subject": None,
        "payload": None,
    }
    return [
        {**base, "event_type": "analysis.submitted", "status": "QUEUED", "job_version": 1},
        {**base, "event_type": "analysis.started", "status": "PROCESSING", "job_version": 2},
        {
            **base,
            "event_type": "analysis.completed",
            "status": "COMPLETED",
            "job_version": 3,
            "processing_time_ms": 42,
        },
        {
            **base,
            "event_type": "analysis.failed",
            "status": "FAILED",
            "job_version": 4,
            "error_code": "STUCK",
            "error_message": "no heartbeat",
            "attempt": 2,
        },
    ]


def write(path: str) -> None:
    from archive_svc import events

    cases: list[dict[str, Any]] = []

    def case(name: str, kind: str, message: Message) -> None:
        cases.append(
            {
                "name": name,
                "kind": kind,
                "data": base64.b64encode(message.SerializeToString()).decode(),
                "fields": fields(message),
            }
        )

    for row in event_rows():
        event = events_pb2.JobEvent.FromString(events.encode_event(row))
        case(f"relay event {row['event_type']}", "event", event)
    job = {
        "job_id": JOB,
        "user_id": "upgrade-user",
        "result_id": RESULT,
        "assessment_name": "AI-Driven Talent Mapping",
        "occurred_at": AT,
        "locale": "en",
    }
    case("relay queue message", "job", events.queue_message(job, scores(), None, 1))
    case(
        "relay queue message, no locale",
        "job",
        events.queue_message({**job, "locale": None}, scores(), None, 2),
    )
    case("JobEvent, every field", "event", every_field(events_pb2.JobEvent()))
    case("AnalysisJobMessage, every field", "fields", every_field(events_pb2.AnalysisJobMessage()))
    with open(path, "w", encoding="utf-8") as out:
        json.dump(cases, out, indent=1)


def read_one(case: dict[str, Any]) -> dict[str, Any]:
    data = base64.b64decode(case["data"])
    if case["kind"] == "event":
        event = events_pb2.JobEvent.FromString(data)
        return {"fields": fields(event), "error": ""}
    message = events_pb2.AnalysisJobMessage.FromString(data)
    if case["kind"] == "fields":
        return {"fields": fields(message), "error": ""}
    return read_job(data, message)


def read_job(data: bytes, message: Message) -> dict[str, Any]:
    """A queue message as the worker takes it: parsed, then analysed."""
    from worker.analyzers import analyze
    from worker.job_runner import parse_message

    parsed = parse_message(data)
    if parsed is None:
        return {"fields": fields(message), "error": "the worker does not take it as a job"}
    raw = parsed.raw_responses if parsed.HasField("raw_responses") else None
    try:
        profile = analyze(
            parsed.assessment_name, parsed.assessment_data, raw, parsed.locale or "id"
        )
    except Exception as err:  # what the worker would fail the job with
        return {"fields": fields(parsed), "error": f"the analyzer refused it: {err!r}"}
    if not profile.ByteSize():
        return {"fields": fields(parsed), "error": "the analyzer returned an empty profile"}
    return {"fields": fields(parsed), "error": ""}


def read(path: str, out_path: str) -> None:
    with open(path, encoding="utf-8") as source:
        cases = json.load(source)
    known = {
        "event": [f.number for f in events_pb2.JobEvent.DESCRIPTOR.fields],
        "job": [f.number for f in events_pb2.AnalysisJobMessage.DESCRIPTOR.fields],
    }
    known["fields"] = known["job"]
    results = {case["name"]: {**read_one(case), "known": known[case["kind"]]} for case in cases}
    with open(out_path, "w", encoding="utf-8") as out:
        json.dump(results, out, indent=1)


if __name__ == "__main__":
    if sys.argv[1] == "write":
        write(sys.argv[2])
    else:
        read(sys.argv[2], sys.argv[3])
