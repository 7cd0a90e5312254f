"""The archive's pool: a connection that failed anywhere but in PostgreSQL's answer is never
handed out again; one that got an ordinary SQL error is."""

from __future__ import annotations

import asyncpg
import pytest

from archive_svc.db import TRANSIENT, create_pool
from assaylib.error_mapping import status_for_exception


async def test_a_statement_cut_short_drops_its_connection(database: str) -> None:
    pool = await create_pool(database, min_size=1, max_size=1)
    try:
        first = await pool.fetchval("SELECT pg_backend_pid()")
        with pytest.raises(TimeoutError):
            await pool.fetch("SELECT pg_sleep(30)", timeout=0.05)  # abandoned mid-statement
        assert await pool.fetchval("SELECT pg_backend_pid()") != first
    finally:
        await pool.close()


async def test_an_sql_error_keeps_its_connection(database: str) -> None:
    pool = await create_pool(database, min_size=1, max_size=1)
    try:
        first = await pool.fetchval("SELECT pg_backend_pid()")
        with pytest.raises(asyncpg.exceptions.DivisionByZeroError):
            await pool.fetch("SELECT 1 / 0")
        assert await pool.fetchval("SELECT pg_backend_pid()") == first
    finally:
        await pool.close()


def test_a_protocol_out_of_step_is_unavailable() -> None:
    err = asyncpg.exceptions.InternalClientError(
        "cannot switch to state 12; another operation (2) is in progress"
    )
    status = status_for_exception(
        err, "/assay.archive.v1.ArchiveService/CreateSubmissions", TRANSIENT
    )
    assert status.code.name == "UNAVAILABLE"
