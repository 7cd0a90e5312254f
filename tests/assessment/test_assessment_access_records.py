"""Reads through the assessment service and the archive's access record: a user reading
their own result writes nothing; an operator or an internal caller reading someone's result
is recorded under its own name, through the assessment service."""

from __future__ import annotations

import pytest

from assay.archive.v1 import archive_service_pb2 as archive_pb
from assay.assessment.v1 import assessment_service_pb2 as pb
from tests.assessment.conftest import grant, submission


async def records(archive_stub, user: str) -> list[archive_pb.AccessRecord]:
    reply = await archive_stub.ListAccessRecords(archive_pb.ListAccessRecordsRequest(user_id=user))
    return list(reply.records)


async def test_a_users_own_reads_are_not_recorded(client, archive_stub) -> None:
    await grant(archive_stub, "alice", 1)
    alice = client("user", "alice")
    job = (await alice.SubmitAssessment(submission())).job
    await alice.GetResult(pb.GetResultRequest(result_id=job.result_id))
    await alice.GetResult(pb.GetResultRequest(job_id=job.job_id))
    await alice.GetJob(pb.GetJobRequest(job_id=job.job_id))
    await alice.ListJobs(pb.ListJobsRequest())
    assert await records(archive_stub, "alice") == []


@pytest.mark.parametrize(("role", "sub"), [("operator", "ops-ann"), ("service", "crm")])
async def test_reads_of_another_users_result_are_recorded(
    client, archive_stub, role: str, sub: str
) -> None:
    await grant(archive_stub, "alice", 1)
    job = (await client("user", "alice").SubmitAssessment(submission())).job
    reader = client(role, sub)
    await reader.GetResult(pb.GetResultRequest(job_id=job.job_id))
    await reader.GetJob(pb.GetJobRequest(job_id=job.job_id))  # a job holds no assessment data
    [record] = await records(archive_stub, "alice")
    identity = "operator" if role == "operator" else "caller"
    assert (record.reader, record.reader_identity, record.via, record.rpc) == (
        sub,
        identity,
        "assessment",
        "GetResult",
    )
    assert (record.job_id, record.result_id) == (job.job_id, job.result_id)
