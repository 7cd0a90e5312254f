"""SubmitAssessments against the real archive: all or nothing, item-by-item validation,
replay of the whole call, a caller submitting for several users, and tiers' priorities."""

from __future__ import annotations

import grpc
import grpc.aio

from assay.archive.v1 import archive_service_pb2 as archive_pb
from assay.assessment.v1 import assessment_service_pb2 as pb
from assay.assessment.v1 import assessment_service_pb2_grpc as pb_grpc
from assaylib.auth import bearer_token_interceptors
from assaylib.config import Settings
from assaylib.errors import field_violations_of
from tests.archive.helpers import check_invariants, expect_error, snapshot
from tests.assessment.conftest import MAX_INFLIGHT, StubFactory, grant, submission
from tests.conftest import ISSUER


def batch(count: int, prefix: str = "r", **fields: str) -> pb.SubmitAssessmentsRequest:
    return pb.SubmitAssessmentsRequest(
        requests=[submission(request_id=f"{prefix}-{n}", **fields) for n in range(count)]
    )


async def test_batch_is_charged_and_recorded_whole(
    client: StubFactory, archive_stub, settings: Settings
) -> None:
    await grant(archive_stub, "alice", 10)

    reply = await client("user", "alice").SubmitAssessments(batch(MAX_INFLIGHT))

    assert len(reply.responses) == MAX_INFLIGHT and not reply.replayed
    assert [r.job.request_id for r in reply.responses] == [f"r-{n}" for n in range(MAX_INFLIGHT)]
    assert {r.tokens_remaining for r in reply.responses} == {10 - MAX_INFLIGHT}
    assert len({r.job.job_id for r in reply.responses}) == MAX_INFLIGHT
    counts = await check_invariants(settings.database_url)
    assert counts["jobs"] == MAX_INFLIGHT

    again = await client("user", "alice").SubmitAssessments(batch(MAX_INFLIGHT))

    assert again.replayed
    assert [r.job.job_id for r in again.responses] == [r.job.job_id for r in reply.responses]
    balance = await archive_stub.GetTokenBalance(archive_pb.GetTokenBalanceRequest(user_id="alice"))
    assert balance.balance == 10 - MAX_INFLIGHT


async def test_batch_the_user_cannot_pay_for_writes_nothing(
    client: StubFactory, archive_stub, settings: Settings
) -> None:
    await grant(archive_stub, "bob", 2)
    before = await snapshot(settings.database_url)

    err = await expect_error(
        client("user", "bob").SubmitAssessments(batch(3)),
        grpc.StatusCode.FAILED_PRECONDITION,
        "INSUFFICIENT_TOKENS",
    )

    assert err.metadata["index"] == "2"
    assert await snapshot(settings.database_url) == before


async def test_batch_over_the_inflight_cap_is_refused_whole(
    client: StubFactory, archive_stub, settings: Settings
) -> None:
    await grant(archive_stub, "carol", 100)
    before = await snapshot(settings.database_url)

    await expect_error(
        client("user", "carol").SubmitAssessments(batch(MAX_INFLIGHT + 1)),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "RATE_LIMITED",
    )

    assert await snapshot(settings.database_url) == before


async def test_items_are_validated_one_by_one(client: StubFactory, archive_stub) -> None:
    request = batch(4)
    request.requests[3].assessment_data.riasec.realistic = 101
    request.requests[1].request_id = ""
    request.requests[2].request_id = "r-0"

    err = await expect_error(
        client("user", "alice").SubmitAssessments(request), grpc.StatusCode.INVALID_ARGUMENT
    )

    fields = {violation.field for violation in field_violations_of(err)}
    assert fields == {
        "requests[3].assessment_data.riasec.realistic",
        "requests[1].request_id",
        "requests[2].request_id",
    }


async def test_a_reused_request_id_refuses_the_whole_call(
    client: StubFactory, archive_stub, settings: Settings
) -> None:
    await grant(archive_stub, "dave", 10)
    await client("user", "dave").SubmitAssessment(submission(request_id="r-1", locale="en"))
    before = await snapshot(settings.database_url)

    await expect_error(
        client("user", "dave").SubmitAssessments(batch(2)),
        grpc.StatusCode.ALREADY_EXISTS,
        "REQUEST_ID_REUSED",
    )

    assert await snapshot(settings.database_url) == before


async def test_a_caller_submits_for_several_users(
    client: StubFactory, archive_stub, settings: Settings
) -> None:
    students = [f"student-{n}" for n in range(5)]
    for student in students:
        await grant(archive_stub, student, 1)
    request = pb.SubmitAssessmentsRequest(
        requests=[submission(request_id="class-7b", user_id=s) for s in students]
    )

    reply = await client("service", "school-portal").SubmitAssessments(request)

    assert [r.job.user_id for r in reply.responses] == students
    assert {r.tokens_remaining for r in reply.responses} == {0}
    await check_invariants(settings.database_url)
    # A user may not submit for someone else.
    await expect_error(
        client("user", "student-0").SubmitAssessments(request),
        grpc.StatusCode.PERMISSION_DENIED,
    )


async def test_priority_from_the_token_or_the_operator_set_tier(
    assessment, archive_stub, settings: Settings
) -> None:
    for user in ("erin", "frank", "gina"):
        await grant(archive_stub, user, 5)
    await archive_stub.SetUserTier(archive_pb.SetUserTierRequest(user_id="frank", tier="premium"))

    async def submit(user: str, **claims: str) -> int:
        token = ISSUER.mint(user, ["user"], 3600.0, **claims)
        async with grpc.aio.insecure_channel(
            f"127.0.0.1:{assessment.port}", interceptors=bearer_token_interceptors(token)
        ) as channel:
            stub = pb_grpc.AssessmentServiceStub(channel)
            reply = await stub.SubmitAssessment(submission())
            stored = await archive_stub.GetJob(archive_pb.GetJobRequest(job_id=reply.job.job_id))
            assert stored.job.priority == reply.job.priority
            return reply.job.priority

    assert await submit("erin", tier="premium") == 1  # the claim
    assert await submit("frank") == 1  # the operator's setting
    assert await submit("gina") == 0  # the default tier
    assert await submit("gina", tier="gold") == 0  # a tier not configured: the default
    await archive_stub.SetUserTier(archive_pb.SetUserTierRequest(user_id="frank", tier=""))
    assert await submit("frank") == 0
    await expect_error(
        archive_stub.SetUserTier(archive_pb.SetUserTierRequest(user_id="frank", tier="gold")),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
