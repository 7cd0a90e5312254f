"""Fixtures for the client tests: the in-process mesh (tests.observability), without the
per-user in-flight limit so a test may queue many jobs; and the CLI's, to start a stack
with `assay dev up`."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import pytest

from archive_svc.app import ArchiveApp
from assaylib.config import Settings
from tests.cli.conftest import cli, cli_env  # noqa: F401  (the CLI's fixtures: `assay dev up`)
from tests.observability.conftest import Mesh, start_mesh


@pytest.fixture
async def mesh(settings: Settings, archive: ArchiveApp) -> AsyncIterator[Mesh]:
    """The mesh around this test's archive, any number of jobs in flight."""
    found = await start_mesh(dataclasses.replace(settings, max_inflight_per_user=0), archive)
    yield found
    await found.close()
