"""Conversions between database rows and protobuf messages."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Mapping
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from archive_svc import inputs, profiles
from assay.archive.v1 import archive_service_pb2 as archive_pb2
from assay.common.v1 import assessment_pb2, job_pb2

STATUS_TO_PROTO = {
    "QUEUED": job_pb2.JOB_STATUS_QUEUED,
    "PROCESSING": job_pb2.JOB_STATUS_PROCESSING,
    "COMPLETED": job_pb2.JOB_STATUS_COMPLETED,
    "FAILED": job_pb2.JOB_STATUS_FAILED,
    "CANCELLED": job_pb2.JOB_STATUS_CANCELLED,
}
PROTO_TO_STATUS = {number: name for name, number in STATUS_TO_PROTO.items()}
LEDGER_KIND_TO_PROTO = {
    "GRANT": archive_pb2.LEDGER_ENTRY_KIND_GRANT,
    "DEBIT": archive_pb2.LEDGER_ENTRY_KIND_DEBIT,
    "REFUND": archive_pb2.LEDGER_ENTRY_KIND_REFUND,
}


EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def timestamp(value: dt.datetime | None) -> Timestamp | None:
    """A protobuf Timestamp for value, or None."""
    if value is None:
        return None
    return Timestamp(**_seconds_nanos(value))


def stamp(value: dt.datetime) -> Timestamp:
    """A protobuf Timestamp for a datetime."""
    return Timestamp(**_seconds_nanos(value))


def _seconds_nanos(value: dt.datetime) -> dict[str, int]:
    # Timestamp.FromDatetime is several times slower; this is on every reply and event.
    delta = value - EPOCH if value.tzinfo else value.replace(tzinfo=dt.UTC) - EPOCH
    seconds = delta.days * 86400 + delta.seconds
    return {"seconds": seconds, "nanos": delta.microseconds * 1000}


JOB_TIMES = ("created_at", "updated_at", "started_at", "heartbeat_at", "finished_at")


def _enum_name(value: Any) -> str:
    return str(getattr(value, "value", value))


def job_to_proto(row: Mapping[Any, Any]) -> job_pb2.Job:
    """A Job message from a row of the jobs table."""
    job = job_pb2.Job(
        job_id=str(row["job_id"]),
        user_id=row["user_id"],
        result_id=str(row["result_id"]) if row["result_id"] else "",
        assessment_name=row["assessment_name"],
        status=STATUS_TO_PROTO[_enum_name(row["status"])],
        attempt=row["attempt"],
        worker_id=row["worker_id"] or "",
        version=row["version"],
        cancel_requested=row["cancel_requested"],
        error_code=row["error_code"] or "",
        error_message=row["error_message"] or "",
        charge_count=row["charge_count"],
        token_cost=row["token_cost"],
        request_id=row["request_id"] or "",
        processing_time_ms=row["processing_time_ms"] or 0,
        requeues=row["requeues"] or 0,
        priority=row.get("priority") or 0,
        **{
            name: Timestamp(**_seconds_nanos(row[name]))
            for name in JOB_TIMES
            if row[name] is not None
        },
    )
    return job


def submission_into(
    row: Mapping[Any, Any],
    data: assessment_pb2.AssessmentData,
    raw: assessment_pb2.RawResponses,
) -> None:
    """Fill ``data`` and ``raw`` from a row holding test_data and raw_responses, unsealed
    (``archive_svc.inputs``)."""
    inputs.parse_into(row["test_data"], data)
    inputs.parse_into(row["raw_responses"], raw)


def result_to_proto(row: Mapping[Any, Any]) -> job_pb2.AnalysisResult:
    """An AnalysisResult message from a row of the results table, its sealed columns opened
    (``DataKeys.open_row``)."""
    result = job_pb2.AnalysisResult(
        result_id=str(row["result_id"]),
        user_id=row["user_id"],
        job_id=str(row["job_id"]) if row["job_id"] else "",
        assessment_name=row["assessment_name"],
    )
    submission_into(row, result.test_data, result.raw_responses)
    if row["test_result"] is not None:
        profiles.parse_into(row["test_result"], result.test_result)
    for name in ("created_at", "updated_at"):
        stamp = timestamp(row[name])
        if stamp is not None:
            getattr(result, name).CopyFrom(stamp)
    return result


def ledger_entry_to_proto(row: Mapping[Any, Any]) -> archive_pb2.LedgerEntry:
    """A LedgerEntry message from a row of the ledger_entries table."""
    entry = archive_pb2.LedgerEntry(
        entry_id=row["entry_id"],
        user_id=row["user_id"],
        kind=LEDGER_KIND_TO_PROTO[_enum_name(row["kind"])],
        amount=row["amount"],
        job_id=str(row["job_id"]) if row["job_id"] else "",
        charge_no=row["charge_no"] or 0,
        reason=row["reason"],
    )
    stamp = timestamp(row["created_at"])
    if stamp is not None:
        entry.created_at.CopyFrom(stamp)
    return entry


def submission_hash(
    assessment_name: str,
    data: assessment_pb2.AssessmentData,
    raw: assessment_pb2.RawResponses,
    locale: str = "",
) -> str:
    """A stable digest of a submission's payload, to tell a repeat from a different request.

    ``locale`` is the one the request named: empty (the default) digests as before locales
    existed, so a request repeated across the upgrade still replays."""
    digest = hashlib.sha256()
    digest.update(assessment_name.encode())
    digest.update(b"\0")
    digest.update(data.SerializeToString(deterministic=True))
    digest.update(b"\0")
    digest.update(raw.SerializeToString(deterministic=True))
    if locale:
        digest.update(b"\0locale\0" + locale.encode())
    return digest.hexdigest()


def access_record_to_proto(row: Mapping[Any, Any]) -> archive_pb2.AccessRecord:
    """An AccessRecord message from a row of the access_records table."""
    return archive_pb2.AccessRecord(
        record_id=row["record_id"],
        read_at=stamp(row["read_at"]),
        user_id=row["user_id"],
        reader=row["reader"],
        reader_identity=row["reader_identity"],
        via=row["via"],
        rpc=row["rpc"],
        job_id=str(row["job_id"]) if row["job_id"] else "",
        result_id=str(row["result_id"]) if row["result_id"] else "",
    )
