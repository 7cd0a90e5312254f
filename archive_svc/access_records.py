"""The access record: who read whose data, through which RPC, and when.

Every read of result bodies (GetResult, ListResults, and UpdateResult, whose reply is the whole
result) by someone other than their owner — an operator, an internal caller — writes a record
in the statement that reads them. A user's
own reads (through the assessment service, which scopes them to the user) write nothing, so
the submission path and users' reads cost nothing more. Jobs (GetJob, ListJobs) carry no
assessment data or profile, so reading them is not recorded.

The assessment service reads for its callers: it names the end reader in
``GetResultRequest.reader``, which the archive believes only from the assessment service and
operators (``assaylib.access.READER_TRUSTED``); the record then names the reader and the
service it came through (``via``).
"""

from __future__ import annotations

from archive_svc import convert, store
from archive_svc.checks import ArchivePart, owner_violations
from archive_svc.paging import page_limit
from archive_svc.store.access import Reader
from assay.archive.v1 import archive_service_pb2 as pb
from assaylib import validation as v
from assaylib.access import READER_TRUSTED, parse_reader
from assaylib.auth import Principal
from assaylib.errors import FieldViolation, InvalidArgument

__all__ = ["AccessRecords", "Reader", "reader_of"]


def reader_of(principal: Principal, named: str, owner: str) -> Reader | None:
    """Who reads, for the record; None when it is the owner (the assessment service reading
    for a user, scoped to that user). ``named`` is the request's ``reader``."""
    if named and principal.identity in READER_TRUSTED:
        parsed = parse_reader(named)
        if parsed is None:
            raise InvalidArgument(
                [FieldViolation("reader", "expected <identity>:<subject>, e.g. operator:alice")]
            )
        identity, subject = parsed
        return Reader(subject, identity, via=principal.user_id)
    if principal.identity == "assessment" and owner:
        return None
    return Reader(principal.user_id, principal.identity)


class AccessRecords(ArchivePart):
    """ListAccessRecords."""

    async def list_records(
        self, request: pb.ListAccessRecordsRequest
    ) -> pb.ListAccessRecordsResponse:
        """A page of access records, newest first, of one user or everyone's."""
        limit = page_limit(request.page_size)
        v.require_valid(owner_violations(request.user_id))
        scope = f"access\0{request.user_id}"
        after = self.pages.decode(request.page_token, scope, (int,))
        before = after[0] if after else None
        rows = await store.access_records_page(self.pool, request.user_id, before, limit + 1)
        page, token = self.pages.page(rows, limit, scope, lambda r: (r["record_id"],))
        return pb.ListAccessRecordsResponse(
            records=[convert.access_record_to_proto(r) for r in page], next_page_token=token
        )
