"""What the CLI prints: JSON for scripts, readable text for people, and errors.

``--json`` prints an RPC's reply in the proto3 JSON mapping (lowerCamelCase keys, enum
names, int64 as strings — what consumers of the original system read); CLI-only
outputs (``dev up``, ``token mint``) use snake_case keys. Human output goes to stdout,
progress and errors to stderr.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
import textwrap
from collections.abc import Iterable
from datetime import UTC
from typing import Any, Protocol, TextIO

from assay_client import AssayError, InvalidArgument, WatchItem
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from assay.common.v1 import assessment_pb2, job_pb2
from assay.events.v1 import events_pb2
from assay.notifier.v1 import notifier_service_pb2 as notifier_pb
from assaylib.jobs import status_name


class Violation(Protocol):
    """A bad field, as the server (``assay_client.FieldViolation``) or the file loader
    (``assaylib.errors.FieldViolation``) names it."""

    @property
    def field(self) -> str: ...

    @property
    def description(self) -> str: ...


TERMINAL = frozenset(
    {job_pb2.JOB_STATUS_COMPLETED, job_pb2.JOB_STATUS_FAILED, job_pb2.JOB_STATUS_CANCELLED}
)


def to_dict(message: Message) -> dict[str, Any]:
    """A message in the proto3 JSON mapping, fields without presence always printed."""
    return MessageToDict(message, always_print_fields_with_no_presence=True)


def watch_item_dict(item: WatchItem) -> dict[str, Any]:
    """A watch item as the WatchJobsResponse it came as (``snapshot``, ``event`` or
    ``bookmark``), or ``{"relisted": {"cursor": …}}`` when the watch relisted."""
    if item.job is not None:
        return to_dict(notifier_pb.WatchJobsResponse(snapshot=item.job))
    if item.event is not None:
        return to_dict(notifier_pb.WatchJobsResponse(event=item.event))
    if item.kind == "bookmark":
        return to_dict(
            notifier_pb.WatchJobsResponse(bookmark=notifier_pb.Bookmark(cursor=item.cursor))
        )
    return {"relisted": {"cursor": str(item.cursor)}}


def print_json(document: Any, stream: TextIO | None = None) -> None:
    """One JSON document on stdout (or stream)."""
    print(json.dumps(document, indent=2, ensure_ascii=False), file=stream or sys.stdout)


def print_json_line(document: Any) -> None:
    """One compact JSON document on its own line (for streams: JSON Lines)."""
    print(json.dumps(document, ensure_ascii=False), flush=True)


def progress(text: str) -> None:
    """A progress line on stderr (after what stdout holds, so the two interleave in order)."""
    with contextlib.suppress(OSError):  # stdout's reader may have left (`| head`)
        sys.stdout.flush()
    print(text, file=sys.stderr, flush=True)


def when(stamp: Timestamp) -> str:
    """A timestamp as local-free UTC text, or "-" when unset."""
    if not stamp.seconds and not stamp.nanos:
        return "-"
    return stamp.ToDatetime(tzinfo=UTC).strftime("%Y-%m-%d %H:%M:%S")


def status_text(status: int, attempt: int = 0, error_code: str = "", elapsed_ms: int = 0) -> str:
    """``PROCESSING (attempt 2)``, ``COMPLETED in 512 ms``, ``FAILED STUCK``."""
    text = status_name(status)
    if status == job_pb2.JOB_STATUS_PROCESSING and attempt:
        text += f" (attempt {attempt})"
    if error_code:
        text += f" {error_code}"
    if status == job_pb2.JOB_STATUS_COMPLETED and elapsed_ms:
        text += f" in {elapsed_ms} ms"
    return text


def job_status(job: job_pb2.Job) -> str:
    """A job's status with its attempt, error code or processing time."""
    return status_text(job.status, job.attempt, job.error_code, job.processing_time_ms)


def jobs_table(jobs: Iterable[job_pb2.Job]) -> str:
    """One line per job: id, status, user, created, assessment."""
    rows = [("JOB", "STATUS", "USER", "CREATED (UTC)", "ASSESSMENT")]
    rows += [
        (job.job_id, job_status(job), job.user_id, when(job.created_at), job.assessment_name)
        for job in jobs
    ]
    widths = [max(len(row[col]) for row in rows) for col in range(4)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row[:4], widths, strict=True))
        + "  "
        + row[4]
        for row in rows
    )


def job_details(job: job_pb2.Job) -> str:
    """Every interesting field of a job, one per line."""
    lines = [
        ("job", job.job_id),
        ("status", job_status(job)),
        ("user", job.user_id),
        ("assessment", job.assessment_name),
        ("result", job.result_id or "-"),
        ("attempt", str(job.attempt)),
        ("worker", job.worker_id or "-"),
        ("charged", f"{job.token_cost} token(s), {job.charge_count} charge(s)"),
        ("created", when(job.created_at)),
        ("started", when(job.started_at)),
        ("heartbeat", when(job.heartbeat_at)),
        ("finished", when(job.finished_at)),
    ]
    if job.cancel_requested:
        lines.append(("cancel", "requested; the worker stops at its next heartbeat"))
    if job.error_code or job.error_message:
        lines.append(("error", f"{job.error_code}: {job.error_message}"))
    if job.request_id:
        lines.append(("request", job.request_id))
    return "\n".join(f"{label + ':':<11} {value}" for label, value in lines)


def event_line(event: events_pb2.JobEvent) -> str:
    """One event: time, cursor, job, type and status."""
    metadata = event.metadata
    status = status_text(
        event.status, metadata.attempt, metadata.error_code, metadata.processing_time_ms
    )
    line = f"{when(event.occurred_at)}  #{event.cursor}  {event.job_id}  {event.event_type:<19} "
    line += status
    if metadata.error_message:
        line += f": {metadata.error_message}"
    return line


class StatusLine:
    """A job's live status: ``job X: QUEUED → PROCESSING (attempt 1) → COMPLETED in 9 ms``,
    written piece by piece as statuses change, so it reads well on a terminal and in a log."""

    def __init__(self, job_id: str, stream: TextIO) -> None:
        self.job_id = job_id
        self.stream = stream
        self.shown: list[str] = []

    def show(self, text: str) -> None:
        """Append a status unless it is the one shown last."""
        if self.shown and self.shown[-1] == text:
            return
        prefix = f"job {self.job_id}: " if not self.shown else " → "
        self.shown.append(text)
        self.stream.write(prefix + text)
        self.stream.flush()

    def end(self) -> None:
        """Finish the line."""
        if self.shown:
            self.stream.write("\n")
            self.stream.flush()


# ---- the persona profile -----------------------------------------------------------------


def _width() -> int:
    return max(60, min(100, shutil.get_terminal_size((100, 24)).columns))


def _para(text: str, indent: str = "  ") -> list[str]:
    return textwrap.wrap(text, _width(), initial_indent=indent, subsequent_indent=indent) or [""]


def _bullets(items: Iterable[str], indent: str = "  ") -> list[str]:
    lines: list[str] = []
    for item in items:
        lines += textwrap.wrap(
            item, _width(), initial_indent=f"{indent}• ", subsequent_indent=f"{indent}  "
        )
    return lines


def _section(title: str, body: list[str]) -> list[str]:
    return ["", title.upper(), *body] if body else []


def _career(career: assessment_pb2.CareerRecommendation) -> list[str]:
    prospect = career.career_prospect
    ratings = [
        ("jobs", prospect.job_availability),
        ("salary", prospect.salary_potential),
        ("progression", prospect.career_progression),
        ("growth", prospect.industry_growth),
        ("skills", prospect.skill_development),
        ("AI overtake", prospect.ai_overtake),
    ]
    lines = [f"  ▸ {career.career_name}"]
    lines += _para(career.justification, "      ")
    if career.related_majors:
        lines += _para("majors: " + ", ".join(career.related_majors), "      ")
    lines += _para(" · ".join(f"{name} {value}" for name, value in ratings if value), "      ")
    return lines


def profile_text(profile: assessment_pb2.PersonaProfile) -> str:
    """The persona profile as readable text."""
    rule = "═" * min(_width(), 72)
    lines = [rule, f"  {profile.archetype or 'Persona profile'}", rule]
    lines += _para(profile.short_summary)
    lines += _section("Core motivators", _bullets(profile.core_motivators))
    lines += _section("Strengths", _para(profile.strength_summary) + _bullets(profile.strengths))
    weak = _para(profile.weakness_summary) if profile.weakness_summary else []
    lines += _section("Development areas", weak + _bullets(profile.weaknesses))
    careers = [line for career in profile.career_recommendation for line in _career(career)]
    lines += _section("Careers", careers)
    lines += _section("Insights", _bullets(profile.insights))
    lines += _section("Skills to build", _bullets(profile.skill_suggestion))
    lines += _section("Possible pitfalls", _bullets(profile.possible_pitfalls))
    lines += _section(
        "Learning style", _para(profile.learning_style) if profile.learning_style else []
    )
    lines += _section(
        "Work environment", _para(profile.work_environment) if profile.work_environment else []
    )
    if profile.risk_tolerance:
        lines += _section("Risk tolerance", [f"  {profile.risk_tolerance}"])
    lines += _section("Role models", [f"  • {m.name} — {m.title}" for m in profile.role_model])
    activities = profile.development_activities
    lines += _section("Activities", _bullets(activities.extracurricular))
    lines += _section("Reading", _books(activities))
    if profile.analyzer.name:
        lines += ["", f"(analyzer {profile.analyzer.name} {profile.analyzer.version})"]
    return "\n".join(lines)


def _books(activities: assessment_pb2.DevelopmentActivities) -> list[str]:
    return _bullets(
        f"“{book.title}” by {book.author}: {book.reason}"
        for book in activities.book_recommendations
    )


# ---- errors -------------------------------------------------------------------------------


def error_lines(error: AssayError) -> list[str]:
    """``error: <CODE> <reason>: <message>`` and one line per field violation."""
    code = error.code.name
    head = code if error.reason in ("", code, "UNKNOWN") else f"{code} {error.reason}"
    lines = [f"error: {head}: {error.message or 'no details'}"]
    if isinstance(error, InvalidArgument):
        lines += violation_lines(error.violations)
    return lines


def violation_lines(violations: Iterable[Violation]) -> list[str]:
    """One indented line per bad field."""
    return [f"  {v.field}: {v.description}" for v in violations]


def print_error(message: str, violations: Iterable[Violation] = ()) -> None:
    """``error: message`` and the field violations, on stderr."""
    print(f"error: {message}", file=sys.stderr)
    for line in violation_lines(violations):
        print(line, file=sys.stderr)
