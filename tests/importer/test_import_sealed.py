"""With ASSAY_DATA_KEY_FILE the imported answers and profiles are sealed at rest as every
submission's are, read back whole by GetResult, and --verify finds no difference."""

from __future__ import annotations

import base64
import dataclasses
import json
import os
from pathlib import Path

import asyncpg
import grpc
from google.protobuf import json_format

from archive_svc.app import ArchiveApp
from assay.archive.v1 import archive_service_pb2 as pb
from assay.archive.v1 import archive_service_pb2_grpc as pb_grpc
from assaylib.auth import bearer_token_interceptors
from assaylib.config import Settings
from bench import original_source
from tests.archive.helpers import check_invariants, dsn
from tests.conftest import token
from tests.importer.conftest import Importer, Original, fill


async def test_imported_rows_are_sealed_at_rest(
    settings: Settings, original: Original, database: str, tmp_path: Path
) -> None:
    key_file = tmp_path / "data-keys"
    key_file.write_text(f"k1 {base64.b64encode(os.urandom(32)).decode()}\n")
    keyed = dataclasses.replace(settings, data_key_file=str(key_file))
    app = await ArchiveApp.start(keyed, "127.0.0.1:0")
    channel = grpc.aio.insecure_channel(
        f"127.0.0.1:{app.port}", interceptors=bearer_token_interceptors(token("operator"))
    )
    try:
        rows = original_source.generate(jobs=15, users=2, seed=31)
        await fill(original, rows)
        importer = Importer(app, original, tmp_path / "state")
        ran = await importer.run("--json")
        assert ran.code == 0, ran.describe()

        conn = await asyncpg.connect(dsn(database))
        try:
            stored = await conn.fetch(
                "SELECT test_result FROM results WHERE test_result IS NOT NULL"
            )
        finally:
            await conn.close()
        assert stored and all(bytes(row["test_result"])[:1] == b"\x00" for row in stored)

        done = next(job for job in rows.jobs if job[3] == "completed")
        source = next(result for result in rows.results if result[0] == done[4])
        stub = pb_grpc.ArchiveServiceStub(channel)
        got = await stub.GetResult(pb.GetResultRequest(result_id=str(done[4])))
        assert json_format.MessageToDict(got.result.test_result) == json.loads(str(source[3]))
        verified = await importer.run("--verify", "--json")
        assert verified.code == 0 and verified.json()["differences"] == [], verified.describe()
        await check_invariants(database)
    finally:
        await channel.close()
        await app.stop(grace=0.5)
