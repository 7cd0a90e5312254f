"""What one WatchJobs call may see, and where in the events stream it starts: pure rules,
testable without gRPC or NATS."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from assay.notifier.v1 import notifier_service_pb2 as pb
from assaylib import errors
from assaylib.auth import Principal
from assaylib.streams import StreamNames
from assaylib.validation import id_violations, require_valid, uuid_violations
from notifier.events_source import StreamBounds


@dataclass(frozen=True)
class WatchScope:
    """The events a watch streams: one user's ("" = every user's), one job's or all."""

    user_id: str
    job_id: str

    def filter_subject(self, names: StreamNames) -> str:
        """The JetStream subject filter selecting this scope's events."""
        return names.events_filter(self.user_id, self.job_id)


def watch_scope(principal: Principal, request: pb.WatchJobsRequest) -> WatchScope:
    """The scope ``principal`` asked for, if allowed (ARCHITECTURE §6).

    A ``user`` watches only their own jobs: naming another user is PERMISSION_DENIED
    (someone else's *job* is NOT_FOUND, decided by the archive lookup). Operators and
    services may watch any user, or everyone with an empty ``user_id``.
    """
    require_valid(
        [
            *uuid_violations(request.job_id, "job_id", required=False),
            *id_violations(request.user_id, "user_id", required=False),
        ]
    )
    # The canonical form is what event subjects hold (and it is subject-safe).
    job_id = str(uuid.UUID(request.job_id)) if request.job_id else ""
    if principal.acts_for_anyone:
        return WatchScope(request.user_id, job_id)
    if request.user_id and not principal.can_act_for(request.user_id):
        raise errors.PermissionDenied("users may watch only their own jobs")
    return WatchScope(principal.user_id, job_id)


def resumes(request: pb.WatchJobsRequest) -> bool:
    """Whether a watch resumes after ``resume_after`` (else it starts from now). Zero is a
    cursor too when ``resume`` says so: a watch that went live on an empty stream holds 0,
    and resuming from there must replay the stream's first events, not skip them."""
    return request.resume_after > 0 or request.resume


def start_sequence(request: pb.WatchJobsRequest, bounds: StreamBounds) -> int:
    """The first stream sequence a watch delivers: the next one published, or the one after
    ``resume_after``.

    Raises ResumeTokenExpired when events after the cursor have left the stream (or the
    cursor is from a stream that no longer exists): the client re-lists and watches again.
    """
    if not resumes(request):
        return bounds.last_seq + 1
    check_resume(request.resume_after, bounds)
    return request.resume_after + 1


def check_resume(resume_after: int, bounds: StreamBounds) -> None:
    """Raise ResumeTokenExpired unless every event after ``resume_after`` is still kept."""
    if resume_after + 1 < bounds.first_seq:
        raise errors.ResumeTokenExpired(
            f"cursor {resume_after} has expired: the events stream now starts at "
            f"{bounds.first_seq}; list the jobs again and watch from now",
            metadata={"first_cursor": str(bounds.first_seq)},
        )
    if resume_after > bounds.last_seq:
        raise errors.ResumeTokenExpired(
            f"cursor {resume_after} is ahead of the events stream (last {bounds.last_seq}); "
            "the stream was recreated: list the jobs again and watch from now",
            metadata={"last_cursor": str(bounds.last_seq)},
        )
