"""The archive's connections to PostgreSQL: one asyncpg pool, prepared statements cached per
connection, and no pre-ping (a dead connection fails its statement, which is UNAVAILABLE to
the caller, and the pool replaces it)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg
from sqlalchemy.engine import make_url

log = logging.getLogger(__name__)

T = TypeVar("T")

RETRIES = 3
"""Times a statement that lost a deadlock or a serialization race is run again; it changed
nothing (each statement is its own transaction), so running it again is safe."""
RETRYABLE = (asyncpg.exceptions.DeadlockDetectedError, asyncpg.exceptions.SerializationError)
TRANSIENT: tuple[type[BaseException], ...] = (
    asyncpg.exceptions.PostgresConnectionError,  # cannot connect, too many connections …
    asyncpg.exceptions.InterfaceError,  # the connection closed under the statement
    asyncpg.exceptions.OperatorInterventionError,  # the server is shutting down
    *RETRYABLE,  # still losing after the retries
)
"""PostgreSQL errors that mean "try again later": the archive answers UNAVAILABLE."""


def libpq_dsn(database_url: str) -> str:
    """The plain libpq DSN (for asyncpg) of a ``postgresql+asyncpg://`` URL."""
    url = make_url(database_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


async def create_pool(database_url: str, *, min_size: int = 2, max_size: int = 10) -> asyncpg.Pool:
    """The archive's pool. Sized by measurement (bench/RESULTS.md): a few connections keep
    PostgreSQL's two cores busy; more only queue inside PostgreSQL."""
    pool: asyncpg.Pool = await asyncpg.create_pool(
        libpq_dsn(database_url),
        min_size=min_size,
        max_size=max_size,
        statement_cache_size=256,
        max_inactive_connection_lifetime=300.0,
        command_timeout=60.0,
        reset=_keep_session,
    )
    return pool


async def _keep_session(connection: asyncpg.Connection) -> None:
    """Skip asyncpg's RESET ALL round trip on every release: pool connections only ever run
    autocommit statements and never change session state (the sweep's session lock takes a
    connection of its own)."""


async def retrying(statement: Callable[[], Awaitable[T]]) -> T:
    """Run a one-statement transaction, again when it lost a deadlock (batches that refund
    overlapping users lock their accounts in no particular order)."""
    for attempt in range(1, RETRIES + 1):
        try:
            return await statement()
        except RETRYABLE as err:
            if attempt == RETRIES:
                raise
            log.info("statement lost a race (%s); running it again", type(err).__name__)
            await asyncio.sleep(0.005 * attempt)
    raise AssertionError("unreachable")
