"""The archive's connections to PostgreSQL: one asyncpg pool, prepared statements cached per
connection, and no pre-ping (a dead connection fails its statement, which is UNAVAILABLE to
the caller, and the pool replaces it). A connection whose statement failed anywhere but in
PostgreSQL's own answer is terminated, never handed out again."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

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
    asyncpg.exceptions.InternalClientError,  # the protocol lost its place (a server died mid-reply)
    *RETRYABLE,  # still losing after the retries
)
"""PostgreSQL errors that mean "try again later": the archive answers UNAVAILABLE."""


def libpq_dsn(database_url: str) -> str:
    """The plain libpq DSN (for asyncpg) of a ``postgresql+asyncpg://`` URL."""
    url = make_url(database_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


SESSION_SETTINGS = {"assay.outbox_notify": "off"}
"""Every archive session's: the outbox trigger leaves the relay's wake-up to the archive,
after the commit (migration 0016, ``archive_svc.relay.RelayWake``)."""


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
        connection_class=GuardedConnection,
        server_settings=SESSION_SETTINGS,
    )
    return pool


async def connect(dsn: str) -> asyncpg.Connection:
    """A connection of its own (a session lock's, outside the pool), guarded the same way."""
    connection: asyncpg.Connection = await asyncpg.connect(
        dsn, connection_class=GuardedConnection, server_settings=SESSION_SETTINGS
    )
    return connection


async def _keep_session(connection: asyncpg.Connection) -> None:
    """Skip asyncpg's RESET ALL round trip on every release: pool connections only ever run
    autocommit statements and never change session state (the sweep's session lock takes a
    connection of its own). That round trip was also what found a connection left mid-reply;
    ``GuardedConnection`` drops those instead, when their statement fails."""


class GuardedConnection(asyncpg.Connection):  # type: ignore[misc]
    """A connection that terminates itself when a statement fails anywhere but in PostgreSQL's
    own answer: a lost server, a timeout, a cancellation or a client-side protocol error can
    leave the protocol mid-reply, and such a connection must never be handed out again. An
    ordinary SQL error (a PostgresError) arrives after the server's ReadyForQuery: the
    connection is in step and stays in the pool. The happy path costs one ``try``."""

    async def execute(self, *args: Any, **kwargs: Any) -> Any:
        return await self._guarded(super().execute(*args, **kwargs))

    async def executemany(self, *args: Any, **kwargs: Any) -> Any:
        return await self._guarded(super().executemany(*args, **kwargs))

    async def fetch(self, *args: Any, **kwargs: Any) -> Any:
        return await self._guarded(super().fetch(*args, **kwargs))

    async def fetchrow(self, *args: Any, **kwargs: Any) -> Any:
        return await self._guarded(super().fetchrow(*args, **kwargs))

    async def fetchval(self, *args: Any, **kwargs: Any) -> Any:
        return await self._guarded(super().fetchval(*args, **kwargs))

    async def _guarded(self, statement: Awaitable[T]) -> T:
        try:
            return await statement
        except asyncpg.PostgresError as err:
            if isinstance(err, asyncpg.exceptions.PostgresConnectionError):
                self.terminate()
            raise
        except BaseException:
            self.terminate()
            raise


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
