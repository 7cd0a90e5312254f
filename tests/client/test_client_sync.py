"""The blocking wrapper: the same calls from a thread without an event loop."""

from __future__ import annotations

import asyncio
import itertools

from assay_client import FailedPrecondition, SyncAssayClient

from assay.common.v1 import job_pb2
from tests.archive.helpers import talent_data
from tests.client.test_client import fund
from tests.conftest import token
from tests.observability.conftest import Mesh


def a_caller(mesh: Mesh) -> list[str]:
    """Submit, wait, list, read and watch, blocking; what the watch told of the job."""
    with SyncAssayClient(
        f"127.0.0.1:{mesh.assessment.port}",
        notifier_addr=f"127.0.0.1:{mesh.notifier.port}",
        token=token("user", "sync"),
    ) as assay:
        reply = assay.submit(talent_data())
        job, result = assay.wait(reply.job.job_id)
        assert job.status == job_pb2.JOB_STATUS_COMPLETED and result is not None
        assert [j.job_id for j in assay.list()] == [job.job_id]
        assert assay.get(job.job_id) == job and assay.balance().balance == 0
        assert assay.result(job.job_id) == result
        try:
            assay.retry(job.job_id)
            raise AssertionError("a completed job was retried")
        except FailedPrecondition as refused:
            assert refused.reason == "INVALID_TRANSITION"
        watch = assay.watch(job_id=job.job_id)
        told = [f"{item.kind} {item.status}" for item in itertools.islice(watch, 1)]
        watch.close()
        return told


async def test_the_sync_client_blocks_for_each_call(mesh: Mesh) -> None:
    await mesh.start_worker()
    await fund(mesh, "sync", 1)
    told = await asyncio.wait_for(asyncio.to_thread(a_caller, mesh), 60)
    assert told == [f"snapshot {job_pb2.JOB_STATUS_COMPLETED}"]
