"""SubmitAssessment against the real archive: accepted, refused before anything is written,
idempotent, charged once, limited."""

from __future__ import annotations

import grpc
import pytest
from prometheus_client import REGISTRY

from assay.archive.v1 import archive_service_pb2 as archive_pb
from assay.assessment.v1 import assessment_service_pb2 as pb
from assay.common.v1 import assessment_pb2, job_pb2
from assaylib.config import Settings
from assaylib.errors import field_violations_of
from assaylib.jobs import DEFAULT_ASSESSMENT, IQ_TEST
from tests.archive.helpers import check_invariants, expect_error, snapshot, talent_data
from tests.assessment.conftest import (
    MAX_INFLIGHT,
    grant,
    ledger,
    submission,
)

QUEUED = job_pb2.JOB_STATUS_QUEUED
DATA = "assessment_data"


def submissions_count(outcome: str, reason: str) -> float:
    value = REGISTRY.get_sample_value(
        "assay_assessment_submissions_total", {"outcome": outcome, "reason": reason}
    )
    return value or 0.0


async def test_submit_queues_job_with_result_row_and_charges(
    client, archive_stub, settings: Settings
) -> None:
    await grant(archive_stub, "alice", 5)
    accepted_before = submissions_count("accepted", "")
    data = talent_data(42)
    raw = assessment_pb2.RawResponses()
    raw.responses["riasec"].items.add(question_id="r1", number_value=75)
    raw.responses["notes"].items.add(question_id="n1", text_value="likes puzzles")

    reply = await client("user", "alice").SubmitAssessment(
        pb.SubmitAssessmentRequest(assessment_data=data, raw_responses=raw)
    )

    job = reply.job
    assert job.status == QUEUED
    assert job.user_id == "alice"
    assert job.assessment_name == DEFAULT_ASSESSMENT
    assert job.job_id and job.result_id
    assert reply.tokens_remaining == 5 - settings.token_cost
    stored = await archive_stub.GetJob(archive_pb.GetJobRequest(job_id=job.job_id))
    assert stored.job.result_id == job.result_id and stored.job.status == QUEUED
    result = await archive_stub.GetResult(archive_pb.GetResultRequest(result_id=job.result_id))
    assert result.result.test_data == data
    assert result.result.raw_responses == raw
    assert result.result.job_id == job.job_id
    assert not result.result.HasField("test_result")
    balance = await client("user", "alice").GetTokenBalance(pb.GetTokenBalanceRequest())
    assert (balance.user_id, balance.balance) == ("alice", 5 - settings.token_cost)
    debits = [e for e in await ledger(archive_stub, "alice") if e.job_id == job.job_id]
    assert [(e.kind, e.amount) for e in debits] == [
        (archive_pb.LEDGER_ENTRY_KIND_DEBIT, -settings.token_cost)
    ]
    assert submissions_count("accepted", "") == accepted_before + 1
    counts = await check_invariants(settings.database_url)
    assert counts["jobs"] == 1 and counts["events"] == 1


def _missing(group: str, score: str) -> pb.SubmitAssessmentRequest:
    data = talent_data()
    getattr(data, group).ClearField(score)
    return submission(assessment_data=data)


def _out_of_range(group: str, score: str, value: int) -> pb.SubmitAssessmentRequest:
    data = talent_data()
    setattr(getattr(data, group), score, value)
    return submission(assessment_data=data)


def _without_group(group: str) -> pb.SubmitAssessmentRequest:
    data = talent_data()
    data.ClearField(group)  # type: ignore[arg-type]  # a group name from the cases
    return submission(assessment_data=data)


def _oversize() -> pb.SubmitAssessmentRequest:
    raw = assessment_pb2.RawResponses()
    items = raw.responses["essay"].items
    for index in range(1100):  # each text is valid (1000 chars); together they pass 1 MiB
        items.add(question_id=f"q{index}", text_value="x" * 1000)
    request = submission(raw_responses=raw)
    assert request.ByteSize() > 1024 * 1024
    return request


def _bad_raw_item() -> pb.SubmitAssessmentRequest:
    raw = assessment_pb2.RawResponses()
    raw.responses["riasec"].items.add(question_id="", number_value=101)
    raw.responses["riasec"].items.add(question_id="q2", text_value="y" * 1001)
    return submission(raw_responses=raw)


def _many_bad() -> pb.SubmitAssessmentRequest:
    data = talent_data()
    data.riasec.ClearField("social")
    data.ocean.neuroticism = 101
    data.via_is.humor = -1
    data.industry_score.teknologi = 200
    return submission(assessment_data=data, request_id="r" * 201)


INVALID = {
    "missing riasec score": (_missing("riasec", "realistic"), [f"{DATA}.riasec.realistic"]),
    "missing ocean score": (_missing("ocean", "openness"), [f"{DATA}.ocean.openness"]),
    "missing via_is score": (_missing("via_is", "spirituality"), [f"{DATA}.via_is.spirituality"]),
    "missing group": (_without_group("ocean"), [f"{DATA}.ocean"]),
    "score above 100": (_out_of_range("riasec", "artistic", 101), [f"{DATA}.riasec.artistic"]),
    "negative score": (_out_of_range("ocean", "extraversion", -5), [f"{DATA}.ocean.extraversion"]),
    "unknown name": (submission(assessment_name="Horoscope"), ["assessment_name"]),
    # The shared validation names the whole payload for the 1 MiB limit.
    "oversize": (_oversize(), [DATA]),
    "bad raw items": (
        _bad_raw_item(),
        [
            "raw_responses.responses[riasec].items[0].question_id",
            "raw_responses.responses[riasec].items[0].number_value",
            "raw_responses.responses[riasec].items[1].text_value",
        ],
    ),
    "every bad field at once": (
        _many_bad(),
        [
            f"{DATA}.riasec.social",
            f"{DATA}.ocean.neuroticism",
            f"{DATA}.via_is.humor",
            f"{DATA}.industry_score.teknologi",
            "request_id",
        ],
    ),
}


@pytest.mark.parametrize("case", list(INVALID))
async def test_invalid_submission_is_refused_and_writes_nothing(
    case: str, client, archive_stub, settings: Settings
) -> None:
    request, fields = INVALID[case]
    await grant(archive_stub, "alice", 3)
    before = await snapshot(settings.database_url)
    ledger_before = await ledger(archive_stub, "alice")
    refused_before = submissions_count("refused", "INVALID_ARGUMENT")
    alice = client("user", "alice")

    error = await expect_error(alice.SubmitAssessment(request), grpc.StatusCode.INVALID_ARGUMENT)

    assert sorted(v.field for v in field_violations_of(error)) == sorted(fields)
    assert await snapshot(settings.database_url) == before
    assert await ledger(archive_stub, "alice") == ledger_before
    assert (await alice.GetTokenBalance(pb.GetTokenBalanceRequest())).balance == 3
    assert list((await alice.ListJobs(pb.ListJobsRequest())).jobs) == []
    assert submissions_count("refused", "INVALID_ARGUMENT") == refused_before + 1


async def test_iq_test_name_is_accepted_for_the_worker_to_refuse(client, archive_stub) -> None:
    # A known name without an analyzer is valid input; the worker fails it (refunded) later.
    await grant(archive_stub, "alice", 1)
    reply = await client("user", "alice").SubmitAssessment(
        pb.SubmitAssessmentRequest(assessment_name=IQ_TEST)
    )
    assert reply.job.assessment_name == IQ_TEST and reply.job.status == QUEUED


async def test_repeat_with_same_request_id_returns_same_job_and_charges_once(
    client, archive_stub, settings: Settings
) -> None:
    await grant(archive_stub, "alice", 5)
    alice = client("user", "alice")
    replayed_before = submissions_count("replayed", "")
    first = await alice.SubmitAssessment(submission(request_id="req-1"))
    again = await alice.SubmitAssessment(submission(request_id="req-1"))

    assert again.job.job_id == first.job.job_id
    assert again.job.result_id == first.job.result_id
    assert again.tokens_remaining == first.tokens_remaining == 5 - settings.token_cost
    assert (await alice.GetTokenBalance(pb.GetTokenBalanceRequest())).balance == 4
    debits = [e for e in await ledger(archive_stub, "alice") if e.job_id]
    assert len(debits) == 1
    assert len((await alice.ListJobs(pb.ListJobsRequest())).jobs) == 1
    assert submissions_count("replayed", "") == replayed_before + 1
    # The key is per user: bob's "req-1" is his own submission.
    await grant(archive_stub, "bob", 1)
    bobs = await client("user", "bob").SubmitAssessment(submission(request_id="req-1"))
    assert bobs.job.job_id != first.job.job_id
    await check_invariants(settings.database_url)


async def test_same_request_id_with_other_payload_is_already_exists(
    client, archive_stub, settings: Settings
) -> None:
    await grant(archive_stub, "alice", 5)
    alice = client("user", "alice")
    await alice.SubmitAssessment(submission(request_id="req-2"))
    before = await snapshot(settings.database_url)

    await expect_error(
        alice.SubmitAssessment(submission(request_id="req-2", assessment_data=talent_data(9))),
        grpc.StatusCode.ALREADY_EXISTS,
    )
    assert await snapshot(settings.database_url) == before


async def test_insufficient_tokens_writes_nothing(client, archive_stub, settings: Settings) -> None:
    alice = client("user", "alice")
    before = await snapshot(settings.database_url)

    error = await expect_error(
        alice.SubmitAssessment(submission(request_id="poor")),
        grpc.StatusCode.FAILED_PRECONDITION,
        "INSUFFICIENT_TOKENS",
    )
    assert error.metadata.get("balance") == "0"
    assert await snapshot(settings.database_url) == before
    assert list((await alice.ListJobs(pb.ListJobsRequest())).jobs) == []
    # Nothing was remembered for the request_id: once funded, the same key goes through.
    await grant(archive_stub, "alice", 1)
    reply = await alice.SubmitAssessment(submission(request_id="poor"))
    assert reply.job.status == QUEUED and reply.tokens_remaining == 0


async def test_in_flight_limit_is_rate_limited(client, archive_stub, settings: Settings) -> None:
    await grant(archive_stub, "alice", MAX_INFLIGHT + 2)
    alice = client("user", "alice")
    for _ in range(MAX_INFLIGHT):
        await alice.SubmitAssessment(submission())
    before = await snapshot(settings.database_url)

    await expect_error(
        alice.SubmitAssessment(submission()),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "RATE_LIMITED",
    )
    assert await snapshot(settings.database_url) == before
    balance = (await alice.GetTokenBalance(pb.GetTokenBalanceRequest())).balance
    assert balance == 2
    # Another user is not limited by alice's jobs.
    await grant(archive_stub, "bob", 1)
    await client("user", "bob").SubmitAssessment(submission())
    await check_invariants(settings.database_url)


@pytest.mark.parametrize("role", ["operator", "service"])
async def test_privileged_callers_submit_as_themselves(role: str, client, archive_stub) -> None:
    await grant(archive_stub, f"{role}-x", 1)
    reply = await client(role, f"{role}-x").SubmitAssessment(submission())
    assert reply.job.user_id == f"{role}-x"


async def test_calls_without_a_valid_token_are_unauthenticated(client, archive_stub) -> None:
    await grant(archive_stub, "alice", 1)
    anonymous = client(None)
    await expect_error(anonymous.SubmitAssessment(submission()), grpc.StatusCode.UNAUTHENTICATED)
    await expect_error(anonymous.ListJobs(pb.ListJobsRequest()), grpc.StatusCode.UNAUTHENTICATED)
    await expect_error(
        anonymous.GetTokenBalance(pb.GetTokenBalanceRequest()), grpc.StatusCode.UNAUTHENTICATED
    )
    forged = await expect_error(
        anonymous.GetJob(
            pb.GetJobRequest(job_id="00000000-0000-0000-0000-000000000000"),
            metadata=(("authorization", "Bearer not-a-jwt"),),
        ),
        grpc.StatusCode.UNAUTHENTICATED,
    )
    assert forged.reason == "UNAUTHENTICATED"
    balance = await archive_stub.GetTokenBalance(archive_pb.GetTokenBalanceRequest(user_id="alice"))
    assert balance.balance == 1
