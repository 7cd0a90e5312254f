"""Fixtures for the assessment service tests: the service in-process against the real archive
(real PostgreSQL and NATS), and clients for users, operators and services."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import grpc.aio
import pytest

from archive_svc.app import ArchiveApp
from assay.archive.v1 import archive_service_pb2 as archive_pb
from assay.archive.v1 import archive_service_pb2_grpc as archive_grpc
from assay.assessment.v1 import assessment_service_pb2 as pb
from assay.assessment.v1 import assessment_service_pb2_grpc as pb_grpc
from assaylib.auth import bearer_token_interceptors
from assaylib.config import Settings
from assessment_svc.app import AssessmentApp
from tests.archive.helpers import talent_data
from tests.conftest import token

MAX_INFLIGHT = 3


@pytest.fixture
def assessment_settings(settings: Settings, archive: ArchiveApp) -> Settings:
    """The test settings pointed at the in-process archive, with a small in-flight limit."""
    return dataclasses.replace(
        settings,
        archive_addr=f"127.0.0.1:{archive.port}",
        max_inflight_per_user=MAX_INFLIGHT,
    )


@pytest.fixture
async def assessment(assessment_settings: Settings) -> AsyncIterator[AssessmentApp]:
    """The assessment service in-process on a free port."""
    app = await AssessmentApp.start(assessment_settings, "127.0.0.1:0")
    yield app
    await app.stop(grace=1.0)


# The async stub type exists in the .pyi only, hence the string.
StubFactory = Callable[..., "pb_grpc.AssessmentServiceAsyncStub"]


@pytest.fixture
async def client(assessment: AssessmentApp) -> AsyncIterator[StubFactory]:
    """client(role, user) → an AssessmentService stub with that bearer token (role None: no
    token at all). Channels are closed after the test."""
    channels: list[grpc.aio.Channel] = []

    def make(role: str | None = "user", user: str = "alice") -> pb_grpc.AssessmentServiceAsyncStub:
        interceptors = bearer_token_interceptors(token(role, user)) if role else None
        channel = grpc.aio.insecure_channel(
            f"127.0.0.1:{assessment.port}", interceptors=interceptors
        )
        channels.append(channel)
        return pb_grpc.AssessmentServiceStub(channel)

    yield make
    for channel in channels:
        await channel.close()


async def grant(stub: archive_grpc.ArchiveServiceAsyncStub, user: str, amount: int) -> None:
    """Fund a user through the archive."""
    await stub.GrantTokens(archive_pb.GrantTokensRequest(user_id=user, amount=amount, reason="t"))


def submission(**fields: Any) -> pb.SubmitAssessmentRequest:
    """A valid Talent Mapping submission (fields override)."""
    fields.setdefault("assessment_data", talent_data())
    return pb.SubmitAssessmentRequest(**fields)


async def ledger(stub: archive_grpc.ArchiveServiceAsyncStub, user: str) -> list[Any]:
    """A user's ledger entries, newest first."""
    reply = await stub.ListLedgerEntries(
        archive_pb.ListLedgerEntriesRequest(user_id=user, page_size=1000)
    )
    return list(reply.entries)
