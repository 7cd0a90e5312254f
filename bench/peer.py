"""The peer we compare with: procrastinate, a bare Python job queue on PostgreSQL, on the same
embedded PostgreSQL (fsync on). N no-op jobs are deferred from C concurrent callers while W
worker processes run them (2 keep both cores of a 2-core machine busy: its best here); the
figure is first defer → last job done, like `bench e2e`, with CPU and WAL per job.

It has no RPCs, no events, no token ledger and no watchers: what it measures is the floor
cost of a durable job on this machine, which Assay must beat with every job durable and every
transition an event.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg
import procrastinate

from assaylib.embedded import EmbeddedPostgres
from bench import environment
from bench.report import percentiles, progress

DATABASE = "peer"


def make_app(conninfo: str) -> procrastinate.App:
    """The peer's app with its one task, a no-op."""
    app = procrastinate.App(
        connector=procrastinate.PsycopgConnector(conninfo=conninfo, min_size=1, max_size=20)
    )

    @app.task(name="noop")
    async def noop(index: int) -> None:
        return None

    return app


async def worker_main(conninfo: str, concurrency: int) -> None:
    """The peer's worker process: run jobs until stopped."""
    app = make_app(conninfo)
    async with app.open_async():
        await app.run_worker_async(concurrency=concurrency, install_signal_handlers=True)


async def measure(
    conninfo: str, args: argparse.Namespace, workers: list[subprocess.Popen[bytes]]
) -> Any:
    """Defer the jobs, wait until all succeeded; returns the figures."""
    app = make_app(conninfo)
    async with app.open_async():
        started = time.perf_counter()
        latencies = await defer_all(app, args.jobs, args.concurrency)
        submitted = time.perf_counter()
        await succeeded(conninfo, args.warmup + args.jobs, workers)
        finished = time.perf_counter()
    return {
        "jobs": args.jobs,
        "jobs_per_second": round(args.jobs / (finished - started), 1),
        "submits_per_second": round(args.jobs / (submitted - started), 1),
        "submit_latency_ms": percentiles(latencies, 50, 95, 99),
        "elapsed_s": round(finished - started, 2),
    }


async def defer_all(app: procrastinate.App, jobs: int, concurrency: int) -> list[float]:
    """Defer ``jobs`` no-op jobs from ``concurrency`` callers; each defer's seconds."""
    task = app.tasks["noop"]
    latencies: list[float] = []
    pending = iter(range(jobs))

    async def caller() -> None:
        for index in pending:
            began = time.perf_counter()
            await task.defer_async(index=index)
            latencies.append(time.perf_counter() - began)

    await asyncio.gather(*(caller() for _ in range(concurrency)))
    return latencies


async def succeeded(conninfo: str, count: int, workers: list[subprocess.Popen[bytes]]) -> None:
    """Return once ``count`` jobs have succeeded in all (polled: the peer has no events)."""
    conn = await asyncpg.connect(conninfo)
    try:
        while True:
            done = await conn.fetchval(
                "SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'"
            )
            if done >= count:
                return
            if any(worker.poll() is not None for worker in workers):
                raise SystemExit("a peer worker exited")
            await asyncio.sleep(0.02)
    finally:
        await conn.close()


async def warm_up(
    conninfo: str, jobs: int, concurrency: int, workers: list[subprocess.Popen[bytes]]
) -> None:
    """Run ``jobs`` jobs, then settle the database: the same warm-up as Assay's
    (``bench.scenarios.warm_up``)."""
    if jobs <= 0:
        return
    progress(f"warming up: {jobs} jobs, then VACUUM (ANALYZE)")
    app = make_app(conninfo)
    async with app.open_async():
        await defer_all(app, jobs, concurrency)
        await succeeded(conninfo, jobs, workers)
    await environment.settle(conninfo)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Start PostgreSQL, apply procrastinate's schema, measure, stop."""
    with tempfile.TemporaryDirectory(prefix="assay-peer-") as tmp:
        postgres = EmbeddedPostgres(Path(tmp) / "postgres", durable=True, die_with_parent=True)
        progress("starting PostgreSQL (fsync on)")
        postgres.start()
        try:
            return _run(postgres, args)
        finally:
            postgres.stop()


def _run(postgres: EmbeddedPostgres, args: argparse.Namespace) -> dict[str, Any]:
    async def prepare() -> None:
        admin = await asyncpg.connect(postgres.dsn("postgres"))
        try:
            await admin.execute(f'CREATE DATABASE "{DATABASE}"')
        finally:
            await admin.close()
        app = make_app(postgres.dsn(DATABASE))
        async with app.open_async():
            await app.schema_manager.apply_schema_async()

    conninfo = postgres.dsn(DATABASE)
    asyncio.run(prepare())
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "bench.peer", conninfo, str(args.worker_concurrency)],
            env=os.environ.copy(),
        )
        for _ in range(args.workers)
    ]
    try:
        pids = {"postgres": postgres.pid or 0, "load": os.getpid()}
        pids |= {f"worker-{n}": worker.pid for n, worker in enumerate(workers, 1)}
        asyncio.run(warm_up(conninfo, args.warmup, args.concurrency, workers))
        wal_before = asyncio.run(environment.wal_position(conninfo))
        cpu_before = environment.CpuSample.take(pids)
        progress(f"deferring {args.jobs} no-op jobs from {args.concurrency} callers")
        figures = asyncio.run(measure(conninfo, args, workers))
        cpu = environment.CpuSample.take(pids).since(cpu_before)
        wal_bytes = asyncio.run(environment.wal_position(conninfo)) - wal_before
        figures["cpu_seconds"] = cpu
        figures |= environment.per_job(cpu, wal_bytes, args.jobs)
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(30)
    return {
        "machine": environment.machine(),
        "peer": f"procrastinate {procrastinate.__version__}, {args.workers} worker process(es)",
        "workers": args.workers,
        "worker_concurrency": args.worker_concurrency,
        "concurrency": args.concurrency,
        "warmup": args.warmup,
        **figures,
    }


if __name__ == "__main__":
    asyncio.run(worker_main(sys.argv[1], int(sys.argv[2])))
