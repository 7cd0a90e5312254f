"""Reading jobs: one, or a page, scoped to an owner."""

from __future__ import annotations

import datetime as dt
import uuid

from archive_svc import convert, store
from archive_svc.checks import ArchivePart, check_owner, owner_violations, parse_uuid
from archive_svc.paging import page_limit
from assay.archive.v1 import archive_service_pb2 as pb
from assay.common.v1 import job_pb2
from assaylib import validation as v
from assaylib.errors import FieldViolation, InvalidArgument


class Jobs(ArchivePart):
    """GetJob and ListJobs."""

    async def get_job(self, job_id: str, owner: str) -> job_pb2.Job:
        """One job, scoped to owner when given."""
        v.require_valid(owner_violations(owner))
        ident = parse_uuid(job_id, "job_id")
        row = await store.get_job(self.pool, ident)
        return convert.job_to_proto(check_owner(row, owner, "job", job_id))

    async def list_jobs(self, request: pb.ListJobsRequest) -> pb.ListJobsResponse:
        """A page of jobs, newest first."""
        limit = page_limit(request.page_size)
        v.require_valid(owner_violations(request.user_id))
        status = convert.PROTO_TO_STATUS.get(request.status)
        if request.status and status is None:
            raise InvalidArgument([FieldViolation("status", "unknown status")])
        scope = f"jobs\0{request.user_id}\0{status}"
        after = self.pages.decode(request.page_token, scope, (dt.datetime, uuid.UUID))
        rows = await store.jobs_page(self.pool, request.user_id, status, after, limit + 1)
        page, token = self.pages.page(rows, limit, scope, lambda r: (r["created_at"], r["job_id"]))
        return pb.ListJobsResponse(
            jobs=[convert.job_to_proto(r) for r in page], next_page_token=token
        )
