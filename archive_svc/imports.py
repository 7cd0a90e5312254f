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

import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from archive_svc import convert, inputs, store
from archive_svc.checks import MAX_BATCH, ArchivePart
from archive_svc.import_rows import (
    IN_FLIGHT,
    Rejected,
    job_row,
    profile_document,
    result_row,
)
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
from assaylib import validation as v
from assaylib.errors import FieldViolation, InvalidArgument
from assaylib.original import profile_digest

OPENING = "import: opening balance from the original system"
CARRIED = "import: the original's charge for job {}, carried over"
IMPORTED = pb.IMPORT_OUTCOME_KIND_IMPORTED
SKIPPED = pb.IMPORT_OUTCOME_KIND_SKIPPED
REJECTED = pb.IMPORT_OUTCOME_KIND_REJECTED
CORRECTED = pb.IMPORT_OUTCOME_KIND_CORRECTED


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
                prepared[n] = (job, job_row(job, fail, self.policy.token_cost))
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
                found.profile_sha256 = profile_digest(profile_document(opened["test_result"]))
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
                result = result_row(job, row, self.policy.data_keys) if row.result_id else None
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
