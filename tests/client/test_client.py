"""assay-client against the real services: submissions retried with one charge, typed
errors, paging, and watches that deliver every transition exactly once across cuts,
restarts and an expired cursor."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import sys
from collections import defaultdict
from collections.abc import AsyncGenerator
from pathlib import Path

import grpc
import pytest
from assay_client import (
    AssayClient,
    FileCursorStore,
    InvalidArgument,
    NotFound,
    WatchItem,
)
from prometheus_client import REGISTRY

from archive_svc.app import ArchiveApp
from archive_svc.models import JobStatus
from archive_svc.states import TABLE
from assay.archive.v1 import archive_service_pb2 as archive_pb
from assay.archive.v1 import archive_service_pb2_grpc as archive_grpc
from assay.assessment.v1 import assessment_service_pb2 as pb
from assay.common.v1 import job_pb2
from assay.events.v1 import events_pb2
from assaylib.auth import bearer_token_interceptors
from assaylib.embedded import free_port
from tests.archive.helpers import check_invariants, talent_data, wait_until
from tests.conftest import token
from tests.observability.conftest import Mesh
from tests.proxy import Proxy

EXAMPLES = Path(__file__).resolve().parents[2] / "clients" / "python" / "examples"
QUEUED, PROCESSING, COMPLETED = (
    job_pb2.JOB_STATUS_QUEUED,
    job_pb2.JOB_STATUS_PROCESSING,
    job_pb2.JOB_STATUS_COMPLETED,
)


def client_of(mesh: Mesh, user: str = "alice", notifier_port: int = 0) -> AssayClient:
    return AssayClient(
        f"127.0.0.1:{mesh.assessment.port}",
        notifier_addr=f"127.0.0.1:{notifier_port or mesh.notifier.port}",
        token=token("user", user),
    )


async def fund(mesh: Mesh, user: str, amount: int) -> None:
    async with grpc.aio.insecure_channel(
        f"127.0.0.1:{mesh.archive.port}", interceptors=bearer_token_interceptors(token("operator"))
    ) as channel:
        stub = archive_grpc.ArchiveServiceStub(channel)
        await stub.GrantTokens(
            archive_pb.GrantTokensRequest(user_id=user, amount=amount, reason="t")
        )


async def test_submit_wait_and_read(mesh: Mesh) -> None:
    await mesh.start_worker()
    await fund(mesh, "alice", 3)
    async with client_of(mesh) as assay:
        reply = await assay.submit(talent_data())
        assert reply.tokens_remaining == 2
        job, result = await assay.wait(reply.job.job_id)
        assert job.status == COMPLETED and result is not None
        assert result.test_result.archetype
        again = await assay.submit(talent_data(), request_id=reply.job.request_id or "")
        assert (await assay.balance()).balance in (1, 2)
        listed = [j.job_id async for j in assay.list(page_size=1)]
        assert reply.job.job_id in listed and again.job.job_id in listed
        hostile = talent_data()
        hostile.riasec.realistic = 101
        with pytest.raises(InvalidArgument) as bad:
            await assay.submit(hostile)
        assert any(v.field.startswith("assessment_data.") for v in bad.value.violations)
        with pytest.raises(NotFound):
            await assay.get("00000000-0000-0000-0000-000000000000")


async def test_list_by_pages_up_to_a_limit(mesh: Mesh) -> None:
    await fund(mesh, "alice", 5)
    async with client_of(mesh) as assay:
        submitted = [(await assay.submit(talent_data())).job for _ in range(5)]
        newest_first = [job.job_id for job in reversed(submitted)]
        pages = [len(page.jobs) async for page in assay.list(page_size=2).pages()]
        assert pages == [2, 2, 1]
        first = assay.list(limit=3, page_size=2)
        head = [job.job_id async for job in first]
        assert head == newest_first[:3] and first.next_page_token
        rest = assay.list(page_token=first.next_page_token)
        assert [job.job_id async for job in rest] == newest_first[3:]
        assert rest.next_page_token == ""
        queued = [j async for j in assay.list(status=QUEUED, limit=10)]
        assert len(queued) == 5
        assert [j async for j in assay.list(status=COMPLETED)] == []
        # A result row by its job or by its own id; the balance says whose it is.
        by_job = await assay.result(submitted[0].job_id)
        assert await assay.result(result_id=by_job.result_id) == by_job
        balance = await assay.balance()
        assert (balance.user_id, balance.balance) == ("alice", 0)


async def test_reachable_tells_a_dead_address_apart(mesh: Mesh) -> None:
    async with client_of(mesh) as assay:
        assert await assay.reachable() and await assay.reachable("notifier")
    nowhere = AssayClient(f"127.0.0.1:{free_port()}", token="t")
    async with nowhere:
        async with asyncio.timeout(5):  # it says so at the first failed attempt
            assert not await nowhere.reachable(within=30)
        with pytest.raises(ValueError, match="notifier"):
            await nowhere.reachable("notifier")


async def test_a_watch_with_bookmarks_says_when_it_is_live(mesh: Mesh) -> None:
    await fund(mesh, "alice", 1)
    async with client_of(mesh) as assay:
        watch = assay.watch(snapshot=False, bookmarks=True)
        async with contextlib.aclosing(watch), asyncio.timeout(20):
            live = await anext(watch)
            assert (live.kind, live.job_id) == ("bookmark", "")
            job_id = (await assay.submit(talent_data())).job.job_id  # after it: seen
            item = await anext(watch)
            while item.kind == "bookmark":  # periodic ones may come first
                item = await anext(watch)
            assert (item.kind, item.job_id, item.status) == ("event", job_id, QUEUED)
            assert item.cursor >= live.cursor


async def test_a_watch_live_on_an_empty_stream_resumes_from_its_first_event(mesh: Mesh) -> None:
    """A watch that went live while the events stream was empty stands at cursor 0. Cut
    before its first event, it resumes *after 0* — from the stream's first event — not from
    whatever is newest when it reconnects: the events of the gap reach it. (They were lost
    once: the watch-through-cuts test's first jobs came without their QUEUED event.)"""
    await fund(mesh, "alice", 2)
    proxy = Proxy(mesh.notifier.port)
    await proxy.start()
    async with client_of(mesh, notifier_port=proxy.port) as assay:
        watch = assay.watch(bookmarks=True)
        async with contextlib.aclosing(watch), asyncio.timeout(30):
            live = await anext(watch)
            assert (live.kind, live.cursor) == ("bookmark", 0)  # live; nothing published yet
            proxy.hold()  # the reconnection waits…
            assert proxy.cut() >= 1
            first = (await assay.submit(talent_data())).job.job_id  # …while this is published
            await notifier_dispatched(mesh, 1)  # the notifier's feed has handed it out
            proxy.heal()
            second = (await assay.submit(talent_data())).job.job_id
            last = await notifier_dispatched(mesh, 2)
            seen: list[WatchItem] = []
            item = await anext(watch)
            # Until the second's event, or a bookmark saying every event up to it was sent.
            while item.job_id != second and not (item.kind == "bookmark" and item.cursor >= last):
                seen.append(item)
                item = await anext(watch)
            seen.append(item)
    await proxy.close()
    events = [(i.kind, i.job_id, i.version) for i in seen if i.kind != "bookmark"]
    assert events == [("event", first, 1), ("event", second, 1)]


async def notifier_dispatched(mesh: Mesh, cursor: int) -> int:
    """Wait until the notifier's shared feed has handed out the event at ``cursor``; the
    newest cursor it has handed out."""

    async def reached() -> bool:
        return mesh.notifier.hub.live_cursor >= cursor

    await wait_until(reached, within=10)
    return mesh.notifier.hub.live_cursor


def refused_submissions() -> float:
    """SubmitAssessment calls the (in-process) assessment service refused, for any reason."""
    return sum(
        sample.value
        for metric in REGISTRY.collect()
        if metric.name == "assay_assessment_submissions"
        for sample in metric.samples
        if sample.name.endswith("_total") and sample.labels.get("outcome") == "refused"
    )


async def test_submit_retried_across_an_archive_restart_charges_once(mesh: Mesh) -> None:
    await fund(mesh, "alice", 5)
    port = mesh.archive.port
    await mesh.archive.stop(grace=0.5)
    refused_before = refused_submissions()
    async with client_of(mesh) as assay:
        submitting = asyncio.create_task(assay.submit(talent_data(), request_id="once"))

        async def refused_once() -> bool:  # the archive is down: an attempt failed
            return refused_submissions() > refused_before

        await wait_until(refused_once, within=10)
        restarted = await ArchiveApp.start(mesh.settings, f"127.0.0.1:{port}")
        try:
            reply = await submitting  # gRPC's retry policy tried again, with the same id
            again = await assay.submit(talent_data(), request_id="once")
            assert again.job.job_id == reply.job.job_id
            balance = await assay.balance()
            assert balance.balance == 4  # one charge for two calls and their retries
        finally:
            await restarted.stop(grace=0.5)
    counts = await check_invariants(mesh.settings.database_url)  # balance = ledger sum
    assert (counts["jobs"], counts["ledger"]) == (1, 2)  # one job; the grant and one charge


async def collect(
    items: list[WatchItem], watch: AsyncGenerator[WatchItem, None], live: asyncio.Event
) -> None:
    async for item in watch:
        items.append(item)
        live.set()


async def test_watch_delivers_every_transition_once_across_cuts(mesh: Mesh) -> None:
    """2,000 jobs through a link cut at random (about every 0.2 s while they are submitted,
    every 0.5 s while the last events arrive): each job's transitions reach the subscriber
    exactly once and in order — versions 1, 2, … up to the job's final version, nothing
    missed, nothing repeated — and each job's events are a walk through the state table from
    ``create`` to COMPLETED: QUEUED, PROCESSING once per attempt (a ``takeover`` after a
    lease lost under load is a second PROCESSING, its attempt one more), COMPLETED. (About
    35 s on two shared cores.)"""
    jobs = 2000
    await mesh.start_worker()
    await fund(mesh, "alice", jobs + 1)
    proxy = Proxy(mesh.notifier.port)
    await proxy.start()
    seen: list[WatchItem] = []
    live = asyncio.Event()
    cuts = 0
    async with client_of(mesh, notifier_port=proxy.port) as assay:
        watching = asyncio.create_task(collect(seen, assay.watch(), live))
        warm_up = (await assay.submit(talent_data())).job.job_id
        await asyncio.wait_for(live.wait(), 10)  # the watch is live: nothing falls before it
        submitted = set()
        for _ in range(jobs):
            submitted.add((await assay.submit(talent_data())).job.job_id)
            if random.random() < 0.05:
                cuts += proxy.cut()  # a reset link, at random, while events flow

        async def all_completed() -> bool:
            nonlocal cuts
            cuts += proxy.cut()  # and again while the last events arrive
            done = {i.job_id for i in seen if i.status == COMPLETED}
            return submitted <= done

        await wait_until(all_completed, within=120, interval=0.5)
        watching.cancel()
        final = {job.job_id: job.version async for job in assay.list(status=COMPLETED)}
    await proxy.close()
    assert cuts >= 20, "the link was hardly cut"
    per_job: dict[str, list[events_pb2.JobEvent]] = defaultdict(list)
    for item in seen:
        if item.job_id != warm_up:
            assert item.kind == "event" and item.event is not None, item
            per_job[item.job_id].append(item.event)
    assert set(per_job) == submitted
    for job_id, events in per_job.items():
        versions = [event.job_version for event in events]
        assert versions == list(range(1, final[job_id] + 1)), (job_id, events)
        assert_table_walk(events, ends=COMPLETED, max_attempts=mesh.settings.max_attempts)


Step = tuple[int, int, str]
"""(status before, status after, event type) of one transition a subscriber can see."""


def table_steps() -> dict[Step, set[str]]:
    """Every transition with an event in the state table, as a subscriber sees it, and what
    each does to the attempt: "+1" (a new attempt), "0" (reset) or "" (kept)."""
    number = {status: job_pb2.JobStatus.Value(f"JOB_STATUS_{status}") for status in JobStatus}
    steps: dict[Step, set[str]] = defaultdict(set)
    for row in TABLE:
        if row.event is None:
            continue
        attempt = (
            {"j.attempt + 1": "+1", "0": "0"}[row.sets["attempt"]] if "attempt" in row.sets else ""
        )
        for source in row.sources or (None,):
            before = number[source] if source is not None else job_pb2.JOB_STATUS_UNSPECIFIED
            steps[(before, number[row.target], row.event.value)].add(attempt)
    return steps


def assert_table_walk(events: list[events_pb2.JobEvent], *, ends: int, max_attempts: int) -> None:
    """``events`` (one job's, in order) walk the state table from ``create`` to ``ends``:
    each is a row's event from the status before it, its attempt as the row sets it, and no
    attempt past ``max_attempts`` (``takeover`` refuses one more)."""
    steps = table_steps()
    status, attempt = job_pb2.JOB_STATUS_UNSPECIFIED, 0
    for event in events:
        step = (status, event.status, event.event_type)
        assert step in steps, ("no row of the state table", step, events)
        expected = {
            "+1": attempt + 1,
            "0": 0,
            "": attempt,
        }
        assert event.metadata.attempt in {expected[how] for how in steps[step]}, events
        status, attempt = event.status, event.metadata.attempt
        assert attempt <= max_attempts, events
    assert status == ends, events


async def test_cursor_store_resumes_a_restarted_subscriber(mesh: Mesh, tmp_path: Path) -> None:
    await fund(mesh, "alice", 5)
    store = FileCursorStore(tmp_path / "cursor")
    async with client_of(mesh) as assay:
        first = {(await assay.submit(talent_data())).job.job_id for _ in range(2)}
        watch = assay.watch(cursor_store=store)
        listed = [await anext(watch), await anext(watch)]
        assert {(i.kind, i.job_id) for i in listed} == {("snapshot", j) for j in first}
        third = (await assay.submit(talent_data())).job.job_id
        assert (await anext(watch)).job_id == third
        await watch.aclose()  # the subscriber stops while handling the third's event
        later = [(await assay.submit(talent_data())).job.job_id for _ in range(2)]
        resumed = await take(assay.watch(cursor_store=store), 3)  # and starts again
        # The item being handled at the stop comes again (at least once), then the rest.
        assert [(i.kind, i.job_id) for i in resumed] == [("event", third)] + [
            ("event", j) for j in later
        ]


async def test_expired_cursor_relists_and_marks_the_gap(mesh: Mesh, tmp_path: Path) -> None:
    await fund(mesh, "alice", 4)
    store = FileCursorStore(tmp_path / "cursor")
    async with client_of(mesh) as assay:
        await assay.submit(talent_data())
        watch = assay.watch(cursor_store=store)
        await anext(watch)  # the snapshot
        await assay.submit(talent_data())
        await anext(watch)  # an event: the cursor is kept
        await watch.aclose()
        await assay.submit(talent_data())
        await mesh.nc.jetstream().purge_stream(mesh.names.events_stream)  # past retention
        fourth = (await assay.submit(talent_data())).job.job_id
        await wait_purged_then_one(mesh)
        relisted = await take(assay.watch(cursor_store=store), 5)
    assert relisted[0].kind == "relisted"
    assert [i.kind for i in relisted[1:]] == ["snapshot"] * 4
    assert fourth in {i.job_id for i in relisted}


async def wait_purged_then_one(mesh: Mesh) -> None:
    """The stream holds only the event after the purge (its first sequence moved past ours)."""
    js = mesh.nc.jetstream()

    async def one_event() -> bool:
        return (await js.stream_info(mesh.names.events_stream)).state.messages >= 1

    await wait_until(one_event, within=10)


async def take(watch: AsyncGenerator[WatchItem, None], count: int) -> list[WatchItem]:
    items: list[WatchItem] = []
    async with contextlib.aclosing(watch) as stream, asyncio.timeout(20):
        async for item in stream:
            items.append(item)
            if len(items) == count:
                break
    return items


async def test_the_examples_run(mesh: Mesh, tmp_path: Path) -> None:
    await fund(mesh, "alice", 2)
    env = {
        **os.environ,
        "ASSAY_ASSESSMENT_ADDR": f"127.0.0.1:{mesh.assessment.port}",
        "ASSAY_NOTIFIER_ADDR": f"127.0.0.1:{mesh.notifier.port}",
        "ASSAY_TOKEN": token("user", "alice"),
    }
    async with client_of(mesh) as assay:
        first = (await assay.submit(talent_data())).job.job_id  # queued: no worker yet
    subscriber = await asyncio.create_subprocess_exec(
        sys.executable,
        str(EXAMPLES / "subscribe.py"),
        str(tmp_path / "cursor"),
        env=env,
        stdout=asyncio.subprocess.PIPE,
    )
    assert subscriber.stdout is not None
    lines: list[list[str]] = []
    async with asyncio.timeout(30):
        lines.append((await subscriber.stdout.readline()).decode().split())
    assert lines[0][:3] == ["now", first, str(QUEUED)]  # its snapshot: the watch is live
    await mesh.start_worker()
    caller = await asyncio.create_subprocess_exec(
        sys.executable,
        str(EXAMPLES / "submit_and_wait.py"),
        env=env,
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await asyncio.wait_for(caller.communicate(), 60)
    assert caller.returncode == 0
    job_id, status, archetype = out.decode().split(maxsplit=2)
    assert status == str(COMPLETED) and archetype.strip()
    async with asyncio.timeout(30):
        while sum(1 for line in lines if line[1] == job_id) < 3:
            lines.append((await subscriber.stdout.readline()).decode().split())
    subscriber.terminate()
    await subscriber.wait()
    assert [line[:3] for line in lines if line[1] == job_id] == [
        ["event", job_id, str(QUEUED)],
        ["event", job_id, str(PROCESSING)],
        ["event", job_id, str(COMPLETED)],
    ]


async def test_submit_many_in_chunks_charges_each_item_once(mesh: Mesh) -> None:
    await fund(mesh, "alice", 5)
    requests = [pb.SubmitAssessmentRequest(assessment_data=talent_data(n)) for n in range(5)]
    seen: list[int] = []
    async with client_of(mesh) as assay:
        replies = await assay.submit_many(requests, chunk_size=2, on_progress=seen.append)
        assert seen == [2, 4, 5]
        assert [r.job.status for r in replies] == [QUEUED] * 5
        assert replies[-1].tokens_remaining == 0
        # The same items with the ids they were given: replayed, nothing charged.
        named = [
            pb.SubmitAssessmentRequest(assessment_data=talent_data(n), request_id=r.job.request_id)
            for n, r in enumerate(replies)
        ]
        again = await assay.submit_many(named)
        assert [r.job.job_id for r in again] == [r.job.job_id for r in replies]
        assert (await assay.balance()).balance == 0
    await check_invariants(mesh.settings.database_url)
