from __future__ import annotations

from assay.archive.v1 import archive_service_pb2 as pb
from tests.archive.helpers import talent_data


async def test_submission_round_trip(archive_stub) -> None:
    await archive_stub.GrantTokens(pb.GrantTokensRequest(user_id="alice", amount=3, reason="t"))
    reply = await archive_stub.CreateSubmission(
        pb.CreateSubmissionRequest(user_id="alice", assessment_data=talent_data())
    )
    assert reply.tokens_remaining == 2
    job = (await archive_stub.GetJob(pb.GetJobRequest(job_id=reply.job.job_id))).job
    assert job.result_id == reply.job.result_id
