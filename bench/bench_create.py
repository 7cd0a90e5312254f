"""The create statement alone, set-based (``assay_create_submissions``, migration 0015) against
the previous release's per-item function (``assay_create_submission`` over the batch), on one
embedded PostgreSQL with fsync, alternated batch by batch:

    python -m bench.bench_create [--sizes 1,16,64] [--batches 40] [--users 16]

Per submission: the server's execution time of the statement (``pg_stat_statements``), the
CPU time of the PostgreSQL backend that ran it (from /proc, so other load on the machine
does not count, unlike the wall time), the WAL it wrote, and the caller's wall time per batch;
and how often the outbox trigger notifies the relay per batch.
Each batch holds ``users`` users round robin, all funded, as the archive sends them (sorted
by user); every statement is its own transaction, committed.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import psutil

from archive_svc import store
from archive_svc.migrate import upgrade_async
from archive_svc.store.tokens import SUBMISSION_FIELDS, Submission
from assaylib.embedded import EmbeddedPostgres
from bench import environment
from bench.report import emit, progress

PREVIOUS = (
    "SELECT s.n, f.* FROM unnest($1::text[], $2::uuid[], $3::uuid[], $4::text[],"
    " $5::bigint[], $6::text[], $7::text[], $8::int4[], $9::bytea[], $10::bytea[],"
    " $11::text[], $12::text[], $13::timestamptz[]) WITH ORDINALITY AS"
    " s(user_id, job_id, result_id, name, cost, request, hash, max_inflight, test_data, raw,"
    " trace, locale, deadline, n)"
    " CROSS JOIN LATERAL assay_create_submission(s.user_id, s.job_id, s.result_id, s.name,"
    " s.cost, s.request, s.hash, s.max_inflight, s.test_data, s.raw, NULL::bytea, s.trace,"
    " s.locale) f"
    " WHERE s.deadline IS NULL OR clock_timestamp() < s.deadline"
    " ORDER BY s.n"
)
"""Release 0.1.0's create statement (``archive_svc/store/tokens.py`` at 83ff2ea)."""

TEST_DATA = bytes.fromhex("0a1208c8011064183c2050287830463850405a48")  # ≈ the bench's 85 B
TEST_DATA += bytes(65)


Create = Callable[[list[Submission]], Awaitable[list[asyncpg.Record]]]


def batch(size: int, users: int, start: int) -> list[Submission]:
    """``size`` submissions over ``users`` users round robin, sorted by user; each with a
    request id (so each writes its idempotency key, as the bench's submissions do)."""
    items = [
        Submission(
            user_id=f"user-{(start + i) % users:04d}",
            job_id=uuid.uuid4(),
            result_id=uuid.uuid4(),
            assessment_name="AI-Driven Talent Mapping",
            cost=1,
            request_id=str(uuid.uuid4()),
            payload_hash="h",
            max_inflight=0,
            test_data=TEST_DATA,
            raw_responses=b"",
            trace_context=None,
            locale="id",
        )
        for i in range(size)
    ]
    return sorted(items, key=lambda s: s.user_id)


def backend_cpu(pid: int) -> float:
    """CPU seconds the backend process has run, to the nanosecond (/proc's schedstat; its
    cpu_times count in ticks of 10 ms, longer than a small batch takes)."""
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e9


async def wal_at(conn: asyncpg.Connection) -> int:
    """The server's WAL position in bytes."""
    return int(await conn.fetchval("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn"))


async def measure(dsn: str, args: argparse.Namespace) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn)
    await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    await conn.executemany(
        "INSERT INTO token_accounts (user_id, balance) VALUES ($1, 1000000000)",
        [(f"user-{u:04d}",) for u in range(args.users)],
    )
    pid = await conn.fetchval("SELECT pg_backend_pid()")
    forms: dict[str, Create] = {
        "previous (per item)": lambda b: conn.fetch(
            PREVIOUS, *([getattr(s, f) for s in b] for f in SUBMISSION_FIELDS if f != "tier")
        ),
        "set-based": lambda b: store.create_submissions(conn, b, {}),
    }
    figures: dict[str, Any] = {}
    for size in args.sizes:
        samples: dict[str, dict[str, list[float]]] = {
            name: {"cpu": [], "wal": [], "wall": []} for name in forms
        }
        await conn.execute("SELECT pg_stat_statements_reset()")
        for n in range(args.warmup + args.batches):
            for name, create in forms.items():
                items = batch(size, args.users, n)
                wal = await wal_at(conn)
                cpu = backend_cpu(pid)
                began = time.perf_counter()
                rows = await create(items)
                wall = time.perf_counter() - began
                assert all(r["outcome"] == "created" for r in rows), rows[:1]
                if n >= args.warmup:
                    samples[name]["wall"].append(wall)
                    samples[name]["cpu"].append(backend_cpu(pid) - cpu)
                    samples[name]["wal"].append(await wal_at(conn) - wal)
        server = {
            r["form"]: float(r["ms"]) / r["calls"]
            for r in await conn.fetch(
                "SELECT CASE WHEN query LIKE '%assay_create_submissions(%' THEN 'set-based'"
                " ELSE 'previous (per item)' END AS form, calls, total_exec_time AS ms"
                " FROM pg_stat_statements WHERE toplevel AND query LIKE '%assay_create_submission%'"
                " AND query NOT LIKE '%pg_stat_statements%'"
            )
        }
        progress(f"{size} per batch measured")
        figures[f"batch of {size}"] = {
            name: {
                "server_ms_per_batch": round(server.get(name, 0.0), 3),
                "server_ms_per_item": round(server.get(name, 0.0) / size, 3),
                "backend_cpu_ms_per_item": round(1000 * statistics.median(s["cpu"]) / size, 3),
                "wal_bytes_per_item": round(statistics.median(s["wal"]) / size),
                "wall_ms_per_batch_p50": round(1000 * statistics.median(s["wall"]), 2),
            }
            for name, s in samples.items()
        }
    figures["notifications per batch of 16"] = {
        name: await notifications(conn, create, args.users) for name, create in forms.items()
    }
    await conn.close()
    return figures


async def notifications(conn: asyncpg.Connection, create: Create, users: int) -> float:
    """How many times the outbox trigger calls ``pg_notify`` per batch of 16 (PostgreSQL
    delivers one notification per transaction either way; each call is work in the backend)."""
    await conn.execute("SELECT pg_stat_statements_reset()")
    for n in range(5):
        await create(batch(16, users, n))
    calls = await conn.fetchval(
        "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements WHERE query LIKE '%pg_notify%'"
    )
    return float(calls) / 5


def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="assay-create-") as tmp:
        postgres = EmbeddedPostgres(
            Path(tmp) / "postgres",
            durable=True,
            die_with_parent=True,
            options=("shared_preload_libraries=pg_stat_statements", "pg_stat_statements.track=all"),
        )
        postgres.start()
        try:
            asyncio.run(upgrade_async(postgres.url()))
            figures = asyncio.run(measure(postgres.dsn(), args))
        finally:
            postgres.stop()
    return {
        "machine": environment.machine(),
        "batches": args.batches,
        "users": args.users,
        "load_average": [round(x, 1) for x in psutil.getloadavg()],
        **figures,
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_create", description=__doc__)
    parser.add_argument("--sizes", default="1,16,64", help="submissions per batch")
    parser.add_argument("--batches", type=int, default=40, help="batches of each form per size")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--users", type=int, default=16)
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args()
    args.sizes = [int(x) for x in args.sizes.split(",")]
    emit(run(args), args.json)


if __name__ == "__main__":
    main()
