"""Result rows: read, list, update by field mask, and create for an older producer's job."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from archive_svc import convert, inputs, metrics, profiles, store
from archive_svc.access_records import Reader, reader_of
from archive_svc.checks import ArchivePart, check_owner, owner_violations, parse_uuid
from archive_svc.paging import page_limit
from archive_svc.sealing import SEALED_COLUMNS
from assay.archive.v1 import archive_service_pb2 as pb
from assay.common.v1 import job_pb2
from assaylib import jobs
from assaylib import validation as v
from assaylib.auth import Principal
from assaylib.errors import Erased, FieldViolation


class Results(ArchivePart):
    """GetResult, ListResults, UpdateResult and CreateResult."""

    async def get_result(
        self, request: pb.GetResultRequest, principal: Principal
    ) -> job_pb2.AnalysisResult:
        """One result row, scoped to ``request.user_id`` when given; the read recorded in the
        same statement unless its reader is the row's owner (``access_records``). An erased
        row is NOT_FOUND with reason ERASED (its read is still recorded)."""
        owner = request.user_id
        v.require_valid(owner_violations(owner))
        ident = parse_uuid(request.result_id, "result_id")
        reader = reader_of(principal, request.reader, owner)
        if reader is None:
            row = await store.get_result(self.pool, ident)
        else:
            row = await store.get_result_recorded(self.pool, ident, owner, reader)
            if row is not None and row["user_id"] != reader.subject:
                metrics.ACCESS_RECORDS.labels("GetResult").inc()
        row = check_owner(row, owner, "result", request.result_id)
        if row["erased_at"] is not None:
            raise Erased(f"result {request.result_id} was erased")
        return self._to_proto(row)

    async def list_results(
        self, request: pb.ListResultsRequest, principal: Principal
    ) -> pb.ListResultsResponse:
        """A page of result rows, newest first; the read of each row recorded in the same
        statement unless its reader owns it."""
        limit = page_limit(request.page_size)
        v.require_valid(owner_violations(request.user_id))
        scope = f"results\0{request.user_id}"
        after = self.pages.decode(request.page_token, scope, (dt.datetime, uuid.UUID))
        reader = reader_of(principal, "", request.user_id)
        if reader is None:
            rows = await store.results_page(self.pool, request.user_id, after, limit + 1)
        else:
            rows = await store.results_page_recorded(
                self.pool, request.user_id, after, limit + 1, limit, reader
            )
        page, token = self.pages.page(
            rows, limit, scope, lambda r: (r["created_at"], r["result_id"])
        )
        if reader is not None:
            recorded = sum(1 for r in page if r["user_id"] != reader.subject)
            metrics.ACCESS_RECORDS.labels("ListResults").inc(recorded)
        return pb.ListResultsResponse(
            results=[self._to_proto(r) for r in page], next_page_token=token
        )

    async def update_result(
        self, request: pb.UpdateResultRequest, principal: Principal
    ) -> job_pb2.AnalysisResult:
        """Update the masked fields of a result row; the reply holds the whole result, so the
        update is recorded as a read (``access_records``) unless its caller owns the row."""
        ident = parse_uuid(request.result.result_id, "result.result_id")
        columns = result_columns(request)
        keys = self.policy.data_keys
        sealed = [name for name in columns if name in SEALED_COLUMNS]
        if keys.enabled and sealed:
            # Sealed values are bound to their job, which a result row never changes.
            stored = check_owner(await store.get_result(self.pool, ident), "", "result", str(ident))
            for name in sealed:
                columns[name] = keys.seal_column(columns[name], name, stored["job_id"])
        reader = Reader(principal.user_id, principal.identity)
        row = await store.update_result_recorded(self.pool, ident, columns, reader)
        row = check_owner(row, "", "result", str(ident))
        if row["user_id"] != reader.subject:
            metrics.ACCESS_RECORDS.labels("UpdateResult").inc()
        return self._to_proto(row)

    async def create_result(self, request: pb.CreateResultRequest) -> job_pb2.AnalysisResult:
        """Create and link the result row of a job that has none (idempotent)."""
        v.require_valid(
            v.raw_responses_violations(request.raw_responses)
            + v.assessment_data_violations(request.test_data, jobs.CUSTOM)
        )
        job_id = parse_uuid(request.job_id, "job_id")
        keys = self.policy.data_keys
        created = await store.create_legacy_result(
            self.pool,
            job_id,
            uuid.uuid4(),
            keys.seal_column(inputs.encode(request.test_data), "test_data", job_id),
            keys.seal_column(inputs.encode(request.raw_responses), "raw_responses", job_id),
        )
        if created is not None:
            return self._to_proto(created)
        job = check_owner(await store.get_job(self.pool, job_id), "", "job", request.job_id)
        existing = await store.get_result(self.pool, job["result_id"])
        return self._to_proto(check_owner(existing, "", "result", str(job["result_id"])))

    def _to_proto(self, row: Mapping[str, Any]) -> job_pb2.AnalysisResult:
        """A result row as a message, its sealed columns opened."""
        return convert.result_to_proto(self.policy.data_keys.open_row(row))


RESULT_MASK_PATHS: dict[str, Callable[[job_pb2.AnalysisResult], str | bytes]] = {
    "test_data": lambda r: inputs.encode(r.test_data),
    "raw_responses": lambda r: inputs.encode(r.raw_responses),
    "test_result": lambda r: profiles.encode(r.test_result),
    "assessment_name": lambda r: r.assessment_name,
}


def result_columns(request: pb.UpdateResultRequest) -> dict[str, Any]:
    """The columns an UpdateResult field mask names, with their new values."""
    paths = list(request.update_mask.paths)
    bad = [p for p in paths if p not in RESULT_MASK_PATHS]
    violations = [FieldViolation("update_mask", f"cannot update {p!r}") for p in bad]
    if not paths:
        violations.append(FieldViolation("update_mask", "name at least one field"))
    if "assessment_name" in paths:
        violations += v.assessment_name_violations(request.result.assessment_name)
    if "raw_responses" in paths:
        violations += v.raw_responses_violations(
            request.result.raw_responses, "result.raw_responses"
        )
    if "test_data" in paths:
        violations += v.assessment_data_violations(
            request.result.test_data, jobs.CUSTOM, "result.test_data"
        )
    if "test_result" in paths:
        violations += v.message_text_violations(request.result.test_result, "result.test_result")
    v.require_valid(violations)
    return {p: RESULT_MASK_PATHS[p](request.result) for p in paths}
