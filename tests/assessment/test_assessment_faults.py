"""Faults between the submitting caller and PostgreSQL (issue 15): a PostgreSQL killed under
load answers UNAVAILABLE, never INTERNAL, and a link held past the callers' deadlines never
charges them afterwards."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import grpc
import grpc.aio
import psutil
import pytest

from archive_svc.app import ArchiveApp
from archive_svc.migrate import upgrade_async
from assay.archive.v1 import archive_service_pb2_grpc as archive_grpc
from assay.assessment.v1 import assessment_service_pb2_grpc as pb_grpc
from assaylib.auth import bearer_token_interceptors
from assaylib.config import Settings
from assaylib.embedded import EmbeddedPostgres
from assessment_svc.app import AssessmentApp
from tests.archive.helpers import check_invariants, dsn, wait_until
from tests.assessment.conftest import grant, submission
from tests.conftest import token
from tests.proxy import Proxy

pytestmark = pytest.mark.timeout(180)

LOADERS = 12
"""Concurrent callers, each submitting with a request id and retrying it until it lands."""
NEVER = (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN)


@dataclasses.dataclass
class Load:
    """What the callers saw: every call's status code, and the request ids that landed."""

    codes: Counter[grpc.StatusCode] = dataclasses.field(default_factory=Counter)
    landed: dict[str, str] = dataclasses.field(default_factory=dict)  # request id → job id
    details: list[str] = dataclasses.field(default_factory=list)
    progress: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)

    def calls(self) -> int:
        return sum(self.codes.values())


async def submit_until_stopped(
    stub: pb_grpc.AssessmentServiceAsyncStub, load: Load, stop: asyncio.Event
) -> None:
    """One caller: submits, and on a retryable error submits the same request id again after
    a short backoff, as a well-behaved client does."""
    request_id = uuid.uuid4().hex
    while not stop.is_set():
        try:
            reply = await stub.SubmitAssessment(submission(request_id=request_id), timeout=5)
        except grpc.aio.AioRpcError as err:
            load.codes[err.code()] += 1
            if err.code() in NEVER:
                load.details.append(f"{err.code().name}: {err.details()}")
            await asyncio.sleep(0.02)  # client backoff before retrying the same request id
            continue
        load.codes[grpc.StatusCode.OK] += 1
        load.landed[request_id] = reply.job.job_id
        load.progress.set()
        request_id = uuid.uuid4().hex


@pytest.fixture
async def private_postgres(tmp_path: Path) -> AsyncIterator[EmbeddedPostgres]:
    """A PostgreSQL of this test's own, which it may kill; migrated. Durable as in production:
    the suite's shared server trades fsync and synchronous commit for speed, and so loses
    its last commits to a kill -9."""
    server = EmbeddedPostgres(tmp_path / "pg", die_with_parent=True, durable=True)
    server.start()
    try:
        await upgrade_async(server.url())
        yield server
    finally:
        server.remove()


def crash(server: EmbeddedPostgres, *, postmaster_only: bool) -> None:
    """kill -9 PostgreSQL: the postmaster alone (its backends notice and exit, as after an
    OOM kill), or the whole process group."""
    assert server.process is not None
    if not postmaster_only:
        server.kill()
        return
    children = psutil.Process(server.process.pid).children(recursive=True)
    os.kill(server.process.pid, signal.SIGKILL)
    server.process.wait()
    server.process = None
    _, alive = psutil.wait_procs(children, timeout=20)
    assert not alive, f"backends outlived their postmaster: {alive}"


def restart(server: EmbeddedPostgres) -> None:
    """Start the crashed server again (crash recovery). Without a pre-exec hook: forking
    this process, which now runs gRPC's threads, through Python code crashes the child."""
    server.die_with_parent = False
    try:
        server.start()
    except Exception as err:
        raise AssertionError(server.log_path.read_text()[-3000:]) from err


async def test_postgres_killed_under_load_is_unavailable_never_internal(
    settings: Settings, private_postgres: EmbeddedPostgres
) -> None:
    settings = dataclasses.replace(
        settings, database_url=private_postgres.url(), max_inflight_per_user=0
    )
    archive = await ArchiveApp.start(settings, "127.0.0.1:0")
    assessment = await AssessmentApp.start(
        dataclasses.replace(settings, archive_addr=f"127.0.0.1:{archive.port}"), "127.0.0.1:0"
    )
    ops = grpc.aio.insecure_channel(
        f"127.0.0.1:{archive.port}", interceptors=bearer_token_interceptors(token("operator"))
    )
    user = grpc.aio.insecure_channel(
        f"127.0.0.1:{assessment.port}", interceptors=bearer_token_interceptors(token("user", "u"))
    )
    load, stop = Load(), asyncio.Event()
    try:
        await grant(archive_grpc.ArchiveServiceStub(ops), "u", 1_000_000)
        stub = pb_grpc.AssessmentServiceStub(user)
        callers = [
            asyncio.create_task(submit_until_stopped(stub, load, stop)) for _ in range(LOADERS)
        ]
        for round_no in range(3):
            await landed_more(load, 20)
            crash(private_postgres, postmaster_only=round_no != 1)
            await calls_more(load, 40)  # callers meet the dead server
            restart(private_postgres)
            await landed_more(load, 20)
        await wait_until(lambda: _at_least(load, 1000), within=120)
        stop.set()
        await asyncio.gather(*callers)
    finally:
        stop.set()
        await user.close()
        await ops.close()
        await assessment.stop(grace=1.0)
        await archive.stop(grace=1.0)

    assert not load.details, f"{len(load.details)} calls were not UNAVAILABLE: {load.details[:5]}"
    assert load.calls() >= 1000, load.codes
    assert load.codes[grpc.StatusCode.UNAVAILABLE] > 0, "the crashes were never seen"
    assert set(load.codes) <= {
        grpc.StatusCode.OK,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
    }, load.codes
    await check_invariants(private_postgres.url())
    conn = await asyncpg.connect(private_postgres.dsn())
    try:
        jobs = {
            r["request_id"]: str(r["job_id"])
            for r in await conn.fetch("SELECT request_id, job_id FROM jobs")
        }
    finally:
        await conn.close()
    # Every landed request is one job (no retry charged twice); no job without its caller
    # but the few a caller was still retrying when the load stopped.
    assert {rid: jobs.get(rid) for rid in load.landed} == load.landed
    assert len(set(jobs) - set(load.landed)) <= LOADERS


async def landed_more(load: Load, count: int, within: float = 60) -> None:
    """Wait until `count` more submissions have landed."""
    target = len(load.landed) + count
    try:
        await wait_until(lambda: _landed(load, target), within=within)
    except AssertionError as err:
        raise AssertionError(f"{err}: {load.codes} {load.details[:3]}") from None


async def calls_more(load: Load, count: int, within: float = 60) -> None:
    """Wait until `count` more calls have ended, whatever their outcome."""
    target = load.calls() + count
    await wait_until(lambda: _at_least(load, target), within=within)


async def _landed(load: Load, target: int) -> bool:
    return len(load.landed) >= target


async def _at_least(load: Load, calls: int) -> bool:
    return load.calls() >= calls


async def test_link_held_past_the_deadlines_charges_nobody_late(
    settings: Settings, archive: ArchiveApp, database: str
) -> None:
    proxy = Proxy(archive.port)
    await proxy.start()
    assessment = await AssessmentApp.start(
        dataclasses.replace(
            settings, archive_addr=f"127.0.0.1:{proxy.port}", max_inflight_per_user=0
        ),
        "127.0.0.1:0",
    )
    ops = grpc.aio.insecure_channel(
        f"127.0.0.1:{archive.port}", interceptors=bearer_token_interceptors(token("operator"))
    )
    user = grpc.aio.insecure_channel(
        f"127.0.0.1:{assessment.port}", interceptors=bearer_token_interceptors(token("user", "u"))
    )
    deadline_of: dict[str, float] = {}
    expired: list[str] = []
    try:
        await grant(archive_grpc.ArchiveServiceStub(ops), "u", 1000)
        stub = pb_grpc.AssessmentServiceStub(user)
        await stub.SubmitAssessment(submission(request_id="before"), timeout=5)  # link is up

        async def submit(request_id: str) -> None:
            deadline_of[request_id] = time.time() + 1.0
            try:
                await stub.SubmitAssessment(submission(request_id=request_id), timeout=1.0)
            except grpc.aio.AioRpcError as err:
                assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED, err
                expired.append(request_id)

        proxy.hold()
        await asyncio.gather(*(submit(f"held-{n}") for n in range(25)))
        assert len(expired) == 25  # every caller gave up on time
        await asyncio.sleep(2.0)  # the fault itself: the link stays held 2 s past the deadlines
        proxy.heal()
        await stub.SubmitAssessment(submission(request_id="after"), timeout=5)  # healed
    finally:
        await user.close()
        await ops.close()
        await assessment.stop(grace=1.0)
        await proxy.close()

    conn = await asyncpg.connect(dsn(database))
    try:
        created = {
            r["request_id"]: r["created_at"].timestamp()
            for r in await conn.fetch("SELECT request_id, created_at FROM jobs")
        }
    finally:
        await conn.close()
    assert {"before", "after"} <= set(created)
    late = {rid: created[rid] - deadline_of[rid] for rid in expired if rid in created}
    assert all(seconds <= 1.0 for seconds in late.values()), late
    await check_invariants(database)
