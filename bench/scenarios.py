"""The measurements: end to end, open-loop submit latency, one big sweep, idle watchers."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import asyncpg
import grpc.aio

from assay.archive.v1 import archive_service_pb2 as archive_pb
from bench import bare_stream, environment, importing, waiting
from bench.load import Submitter, Watcher, user_name
from bench.otlp_sink import running_sink
from bench.report import percentiles, progress
from bench.stack import BenchStack, running_stack, settings_of


def header(stack: BenchStack, args: argparse.Namespace) -> dict[str, Any]:
    """What every report starts with: the machine, the servers, the settings."""
    return {
        "machine": environment.machine(),
        "servers": stack.versions(),
        "settings": dict(sorted(stack.settings.items())),
        "processes": {"workers": args.workers, "archives": args.archives},
    }


async def open_watchers(stack: BenchStack, count: int, users: int) -> tuple[Any, list[Watcher]]:
    """``count`` streams: the first watches every user (an operator's view), the others one
    user each, round robin. Returns once every stream is live."""
    channel, stub = stack.notifier()
    watchers = [Watcher(stub)] + [Watcher(stub, user_name(i % users)) for i in range(count - 1)]
    for watcher in watchers:
        watcher.start()
    await asyncio.wait_for(asyncio.gather(*(w.live.wait() for w in watchers)), 60)
    failed = [w.error for w in watchers if w.error]
    if failed:
        raise SystemExit(f"a watch failed to open: {failed[0]}")
    return channel, watchers


async def report_progress(watcher: Watcher, total: int, done: asyncio.Event) -> None:
    """A progress line every two seconds until ``done``."""
    while not done.is_set():
        try:
            await asyncio.wait_for(done.wait(), 2.0)
        except TimeoutError:
            progress(f"{watcher.counts['analysis.completed']} of {total} completed")


async def warm_up(stack: BenchStack, jobs: int, users: int, concurrency: int = 16) -> None:
    """Run ``jobs`` jobs through the stack and wait for them to complete, then settle the
    database (``environment.settle``): what follows measures a deployment that has run for a
    while, not its first seconds on empty tables. The users must be funded for them."""
    if jobs <= 0:
        return
    progress(f"warming up: {jobs} jobs, then VACUUM (ANALYZE)")
    channel, (watcher,) = await open_watchers(stack, 1, users)
    completed = watcher.expect("analysis.completed", jobs)
    submitter = Submitter(stack, users)
    try:
        await submitter.closed_loop(jobs, concurrency)
        await asyncio.wait_for(completed.wait(), 120 + jobs / 20)
    finally:
        await submitter.close()
        await watcher.stop()
        await channel.close()
    if submitter.result.failures:
        raise SystemExit(f"the warm-up's submissions failed: {dict(submitter.result.failures)}")
    await environment.settle(stack.dsn)


async def run_e2e(stack: BenchStack, args: argparse.Namespace) -> dict[str, Any]:
    """Submit N jobs from C callers over U users; completion observed through watchers."""
    users = [user_name(i) for i in range(args.users)]
    await stack.grant(users, (args.warmup + args.jobs) // args.users + 2)
    await warm_up(stack, args.warmup, args.users, args.concurrency)
    channel, watchers = await open_watchers(stack, max(1, args.watchers), args.users)
    everyone = watchers[0]
    completed = everyone.expect("analysis.completed", args.jobs)
    submitter = Submitter(stack, args.users)
    profilers = environment.start_profilers(stack.pids, args.profile)
    if args.pg_stats:
        await statement_stats(stack, reset=True)
    dsn = stack.dsn
    wal_before, fpi_before = await environment.wal_counters(dsn)
    cpu_before = environment.CpuSample.take(stack.measured_pids)
    metrics_before = await waiting.snapshot(stack.info.metrics)
    ticker = asyncio.create_task(report_progress(everyone, args.jobs, completed))
    progress(f"submitting {args.jobs} jobs from {args.concurrency} callers")
    submissions = await submitter.closed_loop(args.jobs, args.concurrency)
    submitted_at = time.perf_counter()
    timeout = 120 + args.jobs / 20
    try:
        await asyncio.wait_for(completed.wait(), timeout)
    except TimeoutError:
        progress(f"gave up waiting after {timeout:.0f}s")
    ticker.cancel()
    cpu = environment.CpuSample.take(stack.measured_pids).since(cpu_before)
    waited = waiting.waiting(metrics_before, await waiting.snapshot(stack.info.metrics))
    wal_after, fpi_after = await environment.wal_counters(dsn)
    wal_bytes, fpi = wal_after - wal_before, fpi_after - fpi_before
    environment.stop_profilers(profilers)
    statements = await statement_stats(stack) if args.pg_stats else []
    await submitter.close()
    for watcher in watchers:
        await watcher.stop()
    await channel.close()
    done = everyone.counts["analysis.completed"]
    elapsed = (everyone.last_completed or time.perf_counter()) - submissions.started
    latencies = [x for w in watchers for x in w.latencies]
    progress("auditing the database")
    audit = stack.audit()
    return {
        **header(stack, args),
        "warmup": args.warmup,
        "jobs": args.jobs,
        "completed": done,
        "submit_failures": dict(submissions.failures),
        "jobs_per_second": round(done / elapsed, 1) if elapsed > 0 else 0.0,
        "submits_per_second": round(
            len(submissions.latencies) / max(submitted_at - submissions.started, 1e-9), 1
        ),
        "elapsed_s": round(elapsed, 2),
        "submit_latency_ms": percentiles(submissions.latencies, 50, 95, 99),
        "event_latency_ms": percentiles(latencies, 50, 99),
        **waited,
        "events_seen": dict(everyone.counts),
        "cpu_seconds": cpu,
        **environment.per_job(cpu, wal_bytes, done),
        "wal_full_page_images_per_job": round(fpi / max(done, 1), 3),
        "invariants_ok": bool(audit.get("ok")) and done == args.jobs,
        "audit": audit,
        **({"postgres_statements": statements} if statements else {}),
        **compared(args, done / elapsed if elapsed > 0 else 0.0),
    }


def compared(args: argparse.Namespace, jobs_per_second: float) -> dict[str, Any]:
    """The ratio to a peer run (``--peer FILE``, from ``python -m bench peer --json FILE``)."""
    if not getattr(args, "peer", None):
        return {}
    peer = json.loads(Path(args.peer).read_text())
    return {
        "peer_jobs_per_second": peer["jobs_per_second"],
        "ratio_to_peer": round(jobs_per_second / peer["jobs_per_second"], 2),
    }


PG_STATS = "shared_preload_libraries=pg_stat_statements;pg_stat_statements.track=all"


async def statement_stats(stack: BenchStack, *, reset: bool = False) -> list[str]:
    """PostgreSQL's busiest statements (pg_stat_statements), or reset its counters."""
    dsn = stack.dsn
    conn = await asyncpg.connect(dsn)
    try:
        if reset:
            await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            await conn.execute("SELECT pg_stat_statements_reset()")
            return []
        rows = await conn.fetch(
            "SELECT calls, round(total_exec_time::numeric, 1) AS ms,"
            " (wal_bytes / greatest(calls, 1))::bigint AS wal,"
            " left(regexp_replace(query, '\\s+', ' ', 'g'), 90) AS query FROM pg_stat_statements"
            " ORDER BY total_exec_time DESC LIMIT 15"
        )
    finally:
        await conn.close()
    return [
        f"{r['ms']:>9} ms {r['calls']:>7} calls {r['wal']:>6} B WAL/call  {r['query']}"
        for r in rows
    ]


async def run_submit_latency(stack: BenchStack, args: argparse.Namespace) -> dict[str, Any]:
    """An open loop at a fixed offered rate while the workers run."""
    users = [user_name(i) for i in range(args.users)]
    total = int(args.rate * args.duration)
    await stack.grant(users, (args.warmup + total) // args.users + 2)
    await warm_up(stack, args.warmup, args.users)
    channel, watchers = await open_watchers(stack, 1, args.users)
    completed = watchers[0].expect("analysis.completed", total)
    submitter = Submitter(stack, args.users)
    progress(f"offering {args.rate}/s for {args.duration}s")
    metrics_before = await waiting.snapshot(stack.info.metrics)
    submissions = await submitter.open_loop(args.rate, args.duration)
    waited = waiting.waiting(metrics_before, await waiting.snapshot(stack.info.metrics))
    achieved = len(submissions.latencies) / max(time.perf_counter() - submissions.started, 1e-9)
    try:
        await asyncio.wait_for(completed.wait(), 120 + total / 20)
    except TimeoutError:
        progress("not every job completed in time")
    await submitter.close()
    await watchers[0].stop()
    await channel.close()
    audit = stack.audit()
    return {
        **header(stack, args),
        "warmup": args.warmup,
        "offered_rate": args.rate,
        "achieved_rate": round(achieved, 1),
        "jobs": total,
        "completed": watchers[0].counts["analysis.completed"],
        "submit_failures": dict(submissions.failures),
        "submit_latency_ms": percentiles(submissions.latencies, 50, 95, 99),
        "event_latency_ms": percentiles(watchers[0].latencies, 50, 99),
        **waited,
        "invariants_ok": bool(audit.get("ok")),
        "audit": audit,
    }


STUCK_SQL = """
WITH users AS (
  INSERT INTO token_accounts (user_id, balance)
  SELECT 'stuck-' || u, 0 FROM generate_series(0, $2 - 1) AS u RETURNING user_id
), jobs AS (
  INSERT INTO jobs (job_id, user_id, result_id, assessment_name, status, attempt, worker_id,
                    version, token_cost, started_at, heartbeat_at, created_at, updated_at)
  SELECT gen_random_uuid(), 'stuck-' || (n % $2), NULL, 'AI-Driven Talent Mapping',
         'PROCESSING', 1, 'gone-worker', 2, 1, now() - interval '1 hour',
         now() - interval '1 hour', now() - interval '1 hour', now() - interval '1 hour'
  FROM generate_series(1, $1) AS n RETURNING job_id, user_id
)
INSERT INTO ledger_entries (user_id, kind, amount, job_id, charge_no, reason)
SELECT user_id, 'DEBIT', -1, job_id, 1, 'bench' FROM jobs
"""


async def run_sweep(stack: BenchStack, args: argparse.Namespace) -> dict[str, Any]:
    """N stuck jobs made directly in the database, then one sweep, timed."""
    dsn = stack.dsn
    conn = await asyncpg.connect(dsn)
    try:
        users = max(1, args.stuck // 10)
        # Each stuck user was granted what its jobs cost: balance 0 = grants − debits.
        await conn.execute(STUCK_SQL, args.stuck, users)
        await conn.execute(
            "INSERT INTO ledger_entries (user_id, kind, amount, reason)"
            " SELECT user_id, 'GRANT', count(*), 'bench' FROM ledger_entries"
            " WHERE user_id LIKE 'stuck-%' AND kind = 'DEBIT' GROUP BY user_id"
        )
    finally:
        await conn.close()
    channel, archive = stack.archive()
    request = archive_pb.SweepStuckJobsRequest(limit=args.batch, force=True)
    request.stuck_after.FromSeconds(120)
    request.max_processing.FromSeconds(600)
    progress(f"sweeping {args.stuck} stuck jobs")
    started = time.perf_counter()
    async with channel:
        reply = await archive.SweepStuckJobs(request, timeout=600)
    elapsed = time.perf_counter() - started
    conn = await asyncpg.connect(dsn)
    try:
        refunds = await conn.fetchval(
            "SELECT count(*) FROM ledger_entries WHERE kind = 'REFUND' AND reason = 'stuck'"
        )
        events = await conn.fetchval(
            "SELECT count(*) FROM outbox o JOIN jobs j ON j.job_id = o.job_id"
            " WHERE o.kind = 'event' AND j.error_code = 'STUCK'"
        )
        failed = await conn.fetchval("SELECT count(*) FROM jobs WHERE error_code = 'STUCK'")
    finally:
        await conn.close()
    return {
        **header(stack, args),
        "stuck": args.stuck,
        "batch": args.batch,
        "sweep_seconds": round(elapsed, 3),
        "failed": reply.failed,
        "failed_in_database": failed,
        "refunds_in_database": refunds,
        "events_in_outbox": events,
        "ok": reply.failed == failed == refunds == events == args.stuck,
    }


async def run_watchers(stack: BenchStack, args: argparse.Namespace) -> dict[str, Any]:
    """W idle streams: the notifier's memory per stream, then event latency with them open."""
    notifier_pid = stack.pids["notifier"]
    before = environment.rss_bytes(notifier_pid)
    users = max(1, args.count)
    channels = []
    watchers: list[Watcher] = []
    per_channel = 500
    progress(f"opening {args.count} idle watches")
    for start in range(0, args.count, per_channel):
        channel, stub = stack.notifier()
        channels.append(channel)
        batch = [
            Watcher(stub, user_name(i)) for i in range(start, min(start + per_channel, args.count))
        ]
        for watcher in batch:
            watcher.start()
        await asyncio.wait_for(asyncio.gather(*(w.live.wait() for w in batch)), 120)
        watchers += batch
    opened = environment.rss_bytes(notifier_pid)
    active = [w for w in watchers if not w.error]
    jobs = args.jobs
    sample_users = min(jobs, users)
    await stack.grant([user_name(i) for i in range(sample_users)], jobs)
    targets = [watchers[i].expect("analysis.completed", 1) for i in range(sample_users)]
    submitter = Submitter(stack, sample_users)
    progress(f"{jobs} jobs at {args.rate}/s with the watches open")
    await submitter.open_loop(args.rate, jobs / args.rate)
    await asyncio.wait_for(asyncio.gather(*(t.wait() for t in targets)), 120 + jobs / 10)
    await submitter.close()
    latencies = [x for w in watchers for x in w.latencies]
    for watcher in watchers:
        await watcher.stop()
    for channel in channels:
        await channel.close()
    bare = await bare_streams(args.count, per_channel)
    per_watcher = (opened - before) / 1024 / max(len(active), 1)
    return {
        **header(stack, args),
        "watchers": args.count,
        "watchers_open": len(active),
        "notifier_rss_before_mib": round(before / 2**20, 1),
        "notifier_rss_open_mib": round(opened / 2**20, 1),
        "kib_per_watcher": round(per_watcher, 1),
        "bare_grpc_kib_per_stream": round(bare, 1),
        "notifier_kib_above_bare": round(per_watcher - bare, 1),
        "watch_errors": dict(Counter(w.error for w in watchers if w.error).most_common(3)),
        "jobs": jobs,
        "event_latency_ms": percentiles(latencies, 50, 99),
    }


async def bare_streams(count: int, per_channel: int) -> float:
    """KiB per idle stream of a bare grpc.aio server (``bench.bare_stream``) holding ``count``
    streams opened ``per_channel`` to a channel, as the watchers were: the floor under them."""
    with bare_stream.running() as (pid, address):
        before = environment.rss_bytes(pid)
        progress(f"opening {count} idle streams on a bare grpc.aio server")
        channels: list[grpc.aio.Channel] = []
        calls: list[grpc.aio.Call] = []
        for start in range(0, count, per_channel):
            channel = grpc.aio.insecure_channel(address)
            channels.append(channel)
            batch = range(start, min(start + per_channel, count))
            await asyncio.wait_for(
                asyncio.gather(*(bare_stream.hold(channel, calls) for _ in batch)), 120
            )
        opened = environment.rss_bytes(pid)
        for call in calls:
            call.cancel()
        for channel in channels:
            await channel.close()
    return (opened - before) / 1024 / max(count, 1)


async def run_import(stack: BenchStack, args: argparse.Namespace) -> dict[str, Any]:
    """The cut-over from the original system (``bench.importing``)."""
    return {**header(stack, args), **await importing.run_import(stack, args)}


def run(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Start a stack, run one scenario against it, stop the stack."""
    scenarios = {
        "e2e": run_e2e,
        "submit-latency": run_submit_latency,
        "sweep": run_sweep,
        "watchers": run_watchers,
        "import": run_import,
    }
    settings = settings_of(args.set)
    if getattr(args, "pg_stats", False):
        settings["ASSAY_DEV_POSTGRES_OPTIONS"] = PG_STATS
    with contextlib.ExitStack() as scope:
        sink = None
        if args.trace_sample is not None:
            sink, port = scope.enter_context(running_sink())
            settings.update(tracing_settings(args.trace_sample, port))
        stack = scope.enter_context(
            running_stack(settings, workers=args.workers, archives=args.archives)
        )
        result = asyncio.run(scenarios[name](stack, args))
        scope.close()  # the services flush their last spans as they stop
        if sink is not None:
            result["tracing"] = {"sample_ratio": args.trace_sample, **sink.report()}
        return result


def tracing_settings(ratio: float, port: int) -> dict[str, str]:
    """Tracing on in every service, sampled at ``ratio``, exported to the sink on ``port``."""
    return {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "ASSAY_TRACE_SAMPLE_RATIO": str(ratio),
    }
