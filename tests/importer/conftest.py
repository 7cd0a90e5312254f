"""Fixtures for the import from the original system: a second database on the suite's
PostgreSQL in the original's schema, the archive in-process, and the `assay` command run as a
subprocess against both."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from archive_svc.app import ArchiveApp
from bench import original_source
from tests.cli.conftest import Ran
from tests.conftest import Servers, admin_dsn, token

REPO = Path(__file__).resolve().parents[2]
RUN_TIMEOUT = 180.0


@dataclass
class Original:
    """The original's database: its libpq DSN."""

    dsn: str

    async def execute(self, sql: str, *args: Any) -> None:
        """Run one statement on it (a test's change to the source)."""
        conn = await asyncpg.connect(self.dsn)
        try:
            await conn.execute(sql, *args)
        finally:
            await conn.close()

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        """Rows of one query."""
        conn = await asyncpg.connect(self.dsn)
        try:
            rows: list[asyncpg.Record] = await conn.fetch(sql, *args)
            return rows
        finally:
            await conn.close()


@pytest.fixture
async def original(servers: Servers) -> AsyncIterator[Original]:
    """An empty database in the original's schema (rows: ``original_source.load``)."""
    name = f"original_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(admin_dsn(servers))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        url = make_url(admin_dsn(servers)).set(database=name)
        yield Original(url.render_as_string(hide_password=False))
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


class Importer:
    """Runs `python -m assay_cli import original` against the in-process archive."""

    def __init__(self, archive: ArchiveApp, original: Original, state: Path) -> None:
        self.original = original
        self.state = state
        self.env = {
            **os.environ,
            "ASSAY_ARCHIVE_ADDR": f"127.0.0.1:{archive.port}",
            "ASSAY_TOKEN": token("operator"),
            "ASSAY_STATE_DIR": str(state),
        }

    async def spawn(self, *args: str) -> asyncio.subprocess.Process:
        """Start it without waiting."""
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "assay_cli",
            "import",
            "original",
            "--source",
            self.original.dsn,
            *args,
            cwd=REPO,
            env=self.env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )

    async def run(self, *args: str) -> Ran:
        """Run it to the end."""
        process = await self.spawn(*args)
        stdout, stderr = await asyncio.wait_for(process.communicate(), RUN_TIMEOUT)
        assert process.returncode is not None
        command = ("import", "original", *args)
        return Ran(command, process.returncode, stdout.decode(), stderr.decode())

    def rejects(self) -> list[dict[str, Any]]:
        """The rejects file's records."""
        path = self.state / "import-rejects.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
def importer(archive: ArchiveApp, original: Original, tmp_path: Path) -> Importer:
    """The import command, pointed at this test's archive and original."""
    return Importer(archive, original, tmp_path / "state")


async def fill(original: Original, rows: original_source.Rows, *, loose: bool = False) -> None:
    """Create the original's tables and copy rows in."""
    await original_source.create(original.dsn, loose=loose)
    await original_source.load(original.dsn, rows)
