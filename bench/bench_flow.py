"""End-to-end throughput and latency of the whole mesh on this machine.

Starts a local stack (embedded PostgreSQL and NATS, the four services as processes),
grants tokens, then submits N assessments from C concurrent callers and waits until
every job is COMPLETED. Prints submit latency (p50/p99), submit throughput, and the
time from the first submit to the last completion (end-to-end throughput).

    .venv/bin/python bench/bench_flow.py [--jobs 500] [--concurrency 32] [--users 16]
        [--workers 1]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

import grpc

from assay.archive.v1 import archive_service_pb2 as archive_pb
from assay.archive.v1 import archive_service_pb2_grpc as archive_grpc
from assay.assessment.v1 import assessment_service_pb2 as pb
from assay.assessment.v1 import assessment_service_pb2_grpc as pb_grpc
from assay.common.v1 import assessment_pb2, job_pb2
from assay_cli.stack import LocalStack, StackInfo
from assaylib.auth import bearer_token_interceptors, mint_token
from assaylib.validation import score_fields


def sample(seed: int) -> assessment_pb2.AssessmentData:
    """A complete, varied Talent Mapping payload."""
    data = assessment_pb2.AssessmentData()
    for group in ("riasec", "ocean", "via_is"):
        message = getattr(data, group)
        for index, name in enumerate(score_fields(message)):
            setattr(message, name, (seed * 31 + index * 17) % 101)
    return data


async def submit_all(
    info: StackInfo, jobs: int, concurrency: int, users: int
) -> tuple[list[float], list[str]]:
    """Submit `jobs` assessments from `concurrency` callers spread over `users` users;
    returns the latencies and job ids."""
    channels = [
        grpc.aio.insecure_channel(
            info.assessment,
            interceptors=bearer_token_interceptors(
                mint_token(info.jwt_secret, f"bench-user-{u}", ["user"])
            ),
        )
        for u in range(users)
    ]
    stubs = [pb_grpc.AssessmentServiceStub(c) for c in channels]
    latencies: list[float] = []
    job_ids: list[str] = []
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(jobs):
        queue.put_nowait(index)

    async def caller(stub: pb_grpc.AssessmentServiceAsyncStub) -> None:
        while not queue.empty():
            index = queue.get_nowait()
            started = time.perf_counter()
            reply = await stub.SubmitAssessment(
                pb.SubmitAssessmentRequest(assessment_data=sample(index))
            )
            latencies.append(time.perf_counter() - started)
            job_ids.append(reply.job.job_id)

    await asyncio.gather(*(caller(stubs[i % users]) for i in range(concurrency)))
    for channel in channels:
        await channel.close()
    return latencies, job_ids


async def wait_completed(info: StackInfo, total: int) -> None:
    """Wait until `total` jobs are COMPLETED (polling the archive every 100 ms)."""
    channel = grpc.aio.insecure_channel(
        info.archive, interceptors=bearer_token_interceptors(info.token)
    )
    stub = archive_grpc.ArchiveServiceStub(channel)
    while True:
        done, token = 0, ""
        while True:
            page = await stub.ListJobs(
                archive_pb.ListJobsRequest(
                    status=job_pb2.JOB_STATUS_COMPLETED, page_size=1000, page_token=token
                )
            )
            done += len(page.jobs)
            token = page.next_page_token
            if not token:
                break
        if done >= total:
            break
        await asyncio.sleep(0.1)
    await channel.close()


async def measure(info: StackInfo, jobs: int, concurrency: int, users: int) -> None:
    """Run the load and print the figures."""
    channel = grpc.aio.insecure_channel(
        info.archive, interceptors=bearer_token_interceptors(info.token)
    )
    archive = archive_grpc.ArchiveServiceStub(channel)
    for user in range(users):
        await archive.GrantTokens(
            archive_pb.GrantTokensRequest(user_id=f"bench-user-{user}", amount=jobs, reason="b")
        )
    await channel.close()
    started = time.perf_counter()
    latencies, _ = await submit_all(info, jobs, concurrency, users)
    submitted = time.perf_counter() - started
    await wait_completed(info, jobs)
    finished = time.perf_counter() - started
    quantiles = statistics.quantiles(latencies, n=100)
    print(f"jobs={jobs} concurrency={concurrency} users={users}")
    print(f"submit latency: p50 {quantiles[49] * 1000:.1f} ms, p99 {quantiles[98] * 1000:.1f} ms")
    print(f"submit throughput: {jobs / submitted:.0f} submissions/s")
    print(f"end to end: {finished:.2f} s for {jobs} jobs = {jobs / finished:.0f} jobs/s completed")


def main() -> None:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--users", type=int, default=16, help="distinct submitting users")
    parser.add_argument("--workers", type=int, default=0, help="extra worker processes")
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if k not in ("ASSAY_DATABASE_URL", "ASSAY_NATS_URL")}
    env.update({"ASSAY_MAX_INFLIGHT_PER_USER": "0", "ASSAY_WORKER_CONCURRENCY": "8",
                "ASSAY_LOG_LEVEL": "WARNING"})  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="assay-bench-") as tmp:
        stack = LocalStack(Path(tmp) / "stack", env)
        info = stack.up()
        try:
            for index in range(args.workers):
                stack.start_service("worker", as_name=f"worker{index + 2}")
                stack.wait_healthy(f"worker{index + 2}")
            asyncio.run(measure(info, args.jobs, args.concurrency, args.users))
        finally:
            stack.down()


if __name__ == "__main__":
    main()
