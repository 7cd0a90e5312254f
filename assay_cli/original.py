"""The original system's database (PetaTalenta's ``archive.analysis_jobs``,
``archive.analysis_results`` and ``auth.users``), read for ``assay import original``: pages of
users and of jobs with their results, the rows that cannot be imported as they are, and each
job turned into the ``OriginalJob`` the archive imports.

What is refused here is what only the source can tell: a job whose user has a negative
balance (the user is not imported at all: their balance, jobs and results stay out together),
a job id that occurs more than once, a result row missing or shared by several jobs or of
another user, assessment_data that is not JSON or not a submission. The archive refuses the
rest by its own rules (statuses, names, scores, profiles). Each refusal is a ``Reject``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import asyncpg
from google.protobuf.timestamp_pb2 import Timestamp

from assay.archive.v1 import archive_service_pb2 as archive_pb
from assay.common.v1 import assessment_pb2
from assay_cli.loader import SubmissionFileError, parse_submission
from assaylib.original import original_job_uuid

STATUSES = ("queued", "processing", "completed", "failed")
"""The original's job statuses (its CHECK constraint), in the order reports list them."""
IN_FLIGHT = ("queued", "processing")

JOB_KEY = (
    "CASE WHEN job_id ~ '^[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}$'"
    " THEN lower(job_id) ELSE job_id END"
)
"""A job id as the Assay id it maps to (``original_job_uuid``): UUIDs compare without case."""

JOB_COLUMNS = (
    "j.job_id, j.user_id::text AS user_id, j.status, j.result_id::text AS result_id,"
    " j.error_message, j.assessment_name, j.priority, j.retry_count, j.created_at,"
    " j.updated_at, j.processing_started_at, j.completed_at,"
    " r.id::text AS r_id, r.user_id::text AS r_user, r.assessment_data::text AS assessment_data,"
    " r.persona_profile::text AS persona_profile, r.created_at AS r_created,"
    " r.updated_at AS r_updated"
)


@dataclass(frozen=True)
class Reject:
    """A source row not imported, and why (a line of the rejects file)."""

    kind: str  # job, result or user
    reason: str
    original_job_id: str | None = None
    result_id: str | None = None
    user_id: str | None = None
    original_status: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON Lines record (unset ids left out)."""
        return {key: value for key, value in asdict(self).items() if value is not None}


class Source:
    """A connection to the original's database and the queries the import runs on it."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    @classmethod
    async def open(cls, dsn: str) -> Source:
        """Connect (read only: the import never writes to the original)."""
        conn = await asyncpg.connect(dsn, server_settings={"default_transaction_read_only": "on"})
        return cls(conn)

    async def close(self) -> None:
        """Disconnect."""
        await self.conn.close()

    async def negative_users(self) -> dict[str, int]:
        """Users whose balance is negative (the original's CHECK forbids it: broken books)."""
        rows = await self.conn.fetch(
            "SELECT id::text AS id, token_balance FROM auth.users WHERE token_balance < 0"
        )
        return {row["id"]: int(row["token_balance"]) for row in rows}

    async def duplicate_job_ids(self) -> dict[str, int]:
        """Job ids (as Assay ids) held by more than one row, with their row counts."""
        rows = await self.conn.fetch(
            f"SELECT {JOB_KEY} AS key, count(*) AS n FROM archive.analysis_jobs"
            " GROUP BY 1 HAVING count(*) > 1"
        )
        return {row["key"]: int(row["n"]) for row in rows}

    async def shared_results(self) -> set[str]:
        """Result ids that more than one job names."""
        rows = await self.conn.fetch(
            "SELECT result_id::text AS id FROM archive.analysis_jobs WHERE result_id IS NOT NULL"
            " GROUP BY result_id HAVING count(*) > 1"
        )
        return {row["id"] for row in rows}

    async def count_jobs(self, since: dt.datetime | None) -> dict[str, int]:
        """Jobs a pass reads, per status."""
        rows = await self.conn.fetch(
            f"SELECT status, count(*) AS n FROM archive.analysis_jobs j WHERE {_SINCE}"
            " GROUP BY status",
            since,
        )
        return {row["status"]: int(row["n"]) for row in rows}

    async def count_users(self) -> int:
        """Users in the original."""
        return int(await self.conn.fetchval("SELECT count(*) FROM auth.users"))

    async def users_page(self, after: str | None, limit: int) -> Sequence[asyncpg.Record]:
        """Users and their balances, in id order."""
        rows: list[asyncpg.Record] = await self.conn.fetch(
            "SELECT id::text AS id, token_balance FROM auth.users"
            " WHERE $1::uuid IS NULL OR id > $1::uuid ORDER BY id LIMIT $2",
            after,
            limit,
        )
        return rows

    async def jobs_page(
        self, after: tuple[dt.datetime, str] | None, since: dt.datetime | None, limit: int
    ) -> Sequence[asyncpg.Record]:
        """Jobs with their result rows in (created_at, job_id) order: all of them, or with
        ``since`` those written since then and every one still in flight."""
        rows: list[asyncpg.Record] = await self.conn.fetch(
            f"SELECT {JOB_COLUMNS} FROM archive.analysis_jobs j"
            " LEFT JOIN archive.analysis_results r ON r.id = j.result_id"
            f" WHERE {_SINCE} AND ($2::timestamptz IS NULL OR (j.created_at, j.job_id) > ($2, $3))"
            " ORDER BY j.created_at, j.job_id LIMIT $4",
            since,
            after[0] if after else None,
            after[1] if after else None,
            limit,
        )
        return rows

    async def orphan_results(self, since: dt.datetime | None) -> Sequence[asyncpg.Record]:
        """Result rows no job names (written since ``since``, when given)."""
        rows: list[asyncpg.Record] = await self.conn.fetch(
            "SELECT r.id::text AS id, r.user_id::text AS user_id FROM archive.analysis_results r"
            " WHERE NOT EXISTS (SELECT 1 FROM archive.analysis_jobs j WHERE j.result_id = r.id)"
            " AND ($1::timestamptz IS NULL OR r.created_at >= $1 OR r.updated_at >= $1)"
            " ORDER BY r.id",
            since,
        )
        return rows


_SINCE = (
    "($1::timestamptz IS NULL OR j.created_at >= $1 OR j.updated_at >= $1"
    " OR j.status IN ('queued', 'processing'))"
)


@dataclass(frozen=True)
class Shape:
    """What the whole source says about single rows (read once per run)."""

    negative_users: dict[str, int]
    duplicates: dict[str, int]
    shared_results: set[str]


def _stamp(value: dt.datetime | None) -> Timestamp | None:
    if value is None:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


def job_key(original_job_id: str) -> str:
    """The duplicate-detection key of a job id (as ``JOB_KEY`` computes it in SQL)."""
    mapped = original_job_uuid(original_job_id)
    return str(mapped) if str(mapped) == original_job_id.lower() else original_job_id


def reject_of(row: asyncpg.Record, reason: str) -> Reject:
    """A job row's reject."""
    return Reject(
        "job",
        reason,
        original_job_id=row["job_id"],
        result_id=row["result_id"],
        user_id=row["user_id"],
        original_status=row["status"],
    )


def to_original(row: asyncpg.Record, shape: Shape) -> archive_pb.OriginalJob | Reject:
    """A source job row as the archive imports it, or why it cannot be."""
    user, result_id = row["user_id"], row["result_id"]
    if user in shape.negative_users:
        return reject_of(row, f"its user's balance is negative ({shape.negative_users[user]})")
    copies = shape.duplicates.get(job_key(row["job_id"]))
    if copies:
        return reject_of(row, f"duplicate job_id: {copies} rows hold it")
    if result_id and row["r_id"] is None:
        return reject_of(row, f"its result {result_id} is missing")
    if result_id in shape.shared_results:
        return reject_of(row, f"its result {result_id} is shared by several jobs")
    if result_id and row["r_user"] != user:
        return reject_of(row, f"its result {result_id} belongs to another user")
    job = archive_pb.OriginalJob(
        original_job_id=row["job_id"],
        user_id=user,
        original_status=row["status"],
        assessment_name=row["assessment_name"] or "",
        error_message=row["error_message"] or "",
        priority=row["priority"] or 0,
        retry_count=row["retry_count"] or 0,
    )
    for name, column in (
        ("created_at", "created_at"),
        ("updated_at", "updated_at"),
        ("processing_started_at", "processing_started_at"),
        ("completed_at", "completed_at"),
    ):
        stamp = _stamp(row[column])
        if stamp is not None:
            getattr(job, name).CopyFrom(stamp)
    if result_id:
        problem = _fill_result(job.result, row)
        if problem:
            return reject_of(row, problem)
    return job


def _fill_result(result: archive_pb.OriginalResult, row: asyncpg.Record) -> str:
    """Fill the result from the row; a reason when its assessment_data cannot be read."""
    result.result_id = row["r_id"]
    if row["assessment_data"] is None:
        return "its result has no assessment_data"
    data, problem = assessment_data(row["assessment_data"])
    if data is None:
        return problem
    result.test_data.CopyFrom(data[0])
    result.raw_responses.CopyFrom(data[1])
    if row["persona_profile"] is not None:
        result.persona_profile_json = row["persona_profile"].encode()
    for name, column in (("created_at", "r_created"), ("updated_at", "r_updated")):
        stamp = _stamp(row[column])
        if stamp is not None:
            getattr(result, name).CopyFrom(stamp)
    return ""


def assessment_data(
    text: str,
) -> tuple[tuple[assessment_pb2.AssessmentData, assessment_pb2.RawResponses] | None, str]:
    """The original's assessment_data (its camelCase score groups, as the original's
    assessment service wrote them) as Assay's messages, or None and why not."""
    try:
        document = json.loads(text)
    except ValueError as err:
        return None, f"assessment_data is not JSON: {err}"
    if not isinstance(document, dict):
        return None, f"assessment_data is not a JSON object but {type(document).__name__}"
    try:
        request, _ignored = parse_submission(document)
    except SubmissionFileError as err:
        details = "; ".join(f"{v.field}: {v.description}" for v in err.violations)
        return None, f"assessment_data: {details or err.message}"
    return (request.assessment_data, request.raw_responses), ""


def test_data_digest(text: str | None) -> str:
    """SHA-256 of assessment_data as Assay stores it (deterministic protobuf bytes); empty
    when it cannot be read."""
    if text is None:
        return ""
    data, _problem = assessment_data(text)
    if data is None:
        return ""
    return hashlib.sha256(data[0].SerializeToString(deterministic=True)).hexdigest()
