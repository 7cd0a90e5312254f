"""Fixtures for the notifier tests: an in-process NotifierApp against the real archive,
PostgreSQL and NATS, and WatchJobs clients."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import grpc.aio
import pytest

from archive_svc.app import ArchiveApp
from assaylib.config import Settings
from notifier.app import NotifierApp
from tests.archive.helpers import Client
from tests.notifier.watcher import Watchers

StartNotifier = Callable[..., Awaitable[NotifierApp]]


@pytest.fixture
async def start_notifier(settings: Settings, archive: ArchiveApp) -> AsyncIterator[StartNotifier]:
    """Start a notifier wired to this test's archive; keyword arguments replace settings."""
    apps: list[NotifierApp] = []

    async def start(**overrides: Any) -> NotifierApp:
        wired = dataclasses.replace(settings, archive_addr=f"127.0.0.1:{archive.port}", **overrides)
        app = await NotifierApp.start(wired, "127.0.0.1:0")
        apps.append(app)
        return app

    yield start
    for app in apps:
        await app.stop(grace=1.0)


@pytest.fixture
async def notifier(start_notifier: StartNotifier) -> NotifierApp:
    """A notifier with the default settings of this test."""
    return await start_notifier()


@pytest.fixture
async def watchers(notifier: NotifierApp) -> AsyncIterator[Watchers]:
    """WatchJobs clients of the default notifier; all closed after the test."""
    pool = Watchers(notifier.port)
    yield pool
    await pool.close()


@pytest.fixture
def client(archive_stub: Any) -> Client:
    """Short-hands over the archive for producing real transitions (and events)."""
    return Client(archive_stub)


def rpc_code(err: BaseException) -> grpc.StatusCode:
    """The status code of a failed call."""
    assert isinstance(err, grpc.aio.AioRpcError), err
    return err.code()
