"""The worker against the real archive, PostgreSQL and NATS: the happy path, a permanent
analyzer error, and an older producer's message without a result row."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
from google.protobuf import json_format
from nats.aio.client import Client as NatsClient

from assay.archive.v1 import archive_service_pb2 as pb
from assay.common.v1 import job_pb2
from assay.events.v1 import events_pb2
from assaylib.streams import StreamNames
from tests.archive.helpers import check_invariants, dsn, wait_until
from tests.worker.conftest import (
    EventLog,
    Outcomes,
    StartWorker,
    get_job,
    ledger_kinds,
    submit,
)
from worker.job_runner import Outcome


async def test_job_completes_with_profile_one_debit_and_ordered_events(
    archive_stub, start_worker: StartWorker, outcomes: Outcomes, events: EventLog, settings
) -> None:
    await start_worker()
    job = await submit(archive_stub)
    await outcomes.wait(job.job_id, Outcome.COMPLETED)
    await events.wait_for(job.job_id, "analysis.completed")

    stored = await get_job(archive_stub, job.job_id)
    assert stored.status == job_pb2.JOB_STATUS_COMPLETED
    assert stored.attempt == 1 and stored.worker_id == "w1"
    result = (await archive_stub.GetResult(pb.GetResultRequest(result_id=job.result_id))).result
    assert result.job_id == job.job_id
    assert result.test_result.archetype, "the profile has an archetype"
    assert len(result.test_result.strengths) >= 3
    assert result.test_result.analyzer.name
    assert result.test_data.riasec.realistic == 60  # test_data from the submission, untouched
    assert await ledger_kinds(archive_stub, job.job_id) == ["DEBIT"]

    assert events.types(job.job_id) == ["analysis.queued", "analysis.started", "analysis.completed"]
    versions = [e.job_version for e in events.of(job.job_id)]
    assert versions == sorted(versions) and len(set(versions)) == 3
    completed = events.of(job.job_id)[-1]
    assert completed.result_id == job.result_id
    assert completed.metadata.attempt == 1
    await check_invariants(settings.database_url)


async def test_unsupported_assessment_fails_permanently_with_one_refund(
    archive_stub, start_worker: StartWorker, outcomes: Outcomes, events: EventLog, settings
) -> None:
    await start_worker()
    job = await submit(archive_stub, assessment_name="AI-Based IQ Test")
    await outcomes.wait(job.job_id, Outcome.FAILED)
    await events.wait_for(job.job_id, "analysis.failed")

    stored = await get_job(archive_stub, job.job_id)
    assert stored.status == job_pb2.JOB_STATUS_FAILED
    assert stored.error_code == "UNSUPPORTED_ASSESSMENT_TYPE"
    assert stored.attempt == 1, "a permanent error is not retried"
    assert await ledger_kinds(archive_stub, job.job_id) == ["DEBIT", "REFUND"]
    assert events.types(job.job_id) == ["analysis.queued", "analysis.started", "analysis.failed"]
    failed = events.of(job.job_id)[-1]
    assert failed.metadata.error_code == "UNSUPPORTED_ASSESSMENT_TYPE"
    await check_invariants(settings.database_url)


async def test_message_without_result_id_creates_the_result_row(
    archive_stub, start_worker: StartWorker, outcomes: Outcomes, nc: NatsClient, settings
) -> None:
    """An older producer recorded the job but no result row, and queued a message without
    result_id. We make that job by submitting normally (no worker running yet), then unlinking
    and deleting its result row in PostgreSQL and replacing its queue message with a copy
    whose result_id is cleared."""
    names = StreamNames(settings.stream_prefix)
    js = nc.jetstream()
    job = await submit(archive_stub)
    queued = await _wait_for_queue_message(js, names)
    assert queued.job_id == job.job_id
    conn = await asyncpg.connect(dsn(settings.database_url))
    try:
        await conn.execute(
            "UPDATE jobs SET result_id = NULL WHERE job_id = $1", uuid.UUID(job.job_id)
        )
        await conn.execute("DELETE FROM results WHERE job_id = $1", uuid.UUID(job.job_id))
    finally:
        await conn.close()
    await js.purge_stream(names.jobs_stream)
    queued.result_id = ""
    await js.publish(names.analysis_subject, queued.SerializeToString())

    await start_worker()
    await outcomes.wait(job.job_id, Outcome.COMPLETED)
    stored = await get_job(archive_stub, job.job_id)
    assert stored.status == job_pb2.JOB_STATUS_COMPLETED
    assert stored.result_id and stored.result_id != job.result_id, "a new result row"
    result = (await archive_stub.GetResult(pb.GetResultRequest(result_id=stored.result_id))).result
    assert json_format.MessageToDict(result.test_data) == json_format.MessageToDict(
        queued.assessment_data
    )
    assert result.test_result.archetype
    assert await ledger_kinds(archive_stub, job.job_id) == ["DEBIT"]


async def test_the_profile_is_written_in_the_jobs_locale(
    archive_stub, start_worker: StartWorker, outcomes: Outcomes
) -> None:
    await start_worker()
    english = await submit(archive_stub, locale="en")
    default = await submit(archive_stub, user="bob")
    for job in (english, default):
        await outcomes.wait(job.job_id, Outcome.COMPLETED)

    def profile_of(job: job_pb2.Job) -> Any:
        return archive_stub.GetResult(pb.GetResultRequest(result_id=job.result_id))

    in_english = (await profile_of(english)).result.test_result
    in_indonesian = (await profile_of(default)).result.test_result
    assert (in_english.analyzer.locale, in_english.analyzer.version) == ("en", "2")
    assert "Holland code" in in_english.short_summary
    assert in_indonesian.analyzer.locale == "id", "ASSAY_DEFAULT_LOCALE is id unless set"
    assert "kode Holland" in in_indonesian.short_summary
    assert [c.career_name for c in in_english.career_recommendation] == [
        c.career_name for c in in_indonesian.career_recommendation
    ]


async def test_message_without_locale_is_written_in_the_workers_default(
    archive_stub, start_worker: StartWorker, outcomes: Outcomes, nc: NatsClient, settings
) -> None:
    """An older producer's queue message carries no locale: the worker writes the profile in
    its own ASSAY_DEFAULT_LOCALE (English here, to tell it from the archive's default)."""
    names = StreamNames(settings.stream_prefix)
    js = nc.jetstream()
    job = await submit(archive_stub)
    queued = await _wait_for_queue_message(js, names)
    assert (queued.job_id, queued.locale) == (job.job_id, "id")
    await js.purge_stream(names.jobs_stream)
    queued.ClearField("locale")
    await js.publish(names.analysis_subject, queued.SerializeToString())

    await start_worker(default_locale="en")
    await outcomes.wait(job.job_id, Outcome.COMPLETED)
    result = (await archive_stub.GetResult(pb.GetResultRequest(result_id=job.result_id))).result
    assert result.test_result.analyzer.locale == "en"
    assert "Holland code" in result.test_result.short_summary


async def _wait_for_queue_message(js, names: StreamNames) -> events_pb2.AnalysisJobMessage:
    async def relayed() -> bool:
        info = await js.stream_info(names.jobs_stream)
        return bool(info.state.messages)

    await wait_until(relayed)
    stored = await js.get_msg(names.jobs_stream, 1)
    return events_pb2.AnalysisJobMessage.FromString(stored.data)
