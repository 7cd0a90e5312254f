"""The access record: reads of result data by someone other than its owner are recorded in
the statement that reads them, users' own reads are not, ListAccessRecords is for operators
only, and the sweep prunes exactly the records older than their retention."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable

import asyncpg
import grpc
import grpc.aio
import pytest
from google.protobuf import field_mask_pb2

from archive_svc.app import ArchiveApp
from assay.archive.v1 import archive_service_pb2 as pb
from assay.archive.v1 import archive_service_pb2_grpc as pb_grpc
from assay.common.v1 import job_pb2
from assaylib.auth import bearer_token_interceptors
from tests.archive.helpers import Client, dsn, expect_error
from tests.conftest import token

Stub = Callable[[str, str], "pb_grpc.ArchiveServiceAsyncStub"]


@pytest.fixture
async def stub_as(archive: ArchiveApp) -> AsyncIterator[Stub]:
    """stub_as(role, sub) → an ArchiveService stub with that token."""
    channels: list[grpc.aio.Channel] = []

    def make(role: str, sub: str) -> pb_grpc.ArchiveServiceAsyncStub:
        channel = grpc.aio.insecure_channel(
            f"127.0.0.1:{archive.port}", interceptors=bearer_token_interceptors(token(role, sub))
        )
        channels.append(channel)
        return pb_grpc.ArchiveServiceStub(channel)

    yield make
    for channel in channels:
        await channel.close()


async def submitted(archive_stub: pb_grpc.ArchiveServiceAsyncStub, user: str) -> job_pb2.Job:
    jobs = Client(archive_stub)
    await jobs.grant(user, 1)
    return await jobs.submit(user)


async def records(
    archive_stub: pb_grpc.ArchiveServiceAsyncStub, user: str = ""
) -> list[pb.AccessRecord]:
    reply = await archive_stub.ListAccessRecords(pb.ListAccessRecordsRequest(user_id=user))
    return list(reply.records)


async def test_an_operators_read_is_recorded(archive_stub, stub_as: Stub) -> None:
    job = await submitted(archive_stub, "alice")
    ops = stub_as("operator", "ops-ann")
    await ops.GetResult(pb.GetResultRequest(result_id=job.result_id))
    [record] = await records(archive_stub, "alice")
    assert (record.user_id, record.reader, record.reader_identity, record.via, record.rpc) == (
        "alice",
        "ops-ann",
        "operator",
        "",
        "GetResult",
    )
    assert (record.job_id, record.result_id) == (job.job_id, job.result_id)
    assert record.read_at.seconds > 0


async def test_the_assessment_service_reading_for_its_user_is_not_recorded(
    archive_stub, stub_as: Stub
) -> None:
    job = await submitted(archive_stub, "alice")
    assessment = stub_as("service", "assessment")
    reply = await assessment.GetResult(
        pb.GetResultRequest(result_id=job.result_id, user_id="alice")
    )
    assert reply.result.user_id == "alice"
    assert await records(archive_stub) == []


async def test_the_assessment_service_names_the_end_reader(archive_stub, stub_as: Stub) -> None:
    job = await submitted(archive_stub, "alice")
    assessment = stub_as("service", "assessment")
    await assessment.GetResult(pb.GetResultRequest(result_id=job.result_id, reader="caller:crm"))
    # Without a reader and without an owner, the assessment service itself is the reader.
    await assessment.GetResult(pb.GetResultRequest(result_id=job.result_id))
    newest, oldest = await records(archive_stub, "alice")
    assert (oldest.reader, oldest.reader_identity, oldest.via) == ("crm", "caller", "assessment")
    assert (newest.reader, newest.reader_identity, newest.via) == (
        "assessment",
        "assessment",
        "",
    )


async def test_a_reader_reading_their_own_result_is_not_recorded(
    archive_stub, stub_as: Stub
) -> None:
    job = await submitted(archive_stub, "ops-ann")  # an operator who took a test
    await stub_as("operator", "ops-ann").GetResult(pb.GetResultRequest(result_id=job.result_id))
    reader = "operator:ops-ann"
    assessment = stub_as("service", "assessment")
    await assessment.GetResult(pb.GetResultRequest(result_id=job.result_id, reader=reader))
    assert await records(archive_stub) == []


async def test_an_operators_update_is_recorded_as_a_read(archive_stub, stub_as: Stub) -> None:
    job = await submitted(archive_stub, "alice")
    ops = stub_as("operator", "ops-ann")
    result = job_pb2.AnalysisResult(result_id=job.result_id, assessment_name="Custom Assessment")
    mask = field_mask_pb2.FieldMask(paths=["assessment_name"])
    reply = await ops.UpdateResult(pb.UpdateResultRequest(result=result, update_mask=mask))
    assert reply.result.assessment_name == "Custom Assessment"  # the whole result came back
    [record] = await records(archive_stub, "alice")
    assert (record.reader, record.reader_identity, record.rpc) == (
        "ops-ann",
        "operator",
        "UpdateResult",
    )
    assert (record.job_id, record.result_id) == (job.job_id, job.result_id)
    missing = job_pb2.AnalysisResult(
        result_id=str(uuid.uuid4()), assessment_name="AI-Based IQ Test"
    )
    await expect_error(
        ops.UpdateResult(pb.UpdateResultRequest(result=missing, update_mask=mask)),
        grpc.StatusCode.NOT_FOUND,
    )
    assert len(await records(archive_stub)) == 1  # nothing updated, nothing read


async def test_a_refused_read_records_nothing(archive_stub) -> None:
    job = await submitted(archive_stub, "alice")
    await expect_error(
        archive_stub.GetResult(pb.GetResultRequest(result_id=job.result_id, user_id="bob")),
        grpc.StatusCode.NOT_FOUND,
    )
    assert await records(archive_stub) == []


async def test_a_malformed_reader_is_invalid(archive_stub) -> None:
    job = await submitted(archive_stub, "alice")
    error = await expect_error(
        archive_stub.GetResult(pb.GetResultRequest(result_id=job.result_id, reader="nobody")),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert "reader" in str(error.details())
    assert await records(archive_stub) == []


async def test_list_results_records_the_rows_of_the_page_only(archive_stub) -> None:
    alices = [await submitted(archive_stub, "alice") for _ in range(3)]
    await submitted(archive_stub, "bob")
    first = await archive_stub.ListResults(pb.ListResultsRequest(user_id="alice", page_size=2))
    assert first.next_page_token
    recorded = await records(archive_stub)
    assert sorted(r.result_id for r in recorded) == sorted(r.result_id for r in first.results)
    assert {r.rpc for r in recorded} == {"ListResults"}
    await archive_stub.ListResults(
        pb.ListResultsRequest(user_id="alice", page_size=2, page_token=first.next_page_token)
    )
    everyone = await archive_stub.ListResults(pb.ListResultsRequest())
    assert len(everyone.results) == 4
    recorded = await records(archive_stub, "alice")
    assert len(recorded) == 3 + 3  # each of alice's rows once per page that showed it
    assert {r.result_id for r in recorded} == {j.result_id for j in alices}
    assert len(await records(archive_stub, "bob")) == 1


async def test_access_records_page_newest_first(archive_stub, stub_as: Stub) -> None:
    job = await submitted(archive_stub, "alice")
    for _ in range(5):
        await archive_stub.GetResult(pb.GetResultRequest(result_id=job.result_id))
    seen: list[int] = []
    page_token = ""
    while True:
        reply = await archive_stub.ListAccessRecords(
            pb.ListAccessRecordsRequest(user_id="alice", page_size=2, page_token=page_token)
        )
        seen += [r.record_id for r in reply.records]
        page_token = reply.next_page_token
        if not page_token:
            break
    assert seen == sorted(seen, reverse=True) and len(set(seen)) == 5
    await expect_error(
        archive_stub.ListAccessRecords(
            pb.ListAccessRecordsRequest(user_id="bob", page_token=reply.next_page_token or "x.y")
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )


@pytest.mark.parametrize(
    ("role", "sub"),
    [
        ("service", "assessment"),
        ("service", "worker"),
        ("service", "notifier"),
        ("service", "sweep"),
        ("user", "alice"),
        ("service", "crm"),
    ],
)
async def test_only_operators_list_access_records(stub_as: Stub, role: str, sub: str) -> None:
    await expect_error(
        stub_as(role, sub).ListAccessRecords(pb.ListAccessRecordsRequest(user_id="alice")),
        grpc.StatusCode.PERMISSION_DENIED,
    )


async def test_the_sweep_prunes_exactly_the_old_records(archive_stub, database: str) -> None:
    job = await submitted(archive_stub, "alice")
    for _ in range(7):
        await archive_stub.GetResult(pb.GetResultRequest(result_id=job.result_id))
    conn = await asyncpg.connect(dsn(database))
    try:
        ids = [r["record_id"] for r in await conn.fetch("SELECT record_id FROM access_records")]
        old = sorted(ids)[:5]
        await conn.execute(
            "UPDATE access_records SET read_at = now() - interval '401 days'"
            " WHERE record_id = ANY($1::bigint[])",
            old,
        )
        # One just inside the retention stays.
        await conn.execute(
            "UPDATE access_records SET read_at = now() - interval '399 days' WHERE record_id = $1",
            sorted(ids)[5],
        )
    finally:
        await conn.close()
    request = pb.SweepStuckJobsRequest(limit=2)  # batches of two: three of them
    request.stuck_after.FromSeconds(120)
    request.max_processing.FromSeconds(600)
    request.access_record_retention.FromSeconds(400 * 86400)
    reply = await archive_stub.SweepStuckJobs(request)
    assert reply.access_records_pruned == 5
    left = {r.record_id for r in await records(archive_stub)}
    assert left == set(ids) - set(old)
    again = await archive_stub.SweepStuckJobs(request)
    assert again.access_records_pruned == 0
