"""``python -m bench import --jobs N``: the cut-over from the original system, measured.

Builds a database in the original's schema on the stack's PostgreSQL (N jobs with their
results over N/10 users, in the original's proportions of statuses), then runs ``assay import
original`` against the stack's archive as an operator would, and reports the import's wall
time, jobs/s, the WAL it wrote (``pg_current_wal_lsn`` before and after), the ``--verify``
pass's time and differences, and the invariants (``archive_svc audit``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from typing import Any

import asyncpg

from bench import original_source
from bench.environment import CpuSample
from bench.report import progress
from bench.stack import BenchStack

SOURCE_DB = "bench_original"


async def build_source(admin_dsn: str, jobs: int, users: int) -> str:
    """A fresh source database with the rows; its DSN."""
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{SOURCE_DB}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{SOURCE_DB}"')
    finally:
        await conn.close()
    dsn = admin_dsn.rsplit("/", 1)[0] + f"/{SOURCE_DB}"
    started = time.perf_counter()
    rows = original_source.generate(jobs, users)
    await original_source.create(dsn)
    await original_source.load(dsn, rows)
    await _analyze(dsn)
    progress(f"source: {jobs:,} jobs over {users:,} users in {time.perf_counter() - started:.1f} s")
    return dsn


async def _analyze(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("ANALYZE")
    finally:
        await conn.close()


async def wal_lsn(dsn: str) -> str:
    """The current WAL position."""
    conn = await asyncpg.connect(dsn)
    try:
        return str(await conn.fetchval("SELECT pg_current_wal_lsn()::text"))
    finally:
        await conn.close()


async def wal_between(dsn: str, before: str, after: str) -> int:
    """Bytes of WAL between two positions."""
    conn = await asyncpg.connect(dsn)
    try:
        diff = "SELECT pg_wal_lsn_diff($1::text::pg_lsn, $2::text::pg_lsn)"
        return int(await conn.fetchval(diff, after, before))
    finally:
        await conn.close()


def cli(stack: BenchStack, *args: str) -> tuple[float, int, dict[str, Any]]:
    """Run ``assay import original …`` as an operator; its seconds, exit code and JSON (with
    the CLI's own CPU seconds as ``cli_cpu_seconds``)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    env = {
        **os.environ,
        "ASSAY_ARCHIVE_ADDR": stack.info.archive,
        "ASSAY_TOKEN": stack.info.token,
    }
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "assay_cli", "import", "original", *args, "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - started
    try:
        report: dict[str, Any] = json.loads(done.stdout)
    except ValueError:
        report = {"error": done.stderr[-2000:]}
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    report["cli_cpu_seconds"] = round(cpu, 2)
    return elapsed, done.returncode, report


async def run_import(stack: BenchStack, args: argparse.Namespace) -> dict[str, Any]:
    """Build the source, import it, verify it; the figures."""
    admin = stack.dsn
    admin = admin.rsplit("/", 1)[0] + "/postgres"
    users = args.users or max(1, args.jobs // 10)
    source = await build_source(admin, args.jobs, users)
    target = stack.dsn
    before = await wal_lsn(target)
    cpu_before = CpuSample.take(stack.pids)
    progress(f"importing {args.jobs:,} jobs (batch {args.batch})")
    import_s, code, report = cli(stack, "--source", source, "--batch", str(args.batch))
    cpu = CpuSample.take(stack.pids).since(cpu_before)
    cpu["assay import (CLI)"] = report.pop("cli_cpu_seconds", 0.0)
    wal = await wal_between(target, before, await wal_lsn(target))
    progress(f"imported in {import_s:.1f} s; verifying")
    verify_s, verify_code, verified = cli(stack, "--source", source, "--verify")
    imported = sum(c.get("imported", 0) for c in report.get("jobs", {}).values())
    audit = stack.audit()
    return {
        "jobs": args.jobs,
        "users": users,
        "batch": args.batch,
        "import_seconds": round(import_s, 2),
        "jobs_per_second": round(imported / import_s, 1) if import_s else 0.0,
        "imported": imported,
        "wal_bytes": wal,
        "wal_bytes_per_job": round(wal / max(imported, 1)),
        "cpu_seconds": cpu,
        "cpu_ms_per_job": {
            name: round(1000 * seconds / max(imported, 1), 3) for name, seconds in cpu.items()
        },
        "exit_code": code,
        "report": report,
        "verify_seconds": round(verify_s, 2),
        "verify_differences": len(verified.get("differences", [])),
        "invariants_ok": bool(audit.get("ok")),
        "ok": code == 0 and verify_code == 0 and imported == args.jobs,
    }
