"""The ArchiveService servicer: thin, each RPC one call into the domain modules.

Operators reach every RPC, each of Assay's services only those of its row in
``assaylib.access.ACCESS``; users none (the auth interceptor refuses the rest).
Domain errors raised below become gRPC statuses in the shared error interceptor.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import asyncpg
import grpc

from archive_svc.access_records import AccessRecords
from archive_svc.checks import Policy
from archive_svc.erasure import Erasure
from archive_svc.imports import Imports
from archive_svc.jobs import Jobs
from archive_svc.lifecycle import Lifecycle
from archive_svc.paging import PageTokens
from archive_svc.results import Results
from archive_svc.stats import SystemStatus
from archive_svc.submissions import Submissions
from archive_svc.sweep import Sweeper
from archive_svc.tokens import Tokens
from assay.archive.v1 import archive_service_pb2 as pb
from assay.archive.v1 import archive_service_pb2_grpc as pb_grpc
from assaylib.auth import current_principal

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["ArchiveService"].full_name

Context = grpc.aio.ServicerContext[object, object]
Request = TypeVar("Request")
Response = TypeVar("Response")
Method = Callable[["ArchiveServicer", Request, Context], Awaitable[Response]]


def writes_outbox(method: Method[Request, Response]) -> Method[Request, Response]:
    """An RPC whose transactions may commit outbox rows: once it is done (whatever its
    outcome: a batch may commit before a later step fails), the relay is woken."""

    @functools.wraps(method)
    async def wrapper(self: ArchiveServicer, request: Request, context: Context) -> Response:
        try:
            return await method(self, request, context)
        finally:
            self.outbox_written()

    return wrapper


@dataclass
class Archive:
    """The archive's domain, a module per concept, over one pool."""

    submissions: Submissions
    jobs: Jobs
    results: Results
    tokens: Tokens
    lifecycle: Lifecycle
    sweeper: Sweeper
    status: SystemStatus
    erasure: Erasure
    access_records: AccessRecords
    imports: Imports

    @classmethod
    def build(cls, pool: asyncpg.Pool, dsn: str, policy: Policy, status: SystemStatus) -> Archive:
        """Wire the domain modules to one pool (``dsn`` for the sweep's own session)."""
        pages = PageTokens()
        return cls(
            Submissions(pool, policy, pages),
            Jobs(pool, policy, pages),
            Results(pool, policy, pages),
            Tokens(pool, policy, pages),
            Lifecycle(pool, policy),
            Sweeper(pool, dsn, policy, pages),
            status,
            Erasure(pool, status.jetstream, status.names),
            AccessRecords(pool, policy, pages),
            Imports(pool, policy, pages),
        )


class ArchiveServicer(pb_grpc.ArchiveServiceServicer):
    """gRPC front of the archive."""

    def __init__(self, archive: Archive, outbox_written: Callable[[], None]) -> None:
        self.archive = archive
        self.outbox_written = outbox_written  # RelayWake.written

    @writes_outbox
    async def CreateSubmission(
        self, request: pb.CreateSubmissionRequest, context: Context
    ) -> pb.CreateSubmissionResponse:
        """Charge, record and queue a submission atomically."""
        return await self.archive.submissions.create_submission(request)

    async def GetJob(self, request: pb.GetJobRequest, context: Context) -> pb.GetJobResponse:
        """Return one job."""
        return pb.GetJobResponse(
            job=await self.archive.jobs.get_job(request.job_id, request.user_id)
        )

    async def ListJobs(self, request: pb.ListJobsRequest, context: Context) -> pb.ListJobsResponse:
        """List jobs, newest first."""
        return await self.archive.jobs.list_jobs(request)

    async def GetResult(
        self, request: pb.GetResultRequest, context: Context
    ) -> pb.GetResultResponse:
        """Return one result row (recorded when its reader is not its owner)."""
        return pb.GetResultResponse(
            result=await self.archive.results.get_result(request, current_principal())
        )

    async def ListResults(
        self, request: pb.ListResultsRequest, context: Context
    ) -> pb.ListResultsResponse:
        """List result rows, newest first (each recorded unless its reader owns it)."""
        return await self.archive.results.list_results(request, current_principal())

    async def UpdateResult(
        self, request: pb.UpdateResultRequest, context: Context
    ) -> pb.UpdateResultResponse:
        """Update the masked fields of a result row (recorded as a read: it returns it)."""
        return pb.UpdateResultResponse(
            result=await self.archive.results.update_result(request, current_principal())
        )

    async def CreateResult(
        self, request: pb.CreateResultRequest, context: Context
    ) -> pb.CreateResultResponse:
        """Create the result row of a legacy job."""
        return pb.CreateResultResponse(result=await self.archive.results.create_result(request))

    @writes_outbox
    async def StartJob(self, request: pb.StartJobRequest, context: Context) -> pb.StartJobResponse:
        """Begin or take over an attempt."""
        return await self.archive.lifecycle.start(request)

    async def Heartbeat(
        self, request: pb.HeartbeatRequest, context: Context
    ) -> pb.HeartbeatResponse:
        """Extend the current attempt's lease."""
        return await self.archive.lifecycle.heartbeat(request)

    @writes_outbox
    async def CompleteJob(
        self, request: pb.CompleteJobRequest, context: Context
    ) -> pb.CompleteJobResponse:
        """Store the profile and complete the job."""
        return pb.CompleteJobResponse(job=await self.archive.lifecycle.report(request))

    @writes_outbox
    async def FailJob(self, request: pb.FailJobRequest, context: Context) -> pb.FailJobResponse:
        """Fail the job and refund it."""
        return pb.FailJobResponse(job=await self.archive.lifecycle.report(request))

    @writes_outbox
    async def CancelJob(
        self, request: pb.CancelJobRequest, context: Context
    ) -> pb.CancelJobResponse:
        """Cancel the job, or ask its worker to stop."""
        return pb.CancelJobResponse(job=await self.archive.lifecycle.cancel(request))

    @writes_outbox
    async def RetryJob(self, request: pb.RetryJobRequest, context: Context) -> pb.RetryJobResponse:
        """Re-queue a failed job, charging again."""
        return await self.archive.lifecycle.retry(request)

    async def ListStuckJobs(
        self, request: pb.ListStuckJobsRequest, context: Context
    ) -> pb.ListStuckJobsResponse:
        """List stuck jobs."""
        return await self.archive.sweeper.list_stuck(request)

    @writes_outbox
    async def SweepStuckJobs(
        self, request: pb.SweepStuckJobsRequest, context: Context
    ) -> pb.SweepStuckJobsResponse:
        """Fail stuck jobs and refund them."""
        return await self.archive.sweeper.sweep(request)

    async def GetTokenBalance(
        self, request: pb.GetTokenBalanceRequest, context: Context
    ) -> pb.GetTokenBalanceResponse:
        """Return a user's balance."""
        balance = await self.archive.tokens.balance(request.user_id)
        return pb.GetTokenBalanceResponse(user_id=request.user_id, balance=balance)

    async def GrantTokens(
        self, request: pb.GrantTokensRequest, context: Context
    ) -> pb.GrantTokensResponse:
        """Credit a user's balance."""
        return await self.archive.tokens.grant(request)

    @writes_outbox
    async def CreateSubmissions(
        self, request: pb.CreateSubmissionsRequest, context: Context
    ) -> pb.CreateSubmissionsResponse:
        """Charge, record and queue many submissions in one transaction."""
        return await self.archive.submissions.create_submissions(request)

    @writes_outbox
    async def StartJobs(
        self, request: pb.StartJobsRequest, context: Context
    ) -> pb.StartJobsResponse:
        """Begin or take over many attempts in one transaction."""
        return await self.archive.lifecycle.start_many(request)

    @writes_outbox
    async def ReportJobs(
        self, request: pb.ReportJobsRequest, context: Context
    ) -> pb.ReportJobsResponse:
        """Report the end of many attempts in one transaction."""
        return await self.archive.lifecycle.report_many(request)

    async def Heartbeats(
        self, request: pb.HeartbeatsRequest, context: Context
    ) -> pb.HeartbeatsResponse:
        """Extend many leases in one statement."""
        return await self.archive.lifecycle.heartbeat_many(request)

    async def ListLedgerEntries(
        self, request: pb.ListLedgerEntriesRequest, context: Context
    ) -> pb.ListLedgerEntriesResponse:
        """List ledger entries, newest first."""
        return await self.archive.tokens.ledger(request)

    async def GetSystemStatus(
        self, request: pb.GetSystemStatusRequest, context: Context
    ) -> pb.GetSystemStatusResponse:
        """The whole system's status for operators."""
        return await self.archive.status.read()

    @writes_outbox
    async def EraseUserData(
        self, request: pb.EraseUserDataRequest, context: Context
    ) -> pb.EraseUserDataResponse:
        """Erase a user's assessment data, raw responses and profiles (operators only)."""
        return await self.archive.erasure.erase_user(request)

    async def ListAccessRecords(
        self, request: pb.ListAccessRecordsRequest, context: Context
    ) -> pb.ListAccessRecordsResponse:
        """List the recorded reads of users' data by others, newest first."""
        return await self.archive.access_records.list_records(request)

    async def SetUserTier(
        self, request: pb.SetUserTierRequest, context: Context
    ) -> pb.SetUserTierResponse:
        """Record a user's tier (operators only)."""
        return await self.archive.tokens.set_tier(request)

    @writes_outbox
    async def ImportOriginalJobs(
        self, request: pb.ImportOriginalJobsRequest, context: Context
    ) -> pb.ImportOriginalJobsResponse:
        """Import a batch of the original system's jobs, results and balances (operators
        only), in one transaction, idempotent per original id."""
        return await self.archive.imports.import_jobs(request)

    async def BatchGetImportedJobs(
        self, request: pb.BatchGetImportedJobsRequest, context: Context
    ) -> pb.BatchGetImportedJobsResponse:
        """What the import made of original jobs and balances (operators only)."""
        return await self.archive.imports.batch_get(request)
