"""EraseUserData: a user's content erased everywhere the system keeps it (tables, outbox, the
jobs and events streams, WatchJobs replays, logs), their in-flight jobs cancelled and refunded
through the state machine, the invariants kept; idempotent, and finished by a repeat after a
crash between any two steps."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import grpc
import nats
import pytest

from archive_svc import inputs, profiles, store
from archive_svc.app import ArchiveApp
from assay.archive.v1 import archive_service_pb2 as pb
from assay.archive.v1 import archive_service_pb2_grpc
from assay.common.v1 import assessment_pb2, job_pb2
from assaylib.access import SERVICE_IDENTITIES
from assaylib.auth import bearer_token_interceptors
from assaylib.config import Settings
from assaylib.logs import JsonFormatter
from assaylib.streams import StreamNames
from notifier.app import NotifierApp
from tests.archive.helpers import (
    Client,
    all_sent,
    check_invariants,
    dsn,
    expect_error,
    talent_data,
    wait_until,
)
from tests.conftest import token
from tests.notifier.watcher import Watchers

MARKER = "zq-erase-marker-7f3a"
"""A value only alice's answers and profile hold: found anywhere after the erasure, it leaked."""
BOB_MARKER = "zq-keep-marker-91c2"


def answers(marker: str) -> assessment_pb2.RawResponses:
    raw = assessment_pb2.RawResponses()
    item = raw.responses["riasec"].items.add()
    item.question_id = "q1"
    item.text_value = f"my secret answer {marker}"
    return raw


def marked_profile(marker: str) -> assessment_pb2.PersonaProfile:
    return assessment_pb2.PersonaProfile(archetype=f"The {marker}", short_summary=marker)


@dataclasses.dataclass
class Jobs:
    """alice's jobs, one per status, and bob's (never erased)."""

    queued: job_pb2.Job
    processing: job_pb2.Job
    completed: job_pb2.Job
    failed: job_pb2.Job
    cancelled: job_pb2.Job
    bob: job_pb2.Job

    def alice(self) -> list[job_pb2.Job]:
        return [self.queued, self.processing, self.completed, self.failed, self.cancelled]


async def submit(client: Client, user: str, marker: str) -> job_pb2.Job:
    reply = await client.stub.CreateSubmission(
        pb.CreateSubmissionRequest(
            user_id=user, assessment_data=talent_data(), raw_responses=answers(marker)
        )
    )
    return reply.job


async def jobs_in_every_status(client: Client) -> Jobs:
    await client.grant("alice", 20)
    await client.grant("bob", 5)
    bob = await submit(client, "bob", BOB_MARKER)  # the events stream's first event is bob's
    queued = await submit(client, "alice", MARKER)
    processing = await client.start(await submit(client, "alice", MARKER))
    running = await client.start(await submit(client, "alice", MARKER))
    completed = (
        await client.stub.CompleteJob(
            pb.CompleteJobRequest(
                job_id=running.job_id,
                worker_id=running.worker_id,
                attempt=running.attempt,
                test_result=marked_profile(MARKER),
            )
        )
    ).job
    failed = await client.fail(await client.start(await submit(client, "alice", MARKER)))
    cancelled = await client.cancel(await submit(client, "alice", MARKER))
    return Jobs(queued, processing, completed, failed, cancelled, bob)


def erase(request_id: str = "erase-1", user: str = "alice") -> pb.EraseUserDataRequest:
    return pb.EraseUserDataRequest(user_id=user, request_id=request_id)


async def database_text(database: str) -> str:
    """Every row of every table of the archive, as text."""
    conn = await asyncpg.connect(dsn(database))
    try:
        tables = await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"
        )
        rows = []
        for table in tables:
            name = table["tablename"]
            # Outbox payloads are bytes (an encoded queue message): text shows them in hex,
            # so they are read raw below.
            rows += [str(r[0]) for r in await conn.fetch(f'SELECT t::text FROM "{name}" t')]
        payloads = await conn.fetch("SELECT payload FROM outbox WHERE payload IS NOT NULL")
        rows += [bytes(r["payload"]).decode("utf-8", "replace") for r in payloads]
        # A result row's columns are bytes too, maybe compressed: read them as the archive does.
        for r in await conn.fetch("SELECT test_data, raw_responses, test_result FROM results"):
            rows.append(str(inputs.parse_into(r["test_data"], assessment_pb2.AssessmentData())))
            rows.append(str(inputs.parse_into(r["raw_responses"], assessment_pb2.RawResponses())))
            if r["test_result"] is not None:
                stored = assessment_pb2.PersonaProfile()
                profiles.parse_into(r["test_result"], stored)
                rows.append(str(stored))
        return "\n".join(rows)
    finally:
        await conn.close()


async def stream_bytes(nats_url: str, names: StreamNames) -> dict[str, list[bytes]]:
    """Every message (headers and data) on the jobs and events streams."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        found: dict[str, list[bytes]] = {}
        for stream in (names.jobs_stream, names.events_stream):
            info = await js.stream_info(stream)
            found[stream] = []
            for seq in range(info.state.first_seq, info.state.last_seq + 1):
                try:
                    msg = await js.get_msg(stream, seq)
                except nats.js.errors.NotFoundError:
                    continue  # deleted
                found[stream].append(str(msg.headers).encode() + (msg.data or b""))
        return found
    finally:
        await nc.close()


@pytest.fixture
def json_logs() -> Iterator[list[str]]:
    """Every log record of the test, rendered as the services write them (JSON lines)."""
    lines: list[str] = []
    formatter = JsonFormatter("test")

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(formatter.format(record))

    root = logging.getLogger()
    handler, level = Collect(logging.DEBUG), root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield lines
    root.removeHandler(handler)
    root.setLevel(level)


@pytest.fixture
async def notifier(settings: Settings, archive: ArchiveApp) -> AsyncIterator[NotifierApp]:
    wired = dataclasses.replace(
        settings, archive_addr=f"127.0.0.1:{archive.port}", bookmark_interval=0.2
    )
    app = await NotifierApp.start(wired, "127.0.0.1:0")
    yield app
    await app.stop(grace=1.0)


async def test_erasure_of_a_user_with_jobs_in_every_status_leaves_nothing_readable(
    json_logs: list[str], archive, archive_stub, database, settings, notifier
) -> None:
    client = Client(archive_stub)
    jobs = await jobs_in_every_status(client)
    await wait_until(lambda: all_sent(database))
    names = StreamNames(settings.stream_prefix)
    before = await stream_bytes(settings.nats_url, names)
    assert any(MARKER.encode() in m for m in before[names.jobs_stream])  # the test can see it
    assert MARKER in await database_text(database)
    balance = await client.balance("alice")

    reply = await archive_stub.EraseUserData(erase())

    assert (reply.jobs_cancelled, reply.results_erased) == (2, 5)
    assert reply.outbox_messages_erased == 5  # each submission's queue message
    assert reply.queue_messages_deleted == 5  # nobody consumed them in this test
    assert reply.requested_by == "operator-1" and reply.HasField("finished_at")
    assert not reply.replayed
    # The in-flight jobs were cancelled through the state machine, refunded, evented.
    for job in (jobs.queued, jobs.processing):
        now = await client.get(job.job_id)
        assert now.status == job_pb2.JOB_STATUS_CANCELLED and now.error_code == "ERASED"
        assert now.version == job.version + 1
    assert await client.balance("alice") == balance + 2
    for job in (jobs.completed, jobs.failed, jobs.cancelled):
        assert (await client.get(job.job_id)).status == job.status  # kept as they were
    await check_invariants(database)  # I1 (ledger = balance, one refund each), I2 (events)

    # Reading an erased result: NOT_FOUND, reason ERASED; bob's is untouched.
    for job in jobs.alice():
        await expect_error(
            archive_stub.GetResult(pb.GetResultRequest(result_id=job.result_id)),
            grpc.StatusCode.NOT_FOUND,
            "ERASED",
        )
    kept = await archive_stub.GetResult(pb.GetResultRequest(result_id=jobs.bob.result_id))
    assert BOB_MARKER in str(kept.result.raw_responses)
    listed = await archive_stub.ListResults(pb.ListResultsRequest(user_id="alice"))
    assert not listed.results
    # Nothing left to analyse: a retry is refused; the worker's late writes are too.
    refused = await expect_error(
        archive_stub.RetryJob(pb.RetryJobRequest(job_id=jobs.failed.job_id)),
        grpc.StatusCode.FAILED_PRECONDITION,
        "INVALID_TRANSITION",
    )
    assert refused.metadata["erased"] == "true"
    beat = await archive_stub.Heartbeat(
        pb.HeartbeatRequest(
            job_id=jobs.processing.job_id,
            worker_id=jobs.processing.worker_id,
            attempt=jobs.processing.attempt,
        )
    )
    assert beat.lease_lost
    await expect_error(
        archive_stub.CompleteJob(
            pb.CompleteJobRequest(
                job_id=jobs.processing.job_id,
                worker_id=jobs.processing.worker_id,
                attempt=jobs.processing.attempt,
                test_result=marked_profile(MARKER),
            )
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "INVALID_TRANSITION",
    )

    # Nothing of alice's content anywhere the test can read; bob's is all still there.
    await wait_until(lambda: all_sent(database))
    text = await database_text(database)
    assert MARKER not in text and BOB_MARKER in text
    after = await stream_bytes(settings.nats_url, names)
    for stream, messages in after.items():
        assert not [m for m in messages if MARKER.encode() in m], stream
    assert any(BOB_MARKER.encode() in m for m in after[names.jobs_stream])
    assert len(after[names.jobs_stream]) == 1  # bob's message only
    # The events stream kept every event (they carry no content), the two new ones too.
    assert len(after[names.events_stream]) == len(before[names.events_stream]) + 2

    # WatchJobs replays alice's whole history (after bob's first event) without content.
    watchers = Watchers(notifier.port)
    try:
        watcher = watchers.open(
            "operator", "op", user_id="alice", resume_after=1, include_snapshot=True
        )
        # alice's transitions: 5 submissions, 3 starts, a completion, a failure, 3 cancels.
        transitions = 5 + 3 + 1 + 1 + 3
        replayed: list[Any] = []
        while sum(item.HasField("event") for item in replayed) < transitions:
            replayed.append(await watcher.next())
        replayed += await watcher.live()  # and nothing more up to the next bookmark
        events = [item.event for item in replayed if item.HasField("event")]
        snapshots = [item.snapshot for item in replayed if item.HasField("snapshot")]
        assert len(events) == transitions
        assert {e.job_id for e in events} == {j.job_id for j in jobs.alice()}
        assert len(snapshots) == 5
        assert not [i for i in replayed if MARKER.encode() in i.SerializeToString()]
    finally:
        await watchers.close()

    # And the logs of the whole run (archive, relay, notifier) never held it.
    assert json_logs and not [line for line in json_logs if MARKER in line]
    assert [line for line in json_logs if "erasure finished" in line]


async def test_erasure_is_idempotent_by_request_id(archive_stub, database) -> None:
    client = Client(archive_stub)
    await jobs_in_every_status(client)
    first = await archive_stub.EraseUserData(erase())
    balance = await client.balance("alice")

    again = await archive_stub.EraseUserData(erase())

    assert again.replayed and not first.replayed
    again.replayed = False
    assert again == first  # the same answer, from the erasure log
    assert await client.balance("alice") == balance  # nothing refunded twice
    await check_invariants(database)
    # A new request for the same user finds nothing left to do.
    other = await archive_stub.EraseUserData(erase("erase-2"))
    assert (other.jobs_cancelled, other.results_erased, other.queue_messages_deleted) == (0, 0, 0)
    # The same request_id for another user is refused, and erases nothing of bob's.
    await expect_error(
        archive_stub.EraseUserData(erase(user="bob")), grpc.StatusCode.ALREADY_EXISTS
    )
    conn = await asyncpg.connect(dsn(database))
    try:
        log = await conn.fetch("SELECT * FROM erasures ORDER BY requested_at")
        kept = await conn.fetchval(
            "SELECT count(*) FROM results WHERE user_id = 'bob' AND erased_at IS NULL"
        )
    finally:
        await conn.close()
    assert [(r["request_id"], r["user_id"], r["trigger"]) for r in log] == [
        ("erase-1", "alice", "request"),
        ("erase-2", "alice", "request"),
    ]
    assert all(r["finished_at"] is not None and r["requested_by"] == "operator-1" for r in log)
    assert kept == 1


class Crash(Exception):
    """The archive died here: the batch being written rolls back, earlier ones stay."""


@pytest.mark.parametrize(
    ("column", "nth"),
    [
        ("jobs_cancelled", 2),
        ("results_erased", 1),
        ("results_erased", 3),
        ("outbox_messages_erased", 2),
        ("queue_messages_deleted", 1),
    ],
)
async def test_erasure_interrupted_between_steps_is_finished_by_a_repeat(
    column: str, nth: int, archive, archive_stub, database, settings, monkeypatch
) -> None:
    client = Client(archive_stub)
    jobs = await jobs_in_every_status(client)
    await wait_until(lambda: all_sent(database))
    erasure = archive.archive.erasure
    erasure.batch = 1  # one row per transaction: many points to stop at
    seen = 0
    count_erased = store.count_erased

    async def crash_at(conn, request_id: str, counted: str, amount: int) -> None:
        """Each step's batch ends by counting what it erased (in its transaction; step 4's
        after the stream was cleaned): the nth of one step dies there, as a kill would."""
        nonlocal seen
        await count_erased(conn, request_id, counted, amount)
        seen += counted == column
        if counted == column and seen == nth:
            raise Crash(f"killed in {column} #{nth}")

    monkeypatch.setattr(store, "count_erased", crash_at)
    await expect_error(archive_stub.EraseUserData(erase()), grpc.StatusCode.INTERNAL)
    monkeypatch.setattr(store, "count_erased", count_erased)
    conn = await asyncpg.connect(dsn(database))
    try:
        unfinished = await conn.fetchrow("SELECT * FROM erasures WHERE request_id = 'erase-1'")
    finally:
        await conn.close()
    assert unfinished["finished_at"] is None  # half done, and the log says so
    await check_invariants(database)  # every committed batch kept the invariants

    reply = await archive_stub.EraseUserData(erase())

    assert not reply.replayed and reply.HasField("finished_at")
    assert (reply.jobs_cancelled, reply.results_erased, reply.outbox_messages_erased) == (2, 5, 5)
    assert reply.queue_messages_deleted == 5
    for job in (jobs.queued, jobs.processing):
        assert (await client.get(job.job_id)).status == job_pb2.JOB_STATUS_CANCELLED
    await check_invariants(database)
    await wait_until(lambda: all_sent(database))
    assert MARKER not in await database_text(database)
    names = StreamNames(settings.stream_prefix)
    for messages in (await stream_bytes(settings.nats_url, names)).values():
        assert not [m for m in messages if MARKER.encode() in m]


async def test_erasure_checks_its_request(archive_stub) -> None:
    err = await expect_error(
        archive_stub.EraseUserData(pb.EraseUserDataRequest()), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert {v.field for v in err.violations} == {"user_id", "request_id"}


@pytest.mark.parametrize(
    "caller",
    [*(token("service", name) for name in SERVICE_IDENTITIES), token("user", "alice")],
    ids=[*SERVICE_IDENTITIES, "user"],
)
async def test_only_operators_may_erase(caller: str, archive, database) -> None:
    channel = grpc.aio.insecure_channel(
        f"127.0.0.1:{archive.port}", interceptors=bearer_token_interceptors(caller)
    )
    try:
        stub: Any = archive_service_pb2_grpc.ArchiveServiceStub(channel)
        await expect_error(stub.EraseUserData(erase()), grpc.StatusCode.PERMISSION_DENIED)
    finally:
        await channel.close()
    conn = await asyncpg.connect(dsn(database))
    try:
        assert await conn.fetchval("SELECT count(*) FROM erasures") == 0
    finally:
        await conn.close()


async def test_a_queue_message_the_relay_is_publishing_is_deleted_from_the_stream(
    archive: ArchiveApp, archive_stub, database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The relay fetched alice's queue message (with her answers) before the erasure deleted
    it from the outbox, and publishes it slowly: step 4 waits for that publication, so the
    message does not outlive the erasure on the jobs stream."""
    fetched = asyncio.Event()
    publish = archive.relay._publish

    async def slow_publish(js: Any, rows: Any) -> None:
        if any(row["kind"] == "job" for row in rows):
            fetched.set()
            await asyncio.sleep(0.5)  # the publication in flight while the erasure runs
        await publish(js, rows)

    monkeypatch.setattr(archive.relay, "_publish", slow_publish)
    client = Client(archive_stub)
    await client.grant("alice", 1)
    await client.submit()
    await asyncio.wait_for(fetched.wait(), 10)
    first = await archive_stub.EraseUserData(erase())
    assert first.jobs_cancelled == 1
    again = await archive_stub.EraseUserData(erase("erase-2"))
    assert again.queue_messages_deleted == 0  # the first one found it on the stream
    assert first.queue_messages_deleted == 1
