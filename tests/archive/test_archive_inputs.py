"""A submission's inputs (``archive_svc.inputs``): ``results.test_data`` and ``raw_responses``
hold protobuf bytes (raw answers as a zstd frame when that is smaller), written once — the
submission's queue message is built by the relay from them; protobuf that starts like a frame
or JSON is stored as a frame; rows from before
migration 0012 (plain, sealed or erased JSON) still read, also to build a retry's queue
message; UpdateResult writes the same format; an erasure leaves empty values; a downgrade
refuses while protobuf rows exist."""

from __future__ import annotations

import base64
import os
import uuid
from pathlib import Path

import asyncpg
import grpc
import pytest
import sqlalchemy.exc
import zstandard

from archive_svc import inputs, profiles
from archive_svc.events import publication
from archive_svc.sealing import DataKeys
from assay.archive.v1 import archive_service_pb2 as pb
from assay.archive.v1 import archive_service_pb2_grpc as pb_grpc
from assay.common.v1 import assessment_pb2, job_pb2
from assay.events.v1 import events_pb2
from assaylib.errors import Internal
from assaylib.streams import StreamNames
from tests.archive.helpers import Client, dsn, expect_error, queue_message_row, talent_data, to_json
from tests.archive.test_archive_profiles import Start, migrate, start_archive  # noqa: F401


def answers(count: int, text: str = "") -> assessment_pb2.RawResponses:
    """``count`` numeric answers (and one text answer when given)."""
    raw = assessment_pb2.RawResponses()
    for n in range(count):
        raw.responses["riasec"].items.add(question_id=f"RIASEC_{n + 1}", number_value=n % 5 + 1)
    if text:
        raw.responses["open_ended"].items.add(question_id="motivation", text_value=text)
    return raw


async def stored_inputs(database: str, result_id: str) -> tuple[bytes, bytes]:
    """The raw ``test_data`` and ``raw_responses`` of a result row."""
    conn = await asyncpg.connect(dsn(database))
    try:
        row = await conn.fetchrow(
            "SELECT test_data, raw_responses FROM results WHERE result_id = $1",
            uuid.UUID(result_id),
        )
    finally:
        await conn.close()
    assert row is not None
    return bytes(row["test_data"]), bytes(row["raw_responses"])


def test_scores_stay_protobuf_and_many_answers_are_compressed() -> None:
    data = talent_data()
    stored = inputs.encode(data)
    assert stored == data.SerializeToString() and len(stored) < 128
    assert inputs.parse_into(stored, assessment_pb2.AssessmentData()) == data

    few, many = answers(3), answers(60)
    assert inputs.encode(few) == few.SerializeToString()  # too short to pay
    frame = inputs.encode(many)
    assert frame.startswith(profiles.ZSTD_MAGIC) and len(frame) < len(many.SerializeToString()) / 3
    assert inputs.parse_into(frame, assessment_pb2.RawResponses()) == many
    # Empty: nothing stored, an empty message read (a submission without answers, an erasure).
    assert inputs.encode(assessment_pb2.RawResponses()) == b""
    assert inputs.parse_into(b"", assessment_pb2.RawResponses()) == assessment_pb2.RawResponses()


@pytest.mark.parametrize("unknown", [b"{|", b"(\x01"])
def test_protobuf_that_looks_like_json_or_a_frame_is_stored_as_a_frame(unknown: bytes) -> None:
    # An empty group of field 15 starts with "{", a varint of field 5 with "(": both fields
    # unknown to RawResponses (a caller's), whose bytes would then read as JSON or a frame.
    raw = assessment_pb2.RawResponses.FromString(unknown)
    assert raw.SerializeToString() == unknown
    stored = inputs.encode(raw)
    assert stored.startswith(profiles.ZSTD_MAGIC)
    read = inputs.parse_into(stored, assessment_pb2.RawResponses())
    assert read.SerializeToString() == unknown
    # With a known field besides, the known field comes first: plain protobuf, kept whole.
    both = assessment_pb2.RawResponses.FromString(answers(1).SerializeToString() + unknown)
    assert inputs.encode(both) == both.SerializeToString()
    assert inputs.parse_into(inputs.encode(both), assessment_pb2.RawResponses()) == both


def test_legacy_json_and_a_frame_with_a_dictionary() -> None:
    data = talent_data()
    for legacy in (to_json(data), to_json(data).encode(), b'{"riasec": {"realistic": 60}}'):
        read = inputs.parse_into(legacy, assessment_pb2.AssessmentData())
        assert read.riasec.realistic == 60
    assert (
        inputs.parse_into(b"{}", assessment_pb2.AssessmentData()) == assessment_pb2.AssessmentData()
    )
    samples: list[bytes | bytearray | memoryview] = [
        answers(n).SerializeToString() for n in range(20, 120)
    ]
    trained = zstandard.train_dictionary(2048, samples, dict_id=40001, threads=1)
    frame = zstandard.ZstdCompressor(dict_data=trained).compress(samples[0])
    with pytest.raises(Internal, match="dictionary 40001"):
        inputs.parse_into(frame, assessment_pb2.RawResponses())


async def test_a_submission_is_stored_once_and_the_relay_builds_its_queue_message(
    archive_stub: pb_grpc.ArchiveServiceAsyncStub, database: str
) -> None:
    jobs = Client(archive_stub)
    await jobs.grant("alice", 1)
    raw = answers(40, "I like to build things")
    job = await jobs.submit("alice", raw_responses=raw, locale="en")
    test_data, raw_responses = await stored_inputs(database, job.result_id)
    assert test_data == talent_data().SerializeToString()
    assert raw_responses.startswith(profiles.ZSTD_MAGIC)
    row = await queue_message_row(database, job.job_id)
    assert row is not None and row["payload"] is None
    _, payload = publication(StreamNames(""), row)
    message = events_pb2.AnalysisJobMessage.FromString(payload)
    assert (message.job_id, message.user_id, message.result_id) == (
        job.job_id,
        "alice",
        job.result_id,
    )
    assert message.assessment_data == talent_data() and message.raw_responses == raw
    assert message.locale == "en" and message.charge_count == 1
    assert message.assessment_name == job.assessment_name


async def test_update_result_writes_protobuf_and_an_erasure_empties_the_inputs(
    archive_stub: pb_grpc.ArchiveServiceAsyncStub, database: str
) -> None:
    jobs = Client(archive_stub)
    await jobs.grant("alice", 1)
    job = await jobs.complete(await jobs.start(await jobs.submit("alice")))
    new_data, new_raw = talent_data(33), answers(50)
    update = pb.UpdateResultRequest(
        result=job_pb2.AnalysisResult(
            result_id=job.result_id, test_data=new_data, raw_responses=new_raw
        )
    )
    update.update_mask.paths.extend(["test_data", "raw_responses"])
    updated = (await archive_stub.UpdateResult(update)).result
    assert (updated.test_data, updated.raw_responses) == (new_data, new_raw)
    test_data, raw_responses = await stored_inputs(database, job.result_id)
    assert test_data == new_data.SerializeToString()
    assert raw_responses == inputs.encode(new_raw) and raw_responses.startswith(profiles.ZSTD_MAGIC)
    read = await archive_stub.GetResult(pb.GetResultRequest(result_id=job.result_id))
    assert read.result == updated

    reply = await archive_stub.EraseUserData(
        pb.EraseUserDataRequest(user_id="alice", request_id="erase-inputs")
    )
    assert reply.results_erased == 1
    assert await stored_inputs(database, job.result_id) == (b"", b"")
    await expect_error(
        archive_stub.GetResult(pb.GetResultRequest(result_id=job.result_id)),
        grpc.StatusCode.NOT_FOUND,
        "ERASED",
    )


LEGACY_JOB = (
    "INSERT INTO jobs (job_id, user_id, result_id, assessment_name, status, token_cost,"
    " charge_count, finished_at, error_code) VALUES ($1, 'alice', $2,"
    " 'AI-Driven Talent Mapping', 'FAILED', 1, 1, now(), 'BROKEN')"
)
LEGACY_RESULT = (
    "INSERT INTO results (result_id, job_id, user_id, assessment_name, test_data,"
    " raw_responses, erased_at) VALUES ($1, $2, 'alice', 'AI-Driven Talent Mapping',"
    " $3::jsonb, $4::jsonb, CASE WHEN $5 THEN now() END)"
)


async def test_rows_from_before_0012_still_read(
    database: str,
    start_archive: Start,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
) -> None:
    """Plain, sealed and erased JSON inputs written at 0010 read after the upgrade (GetResult,
    ListResults, and the queue message of a retry); a downgrade refuses once protobuf inputs
    exist."""
    await migrate(database, "0011", down=True)
    key_file = tmp_path / "keys"
    key_file.write_text(f"k1 {base64.b64encode(os.urandom(32)).decode()}\n")
    keys = DataKeys.load(str(key_file))
    data, raw = talent_data(42), answers(5, "an answer from before")
    ids = {name: (uuid.uuid4(), uuid.uuid4()) for name in ("plain", "sealed", "erased")}
    conn = await asyncpg.connect(dsn(database))
    try:
        await conn.execute("INSERT INTO token_accounts (user_id, balance) VALUES ('alice', 5)")
        values = {
            "plain": (to_json(data), to_json(raw), False),
            "sealed": (
                keys.seal_json(to_json(data), "test_data", ids["sealed"][1]),
                keys.seal_json(to_json(raw), "raw_responses", ids["sealed"][1]),
                False,
            ),
            "erased": ("{}", "{}", True),
        }
        for name, (result_id, job_id) in ids.items():
            test_data, raw_responses, erased = values[name]
            await conn.execute(LEGACY_JOB, job_id, result_id)
            await conn.execute(LEGACY_RESULT, result_id, job_id, test_data, raw_responses, erased)
    finally:
        await conn.close()
    await migrate(database, "head")
    plain_data, _ = await stored_inputs(database, str(ids["plain"][0]))
    sealed_data, _ = await stored_inputs(database, str(ids["sealed"][0]))
    assert plain_data.startswith(b'{"') and sealed_data.startswith(b'{"$sealed"')
    assert await stored_inputs(database, str(ids["erased"][0])) == (b"{}", b"{}")

    stub = await start_archive(str(key_file))
    for name in ("plain", "sealed"):
        read = await stub.GetResult(pb.GetResultRequest(result_id=str(ids[name][0])))
        assert (read.result.test_data, read.result.raw_responses) == (data, raw)
    await expect_error(
        stub.GetResult(pb.GetResultRequest(result_id=str(ids["erased"][0]))),
        grpc.StatusCode.NOT_FOUND,
        "ERASED",
    )
    listed = await stub.ListResults(pb.ListResultsRequest(user_id="alice"))
    assert [(r.test_data, r.raw_responses) for r in listed.results] == [(data, raw)] * 2

    # A retry of the sealed legacy job: its queue message is built from the JSON row.
    retried = await stub.RetryJob(pb.RetryJobRequest(job_id=str(ids["sealed"][1])))
    assert retried.job.status == job_pb2.JOB_STATUS_QUEUED
    row = await queue_message_row(database, ids["sealed"][1])
    _, payload = publication(StreamNames(""), row, keys)
    message = events_pb2.AnalysisJobMessage.FromString(payload)
    assert (message.assessment_data, message.raw_responses) == (data, raw)
    assert message.charge_count == 2

    jobs = Client(stub)
    await jobs.submit("alice")
    with pytest.raises(sqlalchemy.exc.DBAPIError, match="protobuf inputs"):
        await migrate(database, "0011", down=True)


async def test_a_downgrade_turns_json_rows_back(
    archive_stub: pb_grpc.ArchiveServiceAsyncStub, database: str
) -> None:
    """With no protobuf inputs (erased rows are empty), 0012 goes down and up again."""
    jobs = Client(archive_stub)
    await jobs.grant("alice", 1)
    job = await jobs.complete(await jobs.start(await jobs.submit("alice")))
    await archive_stub.EraseUserData(pb.EraseUserDataRequest(user_id="alice", request_id="e"))
    await migrate(database, "0011", down=True)
    conn = await asyncpg.connect(dsn(database))
    try:
        row = await conn.fetchrow(
            "SELECT test_data::text, raw_responses::text FROM results WHERE result_id = $1",
            uuid.UUID(job.result_id),
        )
        kinds = await conn.fetchval(
            "SELECT string_agg(oidvectortypes(proargtypes), ' | ' ORDER BY pronargs)"
            " FROM pg_proc WHERE proname = 'assay_create_submission'"
        )
    finally:
        await conn.close()
    assert tuple(row) == ("{}", "{}")
    assert kinds.count("jsonb, jsonb, bytea") == 3 and "bytea, bytea, bytea" not in kinds
    await migrate(database, "head")
