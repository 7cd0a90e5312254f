"""Migrations: concurrent migrator processes (the Job and each archive initContainer)
take turns on an advisory lock; all succeed."""

from __future__ import annotations

import asyncio
import os
import sys

import asyncpg
from alembic.script import ScriptDirectory

from archive_svc.migrate import alembic_config
from tests.archive.helpers import dsn
from tests.conftest import Servers, admin_dsn, database_url


def head_revision() -> str:
    """The newest migration's revision."""
    head = ScriptDirectory.from_config(alembic_config("postgresql://unused")).get_current_head()
    assert head is not None
    return head


async def test_concurrent_migrations_on_an_empty_database(servers: Servers) -> None:
    name = "assay_migrate_race"
    admin = await asyncpg.connect(admin_dsn(servers))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}"')
        url = database_url(servers, name)
        env = {**os.environ, "ASSAY_DATABASE_URL": url}
        migrators = [
            await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "archive_svc",
                "migrate",
                env=env,
                stderr=asyncio.subprocess.PIPE,
            )
            for _ in range(3)
        ]
        outcomes = await asyncio.wait_for(asyncio.gather(*(m.communicate() for m in migrators)), 60)
        assert [m.returncode for m in migrators] == [0, 0, 0], outcomes
        conn = await asyncpg.connect(dsn(url))
        try:
            assert await conn.fetchval("SELECT version_num FROM alembic_version") == head_revision()
            assert await conn.fetchval("SELECT count(*) FROM alembic_version") == 1
        finally:
            await conn.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
