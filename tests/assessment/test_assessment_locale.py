"""SubmitAssessment's locale: validated, resolved to ASSAY_DEFAULT_LOCALE when empty, kept on
the job and carried by its queue message; part of the idempotency key's payload."""

from __future__ import annotations

import dataclasses
import uuid

import asyncpg
import grpc
import pytest

from archive_svc.events import publication
from assay.assessment.v1 import assessment_service_pb2 as pb
from assay.events.v1 import events_pb2
from assaylib.config import Settings
from assaylib.errors import field_violations_of
from assaylib.streams import StreamNames
from tests.archive.helpers import dsn, expect_error, snapshot
from tests.assessment.conftest import grant, submission


async def stored_locale(database_url: str, job_id: str) -> tuple[str | None, str]:
    """The job row's locale and the locale its queue message carries (as the relay builds it
    from the outbox row, the job and the result row)."""
    conn = await asyncpg.connect(dsn(database_url))
    try:
        row = await conn.fetchrow(
            "SELECT o.*, r.test_data, r.raw_responses, j.locale FROM jobs j JOIN outbox o"
            " ON o.job_id = j.job_id AND o.kind = 'job' JOIN results r"
            " ON r.result_id = j.result_id WHERE j.job_id = $1",
            uuid.UUID(job_id),
        )
    finally:
        await conn.close()
    assert row is not None
    _, payload = publication(StreamNames(""), dict(row))
    message = events_pb2.AnalysisJobMessage.FromString(payload)
    assert message.job_id == job_id
    return row["locale"], message.locale


@pytest.mark.parametrize(("requested", "kept"), [("", "id"), ("id", "id"), ("en", "en")])
async def test_the_job_keeps_the_locale_and_the_queue_message_carries_it(
    requested: str, kept: str, client, archive_stub, settings: Settings
) -> None:
    await grant(archive_stub, "alice", 1)
    reply = await client("user", "alice").SubmitAssessment(submission(locale=requested))
    assert await stored_locale(settings.database_url, reply.job.job_id) == (kept, kept)


@pytest.mark.parametrize("locale", ["fr", "ID", "en-US", "id_ID", " en", "in"])
async def test_an_unknown_locale_is_invalid_argument_naming_the_field(
    locale: str, client, archive_stub, settings: Settings
) -> None:
    await grant(archive_stub, "alice", 1)
    before = await snapshot(settings.database_url)
    error = await expect_error(
        client("user", "alice").SubmitAssessment(submission(locale=locale)),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    violations = field_violations_of(error)
    assert [v.field for v in violations] == ["locale"]
    assert "'id', 'en'" in violations[0].description
    assert await snapshot(settings.database_url) == before


async def test_the_same_request_id_in_another_locale_is_already_exists(
    client, archive_stub, settings: Settings
) -> None:
    await grant(archive_stub, "alice", 3)
    alice = client("user", "alice")
    first = await alice.SubmitAssessment(submission(request_id="loc-1", locale="en"))
    again = await alice.SubmitAssessment(submission(request_id="loc-1", locale="en"))
    assert again.job.job_id == first.job.job_id
    await expect_error(
        alice.SubmitAssessment(submission(request_id="loc-1", locale="id")),
        grpc.StatusCode.ALREADY_EXISTS,
    )
    # Without a locale the key's payload digests as before locales existed.
    plain = await alice.SubmitAssessment(submission(request_id="loc-2"))
    repeat = await alice.SubmitAssessment(
        pb.SubmitAssessmentRequest(assessment_data=submission().assessment_data, request_id="loc-2")
    )
    assert repeat.job.job_id == plain.job.job_id


class TestAnEnglishDefault:
    """ASSAY_DEFAULT_LOCALE=en: a submission without a locale is written in English."""

    @pytest.fixture
    def settings(self, settings: Settings) -> Settings:
        return dataclasses.replace(settings, default_locale="en")

    async def test_an_empty_locale_takes_the_configured_default(
        self, client, archive_stub, settings: Settings
    ) -> None:
        await grant(archive_stub, "alice", 2)
        alice = client("user", "alice")
        default = await alice.SubmitAssessment(submission())
        chosen = await alice.SubmitAssessment(submission(locale="id"))
        assert await stored_locale(settings.database_url, default.job.job_id) == ("en", "en")
        assert await stored_locale(settings.database_url, chosen.job.job_id) == ("id", "id")
