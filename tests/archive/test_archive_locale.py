"""The job's locale reaches every queue message the relay publishes for it: the first one
(stored with the submission, single or batched) and a retry's (built from the job row)."""

from __future__ import annotations

import nats

from assay.archive.v1 import archive_service_pb2 as pb
from assay.events.v1 import events_pb2
from assaylib.streams import StreamNames
from tests.archive.helpers import Client, all_sent, talent_data, wait_until


async def published_locales(nats_url: str, names: StreamNames) -> list[tuple[str, int, str]]:
    """Every queue message on the jobs stream as (job_id, charge_count, locale), in order."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        info = await js.stream_info(names.jobs_stream)
        messages = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            stored = await js.get_msg(names.jobs_stream, seq)
            message = events_pb2.AnalysisJobMessage.FromString(stored.data or b"")
            messages.append((message.job_id, message.charge_count, message.locale))
        return messages
    finally:
        await nc.close()


async def test_every_queue_message_of_a_job_carries_its_locale(
    archive, archive_stub, database, settings
) -> None:
    client = Client(archive_stub)
    await client.grant("alice", 6)
    english = await client.submit(locale="en")
    default = await client.submit()
    batch = await archive_stub.CreateSubmissions(
        pb.CreateSubmissionsRequest(
            submissions=[
                pb.CreateSubmissionRequest(
                    user_id="alice", assessment_data=talent_data(), locale=locale
                )
                for locale in ("en", "id", "")
            ]
        )
    )
    batched = [outcome.created.job for outcome in batch.outcomes]
    started = await client.start(english)
    failed = await client.fail(started)
    await archive_stub.RetryJob(pb.RetryJobRequest(job_id=failed.job_id))

    await wait_until(lambda: all_sent(database), within=10)
    published = await published_locales(settings.nats_url, StreamNames(settings.stream_prefix))
    assert published == [
        (english.job_id, 1, "en"),
        (default.job_id, 1, "id"),
        (batched[0].job_id, 1, "en"),
        (batched[1].job_id, 1, "id"),
        (batched[2].job_id, 1, "id"),
        (english.job_id, 2, "en"),  # the retry's message, built from the job row
    ]
