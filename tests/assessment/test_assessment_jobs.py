"""Reads, cancel and retry through the assessment service: ownership (§6), operators,
refunds and re-charges, and bad ids refused as INVALID_ARGUMENT."""

from __future__ import annotations

import uuid

import grpc
import pytest

from assay.archive.v1 import archive_service_pb2 as archive_pb
from assay.assessment.v1 import assessment_service_pb2 as pb
from assay.common.v1 import job_pb2
from assaylib.config import Settings
from assaylib.errors import field_violations_of
from tests.archive.helpers import check_invariants, expect_error, snapshot, talent_data
from tests.assessment.conftest import grant, ledger, submission

NOT_FOUND = grpc.StatusCode.NOT_FOUND
INVALID = grpc.StatusCode.INVALID_ARGUMENT


async def submit_as(client, archive_stub, user: str, tokens: int = 3) -> job_pb2.Job:
    await grant(archive_stub, user, tokens)
    reply: pb.SubmitAssessmentResponse = await client("user", user).SubmitAssessment(submission())
    return reply.job


async def test_owner_reads_own_job_and_result(client, archive_stub) -> None:
    job = await submit_as(client, archive_stub, "alice")
    alice = client("user", "alice")

    got = (await alice.GetJob(pb.GetJobRequest(job_id=job.job_id))).job
    assert got.job_id == job.job_id and got.status == job_pb2.JOB_STATUS_QUEUED
    by_result = (await alice.GetResult(pb.GetResultRequest(result_id=job.result_id))).result
    by_job = (await alice.GetResult(pb.GetResultRequest(job_id=job.job_id))).result
    assert by_result == by_job
    assert by_result.result_id == job.result_id and by_result.job_id == job.job_id
    assert by_result.test_data == talent_data()


async def test_other_users_cannot_see_or_touch_a_job(
    client, archive_stub, settings: Settings
) -> None:
    job = await submit_as(client, archive_stub, "alice")
    await archive_stub.FailJob(
        archive_pb.FailJobRequest(job_id=job.job_id, error_code="BROKEN", error_message="x")
    )
    await grant(archive_stub, "bob", 5)
    bob = client("user", "bob")
    before = await snapshot(settings.database_url)

    for call in (
        bob.GetJob(pb.GetJobRequest(job_id=job.job_id)),
        bob.GetResult(pb.GetResultRequest(result_id=job.result_id)),
        bob.GetResult(pb.GetResultRequest(job_id=job.job_id)),
        bob.CancelJob(pb.CancelJobRequest(job_id=job.job_id)),
        bob.RetryJob(pb.RetryJobRequest(job_id=job.job_id)),
    ):
        error = await expect_error(call, NOT_FOUND)
        assert "alice" not in error.message
    # A job that exists and one that does not look the same to bob.
    missing = await expect_error(bob.GetJob(pb.GetJobRequest(job_id=str(uuid.uuid4()))), NOT_FOUND)
    assert missing.reason == "NOT_FOUND"
    assert list((await bob.ListJobs(pb.ListJobsRequest())).jobs) == []
    await expect_error(
        bob.ListJobs(pb.ListJobsRequest(user_id="alice")), grpc.StatusCode.PERMISSION_DENIED
    )
    await expect_error(
        bob.GetTokenBalance(pb.GetTokenBalanceRequest(user_id="alice")),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    assert await snapshot(settings.database_url) == before
    # Naming oneself is fine.
    own = await bob.GetTokenBalance(pb.GetTokenBalanceRequest(user_id="bob"))
    assert (own.user_id, own.balance) == ("bob", 5)


@pytest.mark.parametrize("role", ["operator", "service"])
async def test_privileged_callers_reach_every_user(role: str, client, archive_stub) -> None:
    alices = await submit_as(client, archive_stub, "alice")
    bobs = await submit_as(client, archive_stub, "bob")
    admin = client(role, "admin")

    assert (await admin.GetJob(pb.GetJobRequest(job_id=alices.job_id))).job.user_id == "alice"
    result = (await admin.GetResult(pb.GetResultRequest(job_id=bobs.job_id))).result
    assert result.user_id == "bob"
    everyone = (await admin.ListJobs(pb.ListJobsRequest())).jobs
    assert {j.job_id for j in everyone} == {alices.job_id, bobs.job_id}
    only_bob = (await admin.ListJobs(pb.ListJobsRequest(user_id="bob"))).jobs
    assert [j.job_id for j in only_bob] == [bobs.job_id]
    balance = await admin.GetTokenBalance(pb.GetTokenBalanceRequest(user_id="alice"))
    assert (balance.user_id, balance.balance) == ("alice", 2)
    cancelled = (await admin.CancelJob(pb.CancelJobRequest(job_id=alices.job_id))).job
    assert cancelled.status == job_pb2.JOB_STATUS_CANCELLED


async def test_list_jobs_filters_pages_and_scopes(client, archive_stub) -> None:
    await grant(archive_stub, "alice", 3)
    alice = client("user", "alice")
    jobs = [(await alice.SubmitAssessment(submission())).job for _ in range(3)]
    await alice.CancelJob(pb.CancelJobRequest(job_id=jobs[0].job_id))
    await submit_as(client, archive_stub, "bob")

    seen: list[str] = []
    page_token = ""
    while True:
        page = await alice.ListJobs(pb.ListJobsRequest(page_size=2, page_token=page_token))
        assert len(page.jobs) <= 2
        seen += [j.job_id for j in page.jobs]
        page_token = page.next_page_token
        if not page_token:
            break
    assert seen == [j.job_id for j in reversed(jobs)]  # newest first, only alice's
    queued = await alice.ListJobs(pb.ListJobsRequest(status=job_pb2.JOB_STATUS_QUEUED))
    assert {j.job_id for j in queued.jobs} == {jobs[1].job_id, jobs[2].job_id}


async def test_cancel_queued_job_refunds_once(client, archive_stub, settings: Settings) -> None:
    job = await submit_as(client, archive_stub, "alice", tokens=2)
    alice = client("user", "alice")

    cancelled = (await alice.CancelJob(pb.CancelJobRequest(job_id=job.job_id))).job
    assert cancelled.status == job_pb2.JOB_STATUS_CANCELLED
    assert (await alice.GetTokenBalance(pb.GetTokenBalanceRequest())).balance == 2
    await expect_error(
        alice.CancelJob(pb.CancelJobRequest(job_id=job.job_id)),
        grpc.StatusCode.FAILED_PRECONDITION,
        "INVALID_TRANSITION",
    )
    kinds = [e.kind for e in await ledger(archive_stub, "alice") if e.job_id == job.job_id]
    assert sorted(kinds) == [
        archive_pb.LEDGER_ENTRY_KIND_DEBIT,
        archive_pb.LEDGER_ENTRY_KIND_REFUND,
    ]
    assert (await alice.GetTokenBalance(pb.GetTokenBalanceRequest())).balance == 2
    await check_invariants(settings.database_url)


async def test_cancel_processing_job_asks_the_worker(
    client, archive_stub, settings: Settings
) -> None:
    job = await submit_as(client, archive_stub, "alice", tokens=1)
    await archive_stub.StartJob(archive_pb.StartJobRequest(job_id=job.job_id, worker_id="w1"))
    alice = client("user", "alice")

    asked = (await alice.CancelJob(pb.CancelJobRequest(job_id=job.job_id))).job

    assert asked.status == job_pb2.JOB_STATUS_PROCESSING and asked.cancel_requested
    assert (await alice.GetTokenBalance(pb.GetTokenBalanceRequest())).balance == 0
    beat = await archive_stub.Heartbeat(
        archive_pb.HeartbeatRequest(job_id=job.job_id, worker_id="w1", attempt=1)
    )
    assert beat.cancel_requested
    await check_invariants(settings.database_url)


async def test_retry_after_failure_requeues_and_charges_again(
    client, archive_stub, settings: Settings
) -> None:
    job = await submit_as(client, archive_stub, "alice", tokens=2)
    alice = client("user", "alice")
    await expect_error(
        alice.RetryJob(pb.RetryJobRequest(job_id=job.job_id)),
        grpc.StatusCode.FAILED_PRECONDITION,
        "INVALID_TRANSITION",
    )
    failed = await archive_stub.FailJob(
        archive_pb.FailJobRequest(job_id=job.job_id, error_code="BROKEN", error_message="x")
    )
    assert failed.job.status == job_pb2.JOB_STATUS_FAILED
    assert (await alice.GetTokenBalance(pb.GetTokenBalanceRequest())).balance == 2

    retried = await alice.RetryJob(pb.RetryJobRequest(job_id=job.job_id))

    assert retried.job.status == job_pb2.JOB_STATUS_QUEUED
    assert retried.job.job_id == job.job_id and retried.job.result_id == job.result_id
    assert retried.job.charge_count == 2
    assert retried.tokens_remaining == 2 - settings.token_cost
    assert (await alice.GetTokenBalance(pb.GetTokenBalanceRequest())).balance == 1
    await check_invariants(settings.database_url)


async def test_retry_respects_balance_and_in_flight_limit(client, archive_stub) -> None:
    job = await submit_as(client, archive_stub, "alice", tokens=1)
    alice = client("user", "alice")
    await archive_stub.FailJob(
        archive_pb.FailJobRequest(job_id=job.job_id, error_code="BROKEN", error_message="x")
    )
    await alice.SubmitAssessment(submission())  # spends the refunded token
    await expect_error(
        alice.RetryJob(pb.RetryJobRequest(job_id=job.job_id)),
        grpc.StatusCode.FAILED_PRECONDITION,
        "INSUFFICIENT_TOKENS",
    )
    await grant(archive_stub, "alice", 5)
    await alice.SubmitAssessment(submission())
    await alice.SubmitAssessment(submission())  # three in flight now: the limit
    await expect_error(
        alice.RetryJob(pb.RetryJobRequest(job_id=job.job_id)),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "RATE_LIMITED",
    )
    stored = (await alice.GetJob(pb.GetJobRequest(job_id=job.job_id))).job
    assert stored.status == job_pb2.JOB_STATUS_FAILED and stored.charge_count == 1


BAD_IDS = {
    "GetJob empty": ("GetJob", pb.GetJobRequest(), "job_id"),
    "GetJob not a uuid": ("GetJob", pb.GetJobRequest(job_id="nope"), "job_id"),
    "CancelJob not a uuid": ("CancelJob", pb.CancelJobRequest(job_id="1; drop"), "job_id"),
    "RetryJob empty": ("RetryJob", pb.RetryJobRequest(), "job_id"),
    "GetResult neither id": ("GetResult", pb.GetResultRequest(), "result_id"),
    "GetResult bad result_id": ("GetResult", pb.GetResultRequest(result_id="x"), "result_id"),
    "GetResult bad job_id": ("GetResult", pb.GetResultRequest(job_id="x"), "job_id"),
    "GetResult both ids": (
        "GetResult",
        pb.GetResultRequest(result_id=str(uuid.uuid4()), job_id=str(uuid.uuid4())),
        "job_id",
    ),
    "ListJobs page size": ("ListJobs", pb.ListJobsRequest(page_size=-1), "page_size"),
    "ListJobs status": ("ListJobs", pb.ListJobsRequest(status=99), "status"),  # type: ignore[arg-type]
    "ListJobs page token": ("ListJobs", pb.ListJobsRequest(page_token="garbage"), "page_token"),
    "ListJobs user id": ("ListJobs", pb.ListJobsRequest(user_id="x" * 201), "user_id"),
    "GetTokenBalance user id": (
        "GetTokenBalance",
        pb.GetTokenBalanceRequest(user_id="bad\nid"),
        "user_id",
    ),
}


@pytest.mark.parametrize("case", list(BAD_IDS))
async def test_bad_ids_are_invalid_argument(case: str, client) -> None:
    method, request, field = BAD_IDS[case]
    operator = client("operator", "admin")  # the broadest caller still gets field violations
    error = await expect_error(getattr(operator, method)(request), INVALID)
    assert [v.field for v in field_violations_of(error)] == [field]
