"""Encryption at rest (ASSAY_DATA_KEY_FILE): with a key, no assessment data, raw answer or
profile is stored in plain text — results columns, and no queue message in the outbox —
while every RPC and the relay read them as before; rows written before the key, rows sealed
with a rotated-out key the file still lists, and sealed queue messages stored before
migration 0012 still read; a value moved to another row does not open."""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import grpc
import grpc.aio
import pytest

from archive_svc import inputs, profiles
from archive_svc.app import ArchiveApp
from archive_svc.events import publication
from archive_svc.sealing import NO_KEYS, DataKeys
from assay.archive.v1 import archive_service_pb2 as pb
from assay.archive.v1 import archive_service_pb2_grpc as pb_grpc
from assay.common.v1 import assessment_pb2, job_pb2
from assay.events.v1 import events_pb2
from assaylib.auth import bearer_token_interceptors
from assaylib.config import ConfigError, Settings
from assaylib.errors import Internal
from assaylib.streams import StreamNames
from tests.archive.helpers import Client, dsn, profile, queue_message_row, talent_data
from tests.conftest import token

SECRET_ANSWER = "my private answer about my family"  # must appear nowhere in the database


def key_line(key_id: str) -> str:
    return f"{key_id} {base64.b64encode(os.urandom(32)).decode()}"


def with_new_first_key(key_file: Path, rotated: Path) -> Path:
    """A copy of a key file with a new current key in front."""
    rotated.write_text("\n".join([key_line("k3"), *key_file.read_text().splitlines()]))
    return rotated


def raw_answers() -> assessment_pb2.RawResponses:
    raw = assessment_pb2.RawResponses()
    raw.responses["riasec"].items.add(question_id="q1", text_value=SECRET_ANSWER)
    return raw


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "data-keys"
    path.write_text(f"# current first\n{key_line('k2')}\n\n{key_line('k1')}\n")
    return path


@dataclasses.dataclass
class Keyed:
    """An archive with data keys, and an operator's stub of it."""

    app: ArchiveApp
    stub: pb_grpc.ArchiveServiceAsyncStub


async def keyed_archive(settings: Settings, key_file: Path | None) -> tuple[ArchiveApp, Keyed]:
    keyed = dataclasses.replace(settings, data_key_file=str(key_file) if key_file else "")
    app = await ArchiveApp.start(keyed, "127.0.0.1:0")
    channel = grpc.aio.insecure_channel(
        f"127.0.0.1:{app.port}", interceptors=bearer_token_interceptors(token("operator"))
    )
    return app, Keyed(app, pb_grpc.ArchiveServiceStub(channel))


@pytest.fixture
async def sealed(settings: Settings, key_file: Path) -> AsyncIterator[Keyed]:
    app, keyed = await keyed_archive(settings, key_file)
    yield keyed
    await app.stop(grace=0.5)


async def completed_job(stub: pb_grpc.ArchiveServiceAsyncStub, user: str) -> job_pb2.Job:
    jobs = Client(stub)
    await jobs.grant(user, 1)
    reply = await stub.CreateSubmission(
        pb.CreateSubmissionRequest(
            user_id=user,
            assessment_data=talent_data(),
            raw_responses=raw_answers(),
        )
    )
    started = await jobs.start(reply.job)
    return await jobs.complete(started)


async def stored_text(database: str) -> str:
    """Every stored result column and outbox payload, as text."""
    conn = await asyncpg.connect(dsn(database))
    try:
        results = await conn.fetch("SELECT test_data, raw_responses, test_result FROM results")
        payloads = await conn.fetch("SELECT payload FROM outbox WHERE payload IS NOT NULL")
    finally:
        await conn.close()
    texts = [str(value) for row in results for value in row.values()]
    texts += [bytes(row["payload"]).decode("latin-1") for row in payloads]
    return "\n".join(texts)


def test_a_key_file_is_checked_and_its_first_key_seals() -> None:
    keys = DataKeys.parse(f"# a comment\n{key_line('new')}\n{key_line('old')}\n")
    assert keys.current == "new" and set(keys.keys) == {"new", "old"}
    for bad in ("", "# nothing", "k1 not-base64!", f"k.1 {key_line('x').split()[1]}", "k1 AAAA"):
        with pytest.raises(ConfigError):
            DataKeys.parse(bad)
    with pytest.raises(ConfigError):
        DataKeys.parse(f"{key_line('same')}\n{key_line('same')}")
    assert DataKeys.load("") is NO_KEYS and not NO_KEYS.enabled


def test_sealed_values_open_only_in_their_place_and_with_a_listed_key() -> None:
    old = DataKeys.parse(key_line("k1"))
    job, other = "0b6f7c1e-5a64-4f8e-9a43-2b0f8f0a7e11", "1c7f8d2f-6b75-4a9f-8b54-3c1a9a1b8f22"
    text = json.dumps({"riasec": {"realistic": 40}})
    sealed = old.seal_json(text, "test_data", job)
    assert "realistic" not in sealed and json.loads(sealed)["$sealed"].startswith("v1.k1.")
    assert old.open_json(sealed, "test_data", job.upper()) == text
    assert old.open_json(json.loads(sealed), "test_data", job) == text  # a parsed value too
    assert old.open_json(text, "test_data", job) == text  # written before any key
    for place, job_id in (("raw_responses", job), ("test_data", other)):
        with pytest.raises(Internal):
            old.open_json(sealed, place, job_id)
    rotated = DataKeys.parse(f"{key_line('k2')}\n{key_line('k1')}").keys
    new = DataKeys("k2", {"k2": rotated["k2"], "k1": old.keys["k1"]})
    assert new.open_json(sealed, "test_data", job) == text  # the old key still opens
    assert json.loads(new.seal_json(text, "test_data", job))["$sealed"].startswith("v1.k2.")
    with pytest.raises(Internal):
        NO_KEYS.open_json(sealed, "test_data", job)  # the key file was removed
    payload = events_pb2.AnalysisJobMessage(job_id=job).SerializeToString()
    boxed = new.seal_payload(payload, job)
    assert boxed[0] == 0 and new.open_payload(boxed, job) == payload
    assert new.open_payload(payload, job) == payload
    with pytest.raises(Internal):
        new.open_payload(boxed, other)


async def test_nothing_personal_is_stored_in_plain_text(
    sealed: Keyed, database: str, key_file: Path
) -> None:
    job = await completed_job(sealed.stub, "alice")
    stored = await stored_text(database)
    assert SECRET_ANSWER not in stored and "The Tester" not in stored
    assert "investigative" not in stored.lower()
    # Each column is sealed as it is stored (not deflated): the inputs protobuf, the profile
    # compressed with its dictionary; the queue message is not stored at all.
    conn = await asyncpg.connect(dsn(database))
    try:
        row = await conn.fetchrow("SELECT test_data, raw_responses, test_result FROM results")
        payloads = await conn.fetch("SELECT payload FROM outbox WHERE kind = 'job'")
    finally:
        await conn.close()
    assert [p["payload"] for p in payloads] == [None]
    keys = DataKeys.load(str(key_file))
    opened = {}
    for column in ("test_data", "raw_responses", "test_result"):
        boxed = bytes(row[column])
        assert boxed.startswith(b"\x00\x02k2"), column
        opened[column] = keys.open_column(boxed, column, job.job_id)
        with pytest.raises(Internal):  # bound to its column
            keys.open_column(
                boxed, "test_result" if column == "test_data" else "test_data", job.job_id
            )
    assert opened["test_result"].startswith(profiles.ZSTD_MAGIC)
    assert inputs.parse_into(opened["test_data"], assessment_pb2.AssessmentData()) == talent_data()
    assert (
        inputs.parse_into(opened["raw_responses"], assessment_pb2.RawResponses()) == raw_answers()
    )
    reply = await sealed.stub.GetResult(pb.GetResultRequest(result_id=job.result_id))
    assert reply.result.test_result.archetype == "The Tester"
    assert reply.result.test_data.riasec.investigative > 0
    assert SECRET_ANSWER in str(reply.result.raw_responses)
    listed = await sealed.stub.ListResults(pb.ListResultsRequest(user_id="alice"))
    assert listed.results[0] == reply.result


async def test_the_relay_publishes_the_queue_message_opened(
    sealed: Keyed, database: str, key_file: Path
) -> None:
    """Built from the sealed result row; and a sealed payload stored before migration 0012
    is published opened too."""
    job = await completed_job(sealed.stub, "alice")
    row = await queue_message_row(database, job.job_id)
    assert row is not None and row["payload"] is None and bytes(row["test_data"])[0] == 0
    keys = DataKeys.load(str(key_file))
    _, payload = publication(StreamNames(""), row, keys)
    message = events_pb2.AnalysisJobMessage.FromString(payload)
    assert message.job_id == job.job_id and SECRET_ANSWER in str(message.raw_responses)
    assert message.assessment_data == talent_data() and message.charge_count == 1
    stored = dict(row, payload=keys.seal_payload(payload, job.job_id), test_data=None)
    assert publication(StreamNames(""), stored, keys)[1] == payload
    with pytest.raises(Internal):  # without the key: an error, never a message without data
        publication(StreamNames(""), row, NO_KEYS)


async def test_rows_from_before_the_key_and_rotated_keys_still_read(
    settings: Settings, archive_stub, key_file: Path, tmp_path: Path
) -> None:
    plain_job = await completed_job(archive_stub, "alice")  # the fixture's archive: no key
    app, keyed = await keyed_archive(settings, key_file)
    try:
        sealed_job = await completed_job(keyed.stub, "bob")
        read = await keyed.stub.GetResult(pb.GetResultRequest(result_id=plain_job.result_id))
        assert read.result.test_result.archetype == "The Tester"
        # An UpdateResult under a key seals what it writes, in the row's place.
        update = pb.UpdateResultRequest(
            result=job_pb2.AnalysisResult(
                result_id=plain_job.result_id, test_result=profile(), assessment_name="x"
            )
        )
        update.update_mask.paths.append("test_result")
        updated = await keyed.stub.UpdateResult(update)
        assert updated.result.test_result == profile()
    finally:
        await app.stop(grace=0.5)
    # Rotate: a new first key; k2 (which sealed bob's row) stays listed and still opens.
    rotated = with_new_first_key(key_file, tmp_path / "rotated")
    app, keyed = await keyed_archive(settings, rotated)
    try:
        for job in (plain_job, sealed_job):
            read = await keyed.stub.GetResult(pb.GetResultRequest(result_id=job.result_id))
            assert read.result.test_result.archetype == "The Tester"
    finally:
        await app.stop(grace=0.5)
    # Without the key, a sealed row is an error, never a wrong answer.
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await archive_stub.GetResult(pb.GetResultRequest(result_id=sealed_job.result_id))
    assert caught.value.code() == grpc.StatusCode.INTERNAL


@pytest.mark.parametrize("content", [None, "k1 not-a-key"])
def test_the_archive_refuses_to_start_with_a_bad_key_file(
    trust, tmp_path: Path, content: str | None
) -> None:
    path = tmp_path / "data-keys"
    if content is not None:
        path.write_text(content)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("ASSAY_")},
        **trust.env(),
        "ASSAY_DATA_KEY_FILE": str(path),
        "ASSAY_ARCHIVE_ADDR": "127.0.0.1:0",
        "ASSAY_DATABASE_URL": "postgresql+asyncpg://nobody@127.0.0.1:1/none",
    }
    ran = subprocess.run(
        [sys.executable, "-m", "archive_svc"], env=env, capture_output=True, text=True, timeout=60
    )
    assert ran.returncode == 2, ran.stderr
    assert "ASSAY_DATA_KEY_FILE" in ran.stderr
