"""What the relay publishes for an outbox row: the JobEvent its typed columns describe, or
the queue message that hands a job to a worker (stored, or built from the result row)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from archive_svc.convert import STATUS_TO_PROTO, submission_into, timestamp
from archive_svc.sealing import NO_KEYS, DataKeys
from assay.common.v1 import assessment_pb2
from assay.events.v1 import events_pb2
from assaylib.streams import StreamNames
from assaylib.tiers import Tiers


def encode_event(row: Mapping[str, Any]) -> bytes:
    """The JobEvent of an event row (its id is the row's id, also its Nats-Msg-Id)."""
    event = events_pb2.JobEvent(
        event_id=str(row["id"]),
        event_type=row["event_type"],
        user_id=row["user_id"],
        job_id=str(row["job_id"]),
        result_id=str(row["result_id"]) if row["result_id"] else "",
        status=STATUS_TO_PROTO[str(row["status"])],
        job_version=row["job_version"],
        occurred_at=timestamp(row["occurred_at"] or dt.datetime.now(dt.UTC)),
        metadata=events_pb2.JobEventMetadata(
            assessment_name=row["assessment_name"] or "",
            error_code=row["error_code"] or "",
            error_message=row["error_message"] or "",
            processing_time_ms=row["processing_time_ms"] or 0,
            attempt=row["attempt"] or 0,
        ),
    )
    return event.SerializeToString()


def queue_message(
    job: Mapping[str, Any],
    data: assessment_pb2.AssessmentData | None,
    raw: assessment_pb2.RawResponses | None,
    charge_count: int,
) -> events_pb2.AnalysisJobMessage:
    """The queue message for a job: what a worker needs to analyse it (``locale`` empty for a
    job older than locales: the worker then writes in its default)."""
    return events_pb2.AnalysisJobMessage(
        job_id=str(job["job_id"]),
        user_id=job["user_id"],
        result_id=str(job["result_id"]) if job["result_id"] else "",
        assessment_name=job["assessment_name"],
        assessment_data=data,
        raw_responses=raw,
        charge_count=charge_count,
        enqueued_at=timestamp(job.get("occurred_at") or dt.datetime.now(dt.UTC)),
        locale=job.get("locale") or "",
    )


def lane_subject(names: StreamNames, tiers: Tiers | None, priority: int) -> str:
    """The subject of a queue message for a job of ``priority``: its lane's (``tiers``),
    or the default lane's when the relay has no tiers."""
    if tiers is None or priority == 0:
        return names.analysis_subject
    return names.lane_subject(tiers.lane_for(priority))


def publication(
    names: StreamNames,
    row: Mapping[str, Any],
    keys: DataKeys = NO_KEYS,
    tiers: Tiers | None = None,
) -> tuple[str, bytes]:
    """The subject and payload the relay publishes for one outbox row (a sealed queue
    message or result row opened with ``keys``: the stream carries it plain). A queue
    message without a payload (every submission's since migration 0012, a retry's, a
    re-publication's) is built from the job and its result row's inputs
    (``archive_svc.inputs``)."""
    if row["kind"] == "event":
        subject = row["subject"] or names.event_subject(row["user_id"], str(row["job_id"]))
        payload = row["payload"] or encode_event(row)
        return subject, bytes(payload)
    subject = row["subject"] or lane_subject(names, tiers, row.get("priority") or 0)
    if row["payload"] is not None:
        return subject, keys.open_payload(bytes(row["payload"]), row["job_id"])
    message = queue_message(row, None, None, row["charge_count"] or 1)
    if row["test_data"] is not None:
        submission_into(keys.open_row(row), message.assessment_data, message.raw_responses)
    return subject, message.SerializeToString()
