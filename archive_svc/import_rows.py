"""How a row of the original system becomes Assay's rows (``archive_svc.imports`` writes
them): the job, its result row with the inputs and the profile as the archive stores them, or
``Rejected`` with the reason. Pure: no I/O."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp

from archive_svc import inputs, profiles
from archive_svc.original_json import read_exact, to_document
from archive_svc.sealing import DataKeys
from archive_svc.store.imports import JobRow, ResultRow
from assay.archive.v1 import archive_service_pb2 as pb
from assay.common.v1 import assessment_pb2
from assaylib import jobs
from assaylib import validation as v
from assaylib.original import canonical_json, original_job_uuid

MAX_PRIORITY = 32767
"""``jobs.priority`` is a smallint: the original's priority, clamped into it."""

IN_FLIGHT = ("queued", "processing")
STATUSES = {"completed": "COMPLETED", "failed": "FAILED", "queued": "QUEUED"}


class Rejected(Exception):
    """A row the archive's rules refuse: nothing of it is written."""


def stored_profile(profile_json: bytes) -> tuple[bytes, assessment_pb2.PersonaProfile]:
    """An original profile as the archive stores it (before sealing), and parsed; Rejected
    when it is not a JSON object that a PersonaProfile can read."""
    try:
        document = json.loads(profile_json)
    except (ValueError, UnicodeDecodeError) as err:
        raise Rejected(f"persona_profile is not JSON: {err}") from None
    if not isinstance(document, dict):
        raise Rejected(f"persona_profile is not a JSON object but {type(document).__name__}")
    profile = assessment_pb2.PersonaProfile()
    if read_exact(document, profile):
        return profiles.encode(profile), profile
    profile = assessment_pb2.PersonaProfile()
    try:
        json_format.ParseDict(document, profile, ignore_unknown_fields=True)
    except json_format.ParseError as err:
        raise Rejected(f"persona_profile does not fit a profile: {err}") from None
    if json_format.MessageToDict(profile) == document:
        return profiles.encode(profile), profile
    return canonical_json(document), profile  # kept whole: what a profile cannot hold stays


def profile_document(stored: Any) -> Any:
    """A stored profile (opened) as the JSON document it stands for."""
    if isinstance(stored, memoryview | bytearray):
        stored = bytes(stored)
    if isinstance(stored, bytes) and stored.startswith(profiles.ZSTD_MAGIC):
        profile = assessment_pb2.PersonaProfile()
        profiles.parse_into(stored, profile)
        document = to_document(profile)
        return json_format.MessageToDict(profile) if document is None else document
    return json.loads(stored) if isinstance(stored, str | bytes) else stored


def _time(job: pb.OriginalJob, name: str) -> dt.datetime | None:
    if not job.HasField(name):  # type: ignore[arg-type]
        return None
    stamp: Timestamp = getattr(job, name)
    return stamp.ToDatetime(dt.UTC)


def _result_id(job: pb.OriginalJob) -> uuid.UUID:
    problems = v.uuid_violations(job.result.result_id, "result_id")
    if problems:
        raise Rejected(f"result id {job.result.result_id!r} is not a UUID")
    return uuid.UUID(job.result.result_id)


def _check(job: pb.OriginalJob) -> None:
    """Rejected unless the job's ids, name, error, status and creation time are sound."""
    problems = (
        v.id_violations(job.original_job_id, "original_job_id")
        + v.id_violations(job.user_id, "user_id")
        + v.assessment_name_violations(job.assessment_name)
        + v.text_violations(job.error_message, "error_message")
    )
    if problems:
        raise Rejected("; ".join(f"{p.field}: {p.description}" for p in problems))
    if job.original_status not in (*STATUSES, "processing"):
        raise Rejected(f"unknown status {job.original_status!r}")
    if not job.HasField("created_at"):
        raise Rejected("no created_at")


def _check_result(job: pb.OriginalJob, status: str) -> None:
    """Rejected when the job lacks the result its Assay status needs."""
    has_result = job.HasField("result")
    if status == "COMPLETED" and not has_result:
        raise Rejected("completed, but it names no result")
    if status == "COMPLETED" and not job.result.persona_profile_json:
        raise Rejected("completed, but its result has no persona_profile")
    if status == "QUEUED" and not has_result:
        raise Rejected(
            "in flight without its answers stored (no result row): it cannot be queued;"
            " --in-flight fail fails and refunds it"
        )


def job_row(job: pb.OriginalJob, fail: bool, token_cost: int) -> JobRow:
    """The job as written, or Rejected."""
    _check(job)
    in_flight = job.original_status in IN_FLIGHT
    status = "FAILED" if in_flight and fail else STATUSES.get(job.original_status, "QUEUED")
    _check_result(job, status)
    has_result = job.HasField("result")
    created = job.created_at.ToDatetime(dt.UTC)
    started = _time(job, "processing_started_at")
    finished = _time(job, "completed_at")
    if not in_flight and finished is None:  # ended there: when it was last written
        finished = _time(job, "updated_at") or created
    if in_flight:  # a new life in Assay: queued now, or failed now
        started = finished = None
    elapsed = int((finished - started).total_seconds() * 1000) if started and finished else None
    error_code = None
    if status == "FAILED":
        error_code = jobs.CUT_OVER if in_flight else jobs.ORIGINAL_FAILED
    message = job.error_message or None
    if in_flight and fail:
        message = f"in flight ({job.original_status}) in the original system at the cut-over"
    return JobRow(
        job_id=original_job_uuid(job.original_job_id),
        user_id=job.user_id,
        result_id=_result_id(job) if has_result else None,
        assessment_name=job.assessment_name,
        status=status,
        attempt=0 if in_flight else int(started is not None),
        version=1 if in_flight else 0,
        error_code=error_code,
        error_message=message,
        charge_count=1 if in_flight else 0,
        token_cost=token_cost,
        created_at=created,
        updated_at=None if in_flight else (_time(job, "updated_at") or created),
        started_at=started,
        finished_at=finished,
        processing_time_ms=elapsed,
        locale=jobs.INDONESIAN,  # the original wrote every profile in Bahasa Indonesia
        priority=min(max(job.priority, 0), MAX_PRIORITY),  # a lane no tier has: the one below
    )


def result_row(job: pb.OriginalJob, row: JobRow, keys: DataKeys) -> ResultRow:
    """The job's result row as stored, or Rejected."""
    result = job.result
    problems = v.submission_violations(
        job.assessment_name, result.test_data, result.raw_responses, result.ByteSize()
    )
    if problems:
        raise Rejected(
            "assessment_data: " + "; ".join(f"{p.field}: {p.description}" for p in problems)
        )
    job_id = row.job_id
    test_result = None
    if result.persona_profile_json:
        stored, _profile = stored_profile(result.persona_profile_json)
        test_result = keys.seal_profile(stored, job_id)
    created = (
        result.created_at.ToDatetime(dt.UTC) if result.HasField("created_at") else row.created_at
    )
    updated = result.updated_at.ToDatetime(dt.UTC) if result.HasField("updated_at") else created
    assert row.result_id is not None
    return ResultRow(
        result_id=row.result_id,
        job_id=job_id,
        user_id=row.user_id,
        assessment_name=row.assessment_name,
        test_data=keys.seal_column(inputs.encode(result.test_data), "test_data", job_id),
        raw_responses=keys.seal_column(
            inputs.encode(result.raw_responses), "raw_responses", job_id
        ),
        test_result=test_result,
        created_at=created,
        updated_at=updated,
    )
