"""`assay users erase USER`: on the local stack (every service a process, JSON logs in the
stack's log directory), a user's analysed submission is erased: the result reads as ERASED,
nothing of the answers is left in the database or any service's log, a repeat answers the
same, and `assay status` shows what is retained."""

from __future__ import annotations

import json
from pathlib import Path

import asyncpg
import pytest

from archive_svc import inputs
from assay.common.v1 import assessment_pb2
from tests.archive.helpers import dsn
from tests.cli.conftest import EXAMPLES, Cli, user_token

pytestmark = pytest.mark.e2e

MARKER = "zq-cli-erase-marker-5d1e"


def marked_submission(tmp_path: Path) -> str:
    document = json.loads((EXAMPLES / "talent-mapping.json").read_text())
    document["raw_responses"]["open_ended"][0]["value"] = f"my own words {MARKER}"
    path = tmp_path / "marked.json"
    path.write_text(json.dumps(document))
    return str(path)


def service_logs(state_dir: str) -> dict[str, str]:
    """Every log file the stack's processes wrote (JSON lines), by name."""
    return {
        log.name: log.read_text(errors="replace")
        for log in sorted(Path(state_dir, "logs").glob("*.log"))
    }


async def test_users_erase_leaves_nothing_of_the_answers(
    cli: Cli, stack, cli_env, tmp_path: Path
) -> None:
    token = await user_token(cli, "hana", grant=2)
    ran = await cli.run(
        "submit", marked_submission(tmp_path), "--watch", "--json", "--token", token
    )
    assert ran.code == 0, ran.describe()
    listed = await cli.run("jobs", "list", "--json", "--token", token)
    (job_id,) = [job["jobId"] for job in listed.json()["jobs"]]
    got = await cli.run("results", "get", job_id, "--json", "--token", token)
    assert MARKER in got.stdout, got.describe()  # analysed, and readable before

    erased = await cli.run("users", "erase", "hana", "--request-id", "gdpr-1")
    assert erased.code == 0, erased.describe()
    assert "1 result(s) erased" in erased.stdout and "request id gdpr-1" in erased.stdout
    again = await cli.run("users", "erase", "hana", "--request-id", "gdpr-1", "--json")
    assert again.code == 0 and again.json()["replayed"] is True, again.describe()
    assert again.json()["resultsErased"] == 1

    gone = await cli.run("results", "get", job_id, "--token", token)
    assert gone.code == 1 and "NOT_FOUND ERASED" in gone.stderr, gone.describe()
    job = await cli.run("jobs", "get", job_id, "--json", "--token", token)
    assert job.json()["job"]["status"] == "JOB_STATUS_COMPLETED"  # the job row is kept
    refused = await cli.run("users", "erase", "hana", "--token", token)
    assert refused.code == 1 and "PERMISSION_DENIED" in refused.stderr, refused.describe()

    conn = await asyncpg.connect(dsn(cli_env["ASSAY_DATABASE_URL"]))
    try:
        tables = [
            r[0]
            for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        ]
        for table in tables:
            rows = await conn.fetch(f'SELECT t::text FROM "{table}" t')
            assert not [r for r in rows if MARKER in r[0]], table
        payloads = await conn.fetch("SELECT payload FROM outbox WHERE payload IS NOT NULL")
        assert not [p for p in payloads if MARKER.encode() in p[0]]
        # Result rows hold bytes (text shows hex), the raw answers maybe compressed: read them.
        for row in await conn.fetch("SELECT raw_responses FROM results"):
            raw = inputs.parse_into(row["raw_responses"], assessment_pb2.RawResponses())
            assert MARKER not in str(raw)
    finally:
        await conn.close()
    logs = service_logs(stack["state_dir"])
    assert logs
    for name, text in logs.items():
        assert MARKER not in text, name

    status = await cli.run("status")
    assert status.code == 0 and "retention" in status.stdout, status.describe()
    assert "no result holds content" in status.stdout
