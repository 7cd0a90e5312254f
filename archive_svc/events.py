"""Builds the outbox messages a transition writes: its event and, on (re)queue, the
queue message for the worker."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping
from typing import Any

from archive_svc.convert import STATUS_TO_PROTO, timestamp
from archive_svc.states import EventType
from archive_svc.store import OutboxRow
from assay.common.v1 import assessment_pb2
from assay.events.v1 import events_pb2
from assaylib.streams import StreamNames


def _status_name(row: Mapping[Any, Any]) -> str:
    return str(getattr(row["status"], "value", row["status"]))


def event_row(names: StreamNames, row: Mapping[Any, Any], event_type: EventType) -> OutboxRow:
    """The event for the transition that produced job row `row`."""
    event_id = uuid.uuid4()
    event = events_pb2.JobEvent(
        event_id=str(event_id),
        event_type=event_type.value,
        user_id=row["user_id"],
        job_id=str(row["job_id"]),
        result_id=str(row["result_id"]) if row["result_id"] else "",
        status=STATUS_TO_PROTO[_status_name(row)],
        job_version=row["version"],
        metadata=events_pb2.JobEventMetadata(
            assessment_name=row["assessment_name"],
            error_code=row["error_code"] or "",
            error_message=row["error_message"] or "",
            processing_time_ms=row["processing_time_ms"] or 0,
            attempt=row["attempt"],
        ),
    )
    occurred = timestamp(row["updated_at"]) or timestamp(dt.datetime.now(dt.UTC))
    assert occurred is not None
    event.occurred_at.CopyFrom(occurred)
    return OutboxRow(
        id=event_id,
        subject=names.event_subject(row["user_id"], str(row["job_id"])),
        kind="event",
        job_id=row["job_id"],
        payload=event.SerializeToString(),
    )


def queue_row(
    names: StreamNames,
    row: Mapping[Any, Any],
    data: assessment_pb2.AssessmentData,
    raw: assessment_pb2.RawResponses,
) -> OutboxRow:
    """The queue message that hands job row `row` to a worker."""
    message_id = uuid.uuid4()
    message = events_pb2.AnalysisJobMessage(
        job_id=str(row["job_id"]),
        user_id=row["user_id"],
        result_id=str(row["result_id"]) if row["result_id"] else "",
        assessment_name=row["assessment_name"],
        assessment_data=data,
        raw_responses=raw,
        charge_count=row["charge_count"],
    )
    enqueued = timestamp(row["updated_at"])
    if enqueued is not None:
        message.enqueued_at.CopyFrom(enqueued)
    return OutboxRow(
        id=message_id,
        subject=names.analysis_subject,
        kind="job",
        job_id=row["job_id"],
        payload=message.SerializeToString(),
    )
