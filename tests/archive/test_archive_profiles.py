"""The stored profile (``archive_svc.profiles``): ``results.test_result`` holds the profile's
protobuf bytes compressed by zstd with the dictionary of its locale; the shipped dictionaries
are the ones the tool makes; a frame naming a dictionary the archive lacks fails clearly; rows
from before migration 0010 (plain or sealed JSON) still read; UpdateResult writes the same
format; an erasure empties it."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import os
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import asyncpg
import grpc
import grpc.aio
import pytest
import sqlalchemy.exc
import zstandard
from alembic import command

from archive_svc import profiles
from archive_svc.app import ArchiveApp
from archive_svc.migrate import alembic_config
from archive_svc.sealing import DataKeys
from assay.archive.v1 import archive_service_pb2 as pb
from assay.archive.v1 import archive_service_pb2_grpc as pb_grpc
from assay.common.v1 import assessment_pb2, job_pb2
from assaylib.auth import bearer_token_interceptors
from assaylib.config import Settings
from assaylib.errors import Internal
from assaylib.jobs import LOCALES
from bench.bench_analyzer import ASSESSMENT_NAME, random_submission
from tests.archive.helpers import Client, dsn, profile, to_json
from tests.conftest import token
from tools import train_profile_dict
from worker.analyzers import analyze


def analyzed(locale: str, seed: int = 7) -> assessment_pb2.PersonaProfile:
    """A real profile (the analyzer's), of a submission the dictionaries were not trained on."""
    return analyze(ASSESSMENT_NAME, random_submission(random.Random(seed)), None, locale)


async def stored_profile(database: str, result_id: str) -> bytes | None:
    """The raw ``test_result`` of a result row."""
    conn = await asyncpg.connect(dsn(database))
    try:
        value = await conn.fetchval(
            "SELECT test_result FROM results WHERE result_id = $1", uuid.UUID(result_id)
        )
    finally:
        await conn.close()
    return None if value is None else bytes(value)


def test_the_shipped_dictionaries_are_the_ones_the_tool_makes() -> None:
    assert set(profiles.CURRENT_DICT_IDS) == set(LOCALES)
    assert set(profiles.CURRENT_DICT_IDS.values()) <= profiles.known_dict_ids()
    for dict_id in profiles.known_dict_ids():
        shipped = profiles.dictionary_path(dict_id).read_bytes()
        assert zstandard.ZstdCompressionDict(shipped).dict_id() == dict_id
    for locale, dict_id in profiles.CURRENT_DICT_IDS.items():
        made = train_profile_dict.train(locale, dict_id)
        assert made == profiles.dictionary_path(dict_id).read_bytes(), (
            f"{locale}: run python -m tools.train_profile_dict (with a new id, never over a"
            " shipped dictionary)"
        )


@pytest.mark.parametrize("locale", LOCALES)
def test_a_profile_is_stored_as_a_small_frame_naming_its_locales_dictionary(locale: str) -> None:
    made = analyzed(locale)
    stored = profiles.encode(made)
    frame = zstandard.get_frame_parameters(stored)
    assert stored.startswith(profiles.ZSTD_MAGIC)
    assert frame.dict_id == profiles.CURRENT_DICT_IDS[locale]
    assert len(stored) < 1200 < len(made.SerializeToString()) // 5  # about 0.7 KB of 8 KB
    read = assessment_pb2.PersonaProfile()
    profiles.parse_into(stored, read)
    assert read == made
    # A profile of a locale without a dictionary of its own uses the default locale's.
    other = assessment_pb2.PersonaProfile(
        archetype="x", analyzer=assessment_pb2.AnalyzerInfo(locale="fr")
    )
    assert zstandard.get_frame_parameters(profiles.encode(other)).dict_id == 32769


def test_a_frame_naming_a_dictionary_the_archive_lacks_fails_clearly() -> None:
    samples = train_profile_dict.samples("en", count=100, seed=1)
    stranger = zstandard.train_dictionary(8192, samples, k=64, d=8, dict_id=40000, threads=1)
    frame = zstandard.ZstdCompressor(dict_data=stranger).compress(samples[0])
    assert zstandard.get_frame_parameters(frame).dict_id == 40000
    with pytest.raises(Internal, match="dictionary 40000, which this archive does not ship"):
        profiles.parse_into(frame, assessment_pb2.PersonaProfile())


async def test_complete_and_update_result_store_compressed_profiles(
    archive_stub: pb_grpc.ArchiveServiceAsyncStub, database: str
) -> None:
    jobs = Client(archive_stub)
    await jobs.grant("alice", 1)
    job = await jobs.complete(await jobs.start(await jobs.submit("alice")))
    stored = await stored_profile(database, job.result_id)
    assert stored is not None and stored.startswith(profiles.ZSTD_MAGIC)
    read = await archive_stub.GetResult(pb.GetResultRequest(result_id=job.result_id))
    assert read.result.test_result == profile()

    english = analyzed("en")
    update = pb.UpdateResultRequest(
        result=job_pb2.AnalysisResult(result_id=job.result_id, test_result=english)
    )
    update.update_mask.paths.append("test_result")
    updated = await archive_stub.UpdateResult(update)
    assert updated.result.test_result == english
    stored = await stored_profile(database, job.result_id)
    assert stored is not None and zstandard.get_frame_parameters(stored).dict_id == 32770
    listed = await archive_stub.ListResults(pb.ListResultsRequest(user_id="alice"))
    assert [r.test_result for r in listed.results] == [english]


async def test_an_erasure_empties_the_profile(
    archive_stub: pb_grpc.ArchiveServiceAsyncStub, database: str
) -> None:
    jobs = Client(archive_stub)
    await jobs.grant("alice", 1)
    job = await jobs.complete(await jobs.start(await jobs.submit("alice")))
    assert await stored_profile(database, job.result_id) is not None
    reply = await archive_stub.EraseUserData(
        pb.EraseUserDataRequest(user_id="alice", request_id="erase-profile")
    )
    assert reply.results_erased == 1
    assert await stored_profile(database, job.result_id) is None


Start = Callable[[str], Awaitable["pb_grpc.ArchiveServiceAsyncStub"]]


@pytest.fixture
async def start_archive(settings: Settings) -> AsyncIterator[Start]:
    """Starts an archive (with a key file, or none) when the test says: after it migrated."""
    started: list[ArchiveApp] = []

    async def start(key_file: str) -> pb_grpc.ArchiveServiceAsyncStub:
        keyed = dataclasses.replace(settings, data_key_file=key_file)
        app = await ArchiveApp.start(keyed, "127.0.0.1:0")
        started.append(app)
        channel = grpc.aio.insecure_channel(
            f"127.0.0.1:{app.port}", interceptors=bearer_token_interceptors(token("operator"))
        )
        return pb_grpc.ArchiveServiceStub(channel)

    yield start
    for app in started:
        await app.stop(grace=0.5)


async def migrate(database: str, revision: str, *, down: bool = False) -> None:
    """Upgrade (or downgrade) the test's database to ``revision``."""
    move = command.downgrade if down else command.upgrade
    await asyncio.to_thread(move, alembic_config(database), revision)


LEGACY_ROW = (
    "INSERT INTO results (result_id, job_id, user_id, assessment_name, test_data, test_result)"
    " VALUES ($1, $2, 'alice', 'AI-Driven Talent Mapping', '{}'::jsonb, $3::jsonb)"
)


async def test_rows_from_before_0010_still_read(
    database: str, start_archive: Start, tmp_path: Path
) -> None:
    """Plain and sealed JSON profiles written at 0009 read after the upgrade; a downgrade
    refuses once a compressed profile exists."""
    await migrate(database, "0009", down=True)
    key_file = tmp_path / "keys"
    key_file.write_text(f"k1 {base64.b64encode(os.urandom(32)).decode()}\n")
    keys = DataKeys.load(str(key_file))
    made = analyzed("id")
    plain_id, sealed_id, sealed_job = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    conn = await asyncpg.connect(dsn(database))
    try:
        await conn.execute(LEGACY_ROW, plain_id, uuid.uuid4(), to_json(made))
        sealed = keys.seal_json(to_json(made), "test_result", sealed_job)
        await conn.execute(LEGACY_ROW, sealed_id, sealed_job, sealed)
    finally:
        await conn.close()
    await migrate(database, "head")
    assert (await stored_profile(database, str(plain_id)) or b"").startswith(b'{"')
    assert (await stored_profile(database, str(sealed_id)) or b"").startswith(b'{"$sealed"')
    conn = await asyncpg.connect(dsn(database))
    try:  # room for COMPLETE's update in the row's page
        options = await conn.fetchval("SELECT reloptions FROM pg_class WHERE relname = 'results'")
    finally:
        await conn.close()
    assert "fillfactor=60" in options

    stub = await start_archive(str(key_file))
    for result_id in (plain_id, sealed_id):
        read = await stub.GetResult(pb.GetResultRequest(result_id=str(result_id)))
        assert read.result.test_result == made
    listed = await stub.ListResults(pb.ListResultsRequest(user_id="alice"))
    assert [r.test_result for r in listed.results] == [made, made]

    jobs = Client(stub)
    await jobs.grant("bob", 1)
    await jobs.complete(await jobs.start(await jobs.submit("bob")))
    with pytest.raises(sqlalchemy.exc.DBAPIError, match="cannot read"):
        await migrate(database, "0009", down=True)
