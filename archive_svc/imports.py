"""The cut-over from the original system (``assay import original``): ImportOriginalJobs and
BatchGetImportedJobs, operators only.

A batch is decided and written in one transaction, under an advisory lock so batches never
interleave. Each original job is idempotent on its original id (``imported_jobs``): a repeat is
skipped. What each original status becomes:

- ``completed`` → COMPLETED, ``failed`` → FAILED (error code ORIGINAL_FAILED and the
  original's message): version 0, no event and no ledger entry — they happened in the
  original, were charged and refunded there, and the opening balance already holds the
  outcome. ``charge_count`` 0, so a retry in Assay is charge 1 and its debit and refund follow
  the state machine as any other.
- ``queued``/``processing`` (in flight, charged in the original): with QUEUE, QUEUED with its
  queue message and an ``analysis.queued`` event (version 1); with FAIL, FAILED (code
  CUT_OVER) with an ``analysis.failed`` event and a refund. Either way the original's charge
  is carried over as charge 1: a GRANT of the cost (the token the original took) and the
  job's DEBIT, which leave the balance as the original had it and give a later refund —
  now, or when the job fails in Assay — the debit it returns.

A user's balance is one opening GRANT of the original balance (none when it is 0); a later
pass that finds it changed writes one GRANT of the difference (negative when the user spent
tokens in the original meanwhile — migration 0014). Every imported user's ledger sums to their
balance from the first moment (I1).

Profiles: the original's ``persona_profile`` JSON is stored as Assay stores profiles (zstd
frame of the protobuf) when that keeps it whole — its proto3 JSON is the original object — and
otherwise as the original JSON bytes themselves, which the archive reads as it reads rows from
before migration 0010; GetResult returns either as a PersonaProfile.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp

from archive_svc import convert, inputs, profiles, store
from archive_svc.checks import MAX_BATCH, ArchivePart
from archive_svc.original_json import read_exact, to_document
from archive_svc.store.imports import (
    Batch,
    EntryRow,
    JobRow,
    OutboxRow,
    RecordRow,
    ResultRow,
)
from assay.archive.v1 import archive_service_pb2 as pb
from assay.common.v1 import assessment_pb2
from assaylib import jobs
from assaylib import validation as v
from assaylib.errors import FieldViolation, InvalidArgument
from assaylib.original import canonical_json, original_job_uuid, profile_digest

IN_FLIGHT = ("queued", "processing")
STATUSES = {"completed": "COMPLETED", "failed": "FAILED", "queued": "QUEUED"}
OPENING = "import: opening balance from the original system"
CARRIED = "import: the original's charge for job {}, carried over"
IMPORTED = pb.IMPORT_OUTCOME_KIND_IMPORTED
SKIPPED = pb.IMPORT_OUTCOME_KIND_SKIPPED
REJECTED = pb.IMPORT_OUTCOME_KIND_REJECTED
CORRECTED = pb.IMPORT_OUTCOME_KIND_CORRECTED


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


def _profile_document(stored: Any) -> Any:
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


def _outcome(
    ident: str, kind: pb.ImportOutcomeKind.ValueType, reason: str = "", job_id: str = ""
) -> pb.ImportOutcome:
    return pb.ImportOutcome(id=ident, kind=kind, reason=reason, job_id=job_id)


@dataclass
class _Decisions:
    """One batch's outcomes and what it writes."""

    outcomes: dict[int, pb.ImportOutcome] = field(default_factory=dict)
    batch: Batch = field(
        default_factory=lambda: Batch([], [], [], [], [], {}, {})  # filled job by job
    )


class Imports(ArchivePart):
    """ImportOriginalJobs and BatchGetImportedJobs."""

    async def import_jobs(
        self, request: pb.ImportOriginalJobsRequest
    ) -> pb.ImportOriginalJobsResponse:
        """Decide and write one batch in one transaction (rolled back on dry_run)."""
        if len(request.jobs) > MAX_BATCH or len(request.balances) > MAX_BATCH:
            raise InvalidArgument(
                [FieldViolation("jobs", f"at most {MAX_BATCH} jobs and balances")]
            )
        fail = request.in_flight == pb.IN_FLIGHT_HANDLING_FAIL
        decisions = _Decisions()
        prepared: dict[int, tuple[pb.OriginalJob, JobRow]] = {}
        for n, job in enumerate(request.jobs):
            try:
                prepared[n] = (job, self._job_row(job, fail))
            except Rejected as err:
                decisions.outcomes[n] = _outcome(job.original_job_id, REJECTED, str(err))
        async with self.pool.acquire() as conn:
            transaction = conn.transaction()
            await transaction.start()
            try:
                await conn.execute("SELECT pg_advisory_xact_lock($1)", store.IMPORT_LOCK)
                balances = await self._balances(conn, request.balances, decisions)
                await self._jobs(conn, prepared, fail, decisions)
                written = await store.write_batch(conn, decisions.batch)
            except BaseException:
                await transaction.rollback()
                raise
            if request.dry_run:
                await transaction.rollback()
            else:
                await transaction.commit()
        return self._response(request, decisions, balances, written)

    async def batch_get(
        self, request: pb.BatchGetImportedJobsRequest
    ) -> pb.BatchGetImportedJobsResponse:
        """What the import made of these original jobs and users' balances."""
        if len(request.original_job_ids) > MAX_BATCH or len(request.user_ids) > MAX_BATCH:
            raise InvalidArgument(
                [FieldViolation("original_job_ids", f"at most {MAX_BATCH} ids and user ids")]
            )
        response = pb.BatchGetImportedJobsResponse()
        keys = self.policy.data_keys
        for row in await store.imported_jobs(self.pool, request.original_job_ids):
            opened = keys.open_row(row)
            found = response.jobs.add(
                original_job_id=row["original_job_id"],
                job=convert.job_to_proto(row),
                original_status=row["original_status"],
                original_priority=row["original_priority"],
                original_retry_count=row["original_retry_count"],
            )
            if opened["test_data"] is not None:
                data = inputs.parse_into(opened["test_data"], assessment_pb2.AssessmentData())
                found.test_data_sha256 = hashlib.sha256(
                    data.SerializeToString(deterministic=True)
                ).hexdigest()
            if opened["test_result"] is not None:
                found.profile_sha256 = profile_digest(_profile_document(opened["test_result"]))
        for row in await store.imported_balances(self.pool, request.user_ids):
            response.balances.add(
                user_id=row["user_id"],
                original_balance=row["original_balance"],
                balance=row["balance"],
            )
        return response

    # ---- balances ----------------------------------------------------------------------

    async def _balances(
        self, conn: Any, balances: Sequence[pb.OriginalBalance], decisions: _Decisions
    ) -> list[pb.ImportOutcome]:
        outcomes: list[pb.ImportOutcome] = []
        users = [b.user_id for b in balances]
        imported, accounts = await store.lock_balances(conn, users)
        batch = decisions.batch
        for item in balances:
            user, amount = item.user_id, item.balance
            problems = v.id_violations(user, "user_id")
            if problems or amount < 0 or user in batch.balances:
                reason = (
                    f"negative balance {amount}"
                    if amount < 0
                    else "user listed twice in one batch"
                    if user in batch.balances
                    else f"user_id {problems[0].description}"
                )
                outcomes.append(_outcome(user, REJECTED, reason))
                continue
            before = imported.get(user)
            change = amount if before is None else amount - before
            if before is not None and change == 0:
                outcomes.append(_outcome(user, SKIPPED))
                continue
            if accounts.get(user, 0) + batch.account_deltas.get(user, 0) + change < 0:
                outcomes.append(
                    _outcome(
                        user,
                        REJECTED,
                        f"the correction {change} would make the Assay"
                        f" balance {accounts.get(user, 0)} negative",
                    )
                )
                continue
            batch.balances[user] = amount
            batch.account_deltas[user] = batch.account_deltas.get(user, 0) + change
            if change:
                reason = (
                    OPENING
                    if before is None
                    else (f"import: balance correction, the original's {before} → {amount}")
                )
                batch.entries.append(EntryRow(user, "GRANT", change, None, None, reason))
            outcomes.append(_outcome(user, IMPORTED if before is None else CORRECTED))
        return outcomes

    # ---- jobs --------------------------------------------------------------------------

    def _job_row(self, job: pb.OriginalJob, fail: bool) -> JobRow:
        """The job as written, or Rejected."""
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
        in_flight = job.original_status in IN_FLIGHT
        status = "FAILED" if in_flight and fail else STATUSES.get(job.original_status, "QUEUED")
        has_result = job.HasField("result")
        if status == "COMPLETED" and not (has_result and job.result.persona_profile_json):
            raise Rejected("completed, but its result has no persona_profile")
        if status == "QUEUED" and not has_result:
            raise Rejected(
                "in flight without its answers stored (no result row): it cannot be queued;"
                " --in-flight fail fails and refunds it"
            )
        created = job.created_at.ToDatetime(dt.UTC)
        started = _time(job, "processing_started_at")
        finished = _time(job, "completed_at")
        if status == "COMPLETED" and finished is None:
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
            token_cost=self.policy.token_cost,
            created_at=created,
            updated_at=None if in_flight else (_time(job, "updated_at") or created),
            started_at=started,
            finished_at=finished,
            processing_time_ms=elapsed,
            locale=jobs.INDONESIAN,  # the original wrote every profile in Bahasa Indonesia
        )

    def _result_row(self, job: pb.OriginalJob, row: JobRow) -> ResultRow:
        """The job's result row as stored, or Rejected."""
        result = job.result
        problems = v.submission_violations(
            job.assessment_name, result.test_data, result.raw_responses, result.ByteSize()
        )
        if problems:
            raise Rejected(
                "assessment_data: " + "; ".join(f"{p.field}: {p.description}" for p in problems)
            )
        keys, job_id = self.policy.data_keys, row.job_id
        test_result = None
        if result.persona_profile_json:
            stored, _profile = stored_profile(result.persona_profile_json)
            test_result = keys.seal_profile(stored, job_id)
        created = (
            result.created_at.ToDatetime(dt.UTC)
            if result.HasField("created_at")
            else row.created_at
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

    async def _jobs(
        self,
        conn: Any,
        prepared: dict[int, tuple[pb.OriginalJob, JobRow]],
        fail: bool,
        decisions: _Decisions,
    ) -> None:
        present = await store.imported_ids(
            conn, [job.original_job_id for job, _ in prepared.values()]
        )
        taken_jobs, taken_results = await store.taken_ids(
            conn,
            [row.job_id for _, row in prepared.values()],
            [row.result_id for _, row in prepared.values() if row.result_id],
        )
        seen_jobs: set[uuid.UUID] = set()
        seen_results: set[uuid.UUID] = set()
        for n, (job, row) in sorted(prepared.items()):
            ident = job.original_job_id
            if ident in present:
                decisions.outcomes[n] = _outcome(ident, SKIPPED, job_id=str(row.job_id))
                continue
            try:
                if row.job_id in taken_jobs or row.job_id in seen_jobs:
                    raise Rejected(f"job id {row.job_id} is already used in Assay")
                if row.result_id and (
                    row.result_id in taken_results or row.result_id in seen_results
                ):
                    raise Rejected(f"result id {row.result_id} is already used in Assay")
                result = self._result_row(job, row) if row.result_id else None
            except Rejected as err:
                decisions.outcomes[n] = _outcome(ident, REJECTED, str(err))
                continue
            seen_jobs.add(row.job_id)
            if row.result_id:
                seen_results.add(row.result_id)
            self._add_job(decisions.batch, job, row, result, fail)
            decisions.outcomes[n] = _outcome(ident, IMPORTED, job_id=str(row.job_id))

    def _add_job(
        self, batch: Batch, job: pb.OriginalJob, row: JobRow, result: ResultRow | None, fail: bool
    ) -> None:
        in_flight = job.original_status in IN_FLIGHT
        batch.jobs.append(row)
        if result is not None:
            batch.results.append(result)
        batch.records.append(
            RecordRow(
                job.original_job_id,
                row.job_id,
                row.result_id,
                row.user_id,
                job.original_status,
                job.priority,
                job.retry_count,
                ("fail" if fail else "queue") if in_flight else None,
            )
        )
        if not in_flight:
            return
        cost, user = row.token_cost, row.user_id
        batch.entries.append(
            EntryRow(user, "GRANT", cost, None, None, CARRIED.format(job.original_job_id))
        )
        batch.entries.append(
            EntryRow(user, "DEBIT", -cost, row.job_id, 1, "analysis (charged in the original)")
        )
        delta = 0
        if fail:
            batch.entries.append(
                EntryRow(user, "REFUND", cost, row.job_id, 1, "cut-over: in flight in the original")
            )
            delta = cost
        batch.account_deltas[user] = batch.account_deltas.get(user, 0) + delta
        event = "analysis.failed" if fail else "analysis.queued"
        if not fail:
            batch.outbox.append(
                OutboxRow(
                    "job",
                    row.job_id,
                    None,
                    user,
                    row.result_id,
                    None,
                    None,
                    None,
                    None,
                    row.assessment_name,
                )
            )
        batch.outbox.append(
            OutboxRow(
                "event",
                row.job_id,
                event,
                user,
                row.result_id,
                row.status,
                1,
                row.error_code,
                row.error_message,
                row.assessment_name,
            )
        )

    def _response(
        self,
        request: pb.ImportOriginalJobsRequest,
        decisions: _Decisions,
        balances: list[pb.ImportOutcome],
        written: dict[str, int],
    ) -> pb.ImportOriginalJobsResponse:
        for outcome in balances:
            if outcome.kind in (IMPORTED, CORRECTED):
                outcome.balance = written.get(outcome.id, 0)
        return pb.ImportOriginalJobsResponse(
            jobs=[decisions.outcomes[n] for n in range(len(request.jobs))], balances=balances
        )
