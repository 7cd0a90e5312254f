"""The AssessmentService servicer: thin, each RPC one call into ``submissions.Assessments``.

Authentication happens in the shared interceptor (users, internal callers and operators:
``assaylib.access.ACCESS``); the servicer reads the caller with ``current_principal()`` and
bounds every archive call by the caller's remaining deadline. Domain errors become gRPC
statuses in the shared error interceptor.
"""

from __future__ import annotations

import grpc
import grpc.aio

from assay.assessment.v1 import assessment_service_pb2 as pb
from assay.assessment.v1 import assessment_service_pb2_grpc as pb_grpc
from assaylib.auth import current_principal
from assessment_svc.archive_client import Budget
from assessment_svc.submissions import Assessments

__all__ = ["SERVICE_NAME", "AssessmentServicer"]

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["AssessmentService"].full_name

Context = grpc.aio.ServicerContext[object, object]


class AssessmentServicer(pb_grpc.AssessmentServiceServicer):
    """gRPC front of the assessment service."""

    def __init__(self, assessments: Assessments) -> None:
        self.assessments = assessments

    async def SubmitAssessment(
        self, request: pb.SubmitAssessmentRequest, context: Context
    ) -> pb.SubmitAssessmentResponse:
        """Validate, charge and queue an assessment for the caller."""
        return await self.assessments.submit(current_principal(), request, Budget.of(context))

    async def SubmitAssessments(
        self, request: pb.SubmitAssessmentsRequest, context: Context
    ) -> pb.SubmitAssessmentsResponse:
        """Validate every submission, then charge, record and queue all of them, or none."""
        return await self.assessments.submit_many(current_principal(), request, Budget.of(context))

    async def GetJob(self, request: pb.GetJobRequest, context: Context) -> pb.GetJobResponse:
        """Return one of the caller's jobs."""
        job = await self.assessments.get_job(
            current_principal(), request.job_id, Budget.of(context)
        )
        return pb.GetJobResponse(job=job)

    async def ListJobs(self, request: pb.ListJobsRequest, context: Context) -> pb.ListJobsResponse:
        """List the caller's jobs, newest first."""
        return await self.assessments.list_jobs(current_principal(), request, Budget.of(context))

    async def GetResult(
        self, request: pb.GetResultRequest, context: Context
    ) -> pb.GetResultResponse:
        """Return one of the caller's result rows, by result_id or job_id."""
        result = await self.assessments.get_result(current_principal(), request, Budget.of(context))
        return pb.GetResultResponse(result=result)

    async def CancelJob(
        self, request: pb.CancelJobRequest, context: Context
    ) -> pb.CancelJobResponse:
        """Cancel one of the caller's jobs."""
        job = await self.assessments.cancel(current_principal(), request.job_id, Budget.of(context))
        return pb.CancelJobResponse(job=job)

    async def RetryJob(self, request: pb.RetryJobRequest, context: Context) -> pb.RetryJobResponse:
        """Re-queue one of the caller's failed jobs, charging again."""
        return await self.assessments.retry(current_principal(), request.job_id, Budget.of(context))

    async def GetTokenBalance(
        self, request: pb.GetTokenBalanceRequest, context: Context
    ) -> pb.GetTokenBalanceResponse:
        """Return the caller's token balance (operators: any user's)."""
        return await self.assessments.balance(
            current_principal(), request.user_id, Budget.of(context)
        )
