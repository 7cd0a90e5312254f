"""The worker's batch RPCs: many jobs in one statement, each fenced on its own, outcomes in
request order — and overlapping batches racing never start or report a job twice."""

from __future__ import annotations

import asyncio
import time
import uuid

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from assay.archive.v1 import archive_service_pb2 as pb
from assay.common.v1 import job_pb2
from assaylib.errors import error_from_parts
from tests.archive.helpers import (
    Client,
    check_invariants,
    expect_error,
    profile,
    talent_data,
)


def error_of(item: pb.ItemError) -> tuple[grpc.StatusCode, str]:
    error = error_from_parts(item.code, item.message, item.reason, item.metadata)
    return error.code, error.reason


async def jobs(client: Client, count: int) -> list[job_pb2.Job]:
    await client.grant("alice", count)
    return [await client.submit() for _ in range(count)]


async def test_start_jobs_starts_each_and_explains_each_refusal(
    archive_stub, database: str
) -> None:
    client = Client(archive_stub)
    fresh = await jobs(client, 3)
    (last,) = await jobs(client, 1)
    done = await client.complete(await client.start(last))
    starts = [pb.StartJobRequest(job_id=j.job_id, worker_id="w1") for j in fresh]
    starts += [
        pb.StartJobRequest(job_id=str(uuid.uuid4()), worker_id="w1"),
        pb.StartJobRequest(job_id="not-a-uuid", worker_id="w1"),
        pb.StartJobRequest(job_id=done.job_id, worker_id="w1"),
    ]

    reply = await archive_stub.StartJobs(pb.StartJobsRequest(starts=starts))

    kinds = [o.WhichOneof("outcome") for o in reply.outcomes]
    assert kinds == ["started"] * 3 + ["error"] * 3
    for outcome, job in zip(reply.outcomes[:3], fresh, strict=True):
        started = outcome.started.job
        assert (started.job_id, started.status, started.attempt) == (
            job.job_id,
            job_pb2.JOB_STATUS_PROCESSING,
            1,
        )
        assert outcome.started.lease_expires_at.seconds > 0
    assert [error_of(o.error) for o in reply.outcomes[3:]] == [
        (grpc.StatusCode.NOT_FOUND, "NOT_FOUND"),
        (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT"),
        (grpc.StatusCode.FAILED_PRECONDITION, "INVALID_TRANSITION"),
    ]
    assert reply.outcomes[5].error.metadata["status"] == "COMPLETED"
    await check_invariants(database)


async def test_report_jobs_applies_each_report_fenced_by_its_attempt(
    archive_stub, database: str
) -> None:
    client = Client(archive_stub)
    started = [await client.start(job) for job in await jobs(client, 4)]
    cancelling = started[2]
    await client.cancel(cancelling)
    stale = started[3]
    reports = [
        pb.JobReport(
            complete=pb.CompleteJobRequest(
                job_id=started[0].job_id, worker_id="w1", attempt=1, test_result=profile()
            )
        ),
        pb.JobReport(
            fail=pb.FailJobRequest(
                job_id=started[1].job_id, worker_id="w1", attempt=1, error_code="BROKEN"
            )
        ),
        pb.JobReport(
            cancelled=pb.CancelJobRequest(job_id=cancelling.job_id, worker_id="w1", attempt=1)
        ),
        pb.JobReport(
            complete=pb.CompleteJobRequest(
                job_id=stale.job_id, worker_id="w1", attempt=7, test_result=profile()
            )
        ),
        pb.JobReport(),
    ]

    reply = await archive_stub.ReportJobs(pb.ReportJobsRequest(reports=reports))

    statuses = [o.job.status for o in reply.outcomes[:3]]
    assert statuses == [
        job_pb2.JOB_STATUS_COMPLETED,
        job_pb2.JOB_STATUS_FAILED,
        job_pb2.JOB_STATUS_CANCELLED,
    ]
    assert error_of(reply.outcomes[3].error) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "INVALID_TRANSITION",
    )
    assert error_of(reply.outcomes[4].error)[0] == grpc.StatusCode.INVALID_ARGUMENT
    assert (await client.get(stale.job_id)).status == job_pb2.JOB_STATUS_PROCESSING
    counts = await check_invariants(database)
    assert counts["jobs"] == 4


async def test_heartbeats_extend_held_leases_and_say_which_are_lost(
    archive_stub, database: str
) -> None:
    client = Client(archive_stub)
    held, cancelling = [await client.start(job) for job in await jobs(client, 2)]
    await client.cancel(cancelling)
    beats = [
        pb.HeartbeatRequest(job_id=held.job_id, worker_id="w1", attempt=1),
        pb.HeartbeatRequest(job_id=cancelling.job_id, worker_id="w1", attempt=1),
        pb.HeartbeatRequest(job_id=str(uuid.uuid4()), worker_id="w9", attempt=1),
    ]

    reply = await archive_stub.Heartbeats(pb.HeartbeatsRequest(heartbeats=beats))

    assert [(r.cancel_requested, r.lease_lost) for r in reply.replies] == [
        (False, False),
        (True, False),
        (False, True),
    ]
    assert reply.replies[0].lease_expires_at.seconds > 0


async def test_overlapping_batches_start_each_job_once(archive_stub, database: str) -> None:
    client = Client(archive_stub)
    queued = await jobs(client, 20)

    async def start_all(worker: str) -> pb.StartJobsResponse:
        starts = [pb.StartJobRequest(job_id=j.job_id, worker_id=worker) for j in queued]
        reply: pb.StartJobsResponse = await archive_stub.StartJobs(
            pb.StartJobsRequest(starts=list(reversed(starts)) if worker == "w2" else starts)
        )
        return reply

    replies = await asyncio.gather(*(start_all(f"w{n}") for n in range(1, 5)))

    started = [o.started.job.job_id for r in replies for o in r.outcomes if o.HasField("started")]
    assert sorted(started) == sorted(j.job_id for j in queued), "each job started exactly once"
    refused = [o.error for r in replies for o in r.outcomes if o.HasField("error")]
    assert len(refused) == 3 * 20
    assert {e.metadata["status"] for e in refused} == {"PROCESSING"}
    await check_invariants(database)


async def test_create_submissions_charges_refuses_and_replays_each_on_its_own(
    archive_stub, database: str
) -> None:
    client = Client(archive_stub)
    await client.grant("alice", 2)
    await client.grant("bob", 5)
    first = await client.submit("bob", request_id="r-1")
    submissions = [
        pb.CreateSubmissionRequest(user_id="alice", assessment_data=talent_data()),
        pb.CreateSubmissionRequest(user_id="bob", assessment_data=talent_data(), request_id="r-1"),
        pb.CreateSubmissionRequest(user_id="alice", assessment_data=talent_data()),
        pb.CreateSubmissionRequest(user_id="alice", assessment_data=talent_data()),  # no tokens
        pb.CreateSubmissionRequest(user_id="", assessment_data=talent_data()),
        pb.CreateSubmissionRequest(user_id="carol", assessment_data=talent_data()),
    ]

    reply = await archive_stub.CreateSubmissions(
        pb.CreateSubmissionsRequest(submissions=submissions)
    )

    kinds = [o.WhichOneof("outcome") for o in reply.outcomes]
    assert kinds == ["created", "created", "created", "error", "error", "error"]
    assert reply.outcomes[1].created.replayed and reply.outcomes[1].created.job.job_id == (
        first.job_id
    )
    balances = sorted(o.created.tokens_remaining for o in (reply.outcomes[0], reply.outcomes[2]))
    assert balances == [0, 1]
    assert [error_of(o.error)[1] for o in reply.outcomes[3:]] == [
        "INSUFFICIENT_TOKENS",
        "INVALID_ARGUMENT",
        "INSUFFICIENT_TOKENS",
    ]
    assert await client.balance("alice") == 0 and await client.balance("bob") == 4
    counts = await check_invariants(database)
    assert counts["jobs"] == 3


async def test_a_submission_past_its_deadline_writes_nothing(archive_stub, database: str) -> None:
    client = Client(archive_stub)
    await client.grant("alice", 5)
    past, future = Timestamp(), Timestamp()
    past.FromNanoseconds(time.time_ns() - 1_000_000_000)  # its caller gave up a second ago
    future.FromNanoseconds(time.time_ns() + 60_000_000_000)
    submissions = [
        pb.CreateSubmissionRequest(user_id="alice", assessment_data=talent_data(), deadline=past),
        pb.CreateSubmissionRequest(user_id="alice", assessment_data=talent_data(), deadline=future),
        pb.CreateSubmissionRequest(user_id="alice", assessment_data=talent_data()),
    ]

    reply = await archive_stub.CreateSubmissions(
        pb.CreateSubmissionsRequest(submissions=submissions)
    )

    kinds = [o.WhichOneof("outcome") for o in reply.outcomes]
    assert kinds == ["error", "created", "created"]
    assert error_of(reply.outcomes[0].error)[0] == grpc.StatusCode.DEADLINE_EXCEEDED
    await expect_error(
        archive_stub.CreateSubmission(submissions[0]), grpc.StatusCode.DEADLINE_EXCEEDED
    )
    assert await client.balance("alice") == 3  # two charges, none for the late ones
    counts = await check_invariants(database)
    assert counts["jobs"] == 2
