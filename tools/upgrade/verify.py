"""What the roll must leave: no call failed as the caller saw it, no submission lost or
charged twice, every job terminal, every watcher given each transition of its jobs once and in
order, every ledger summing to its balance (the archive's own audit, I1 and I2)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from bench.report import percentiles
from bench.stack import audit_report
from tools.upgrade.build import Build
from tools.upgrade.cluster import Cluster
from tools.upgrade.traffic import Traffic

TERMINAL = ("COMPLETED", "FAILED", "CANCELLED")
SETTLE_WITHIN = 120.0


def libpq(url: str) -> str:
    """asyncpg's DSN for a SQLAlchemy URL."""
    return url.replace("postgresql+asyncpg://", "postgresql://")


async def jobs(cluster: Cluster) -> dict[str, asyncpg.Record]:
    """Every job: id → (user, status, version, request id)."""
    conn = await asyncpg.connect(libpq(cluster.database_url))
    try:
        rows = await conn.fetch(
            "SELECT job_id::text AS job_id, user_id, status::text AS status, version,"
            " request_id FROM jobs"
        )
    finally:
        await conn.close()
    return {row["job_id"]: row for row in rows}


def watcher_problems(traffic: Traffic, rows: dict[str, asyncpg.Record]) -> list[str]:
    """Each watcher must have been given versions 1..v of each of its jobs, once, in order."""
    problems = []
    for seen in traffic.seen:
        scope = [row for row in rows.values() if not seen.user or row["user_id"] == seen.user]
        who = seen.user or "operator (every user)"
        if seen.error:
            problems.append(f"watcher {who}: {seen.error}")
        for row in scope:
            got = [version for version, _ in seen.jobs.get(row["job_id"], [])]
            if got != list(range(1, row["version"] + 1)):
                problems.append(f"watcher {who}: job {row['job_id']} versions {got}")
    return problems


async def settle(cluster: Cluster, traffic: Traffic) -> float:
    """Wait until every job is terminal and every watcher has caught up; the seconds taken."""
    started = time.monotonic()
    while time.monotonic() - started < SETTLE_WITHIN:
        rows = await jobs(cluster)
        if all(row["status"] in TERMINAL for row in rows.values()) and not watcher_problems(
            traffic, rows
        ):
            break
        await asyncio.sleep(1.0)
    return time.monotonic() - started


def audit(tree: Build, cluster: Cluster) -> dict[str, Any]:
    """``python -m archive_svc audit --json`` of the tree (ledgers and events)."""
    return audit_report(str(tree.python), tree.env(cluster.env), cwd=tree.src)


@dataclass
class Verdict:
    """The figures the test prints and the problems that fail it."""

    figures: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Everything held."""
        return not self.problems


async def verify(cluster: Cluster, traffic: Traffic, tree: Build) -> Verdict:
    """Check the invariants over the calls, the watchers and the database."""
    verdict = Verdict()
    verdict.figures["settled_in_s"] = round(await settle(cluster, traffic), 1)
    rows = await jobs(cluster)
    calls = traffic.calls
    failed = [call for call in calls if call.error]
    lost = [call for call in calls if not call.error and call.job_id not in rows]
    requests = Counter((row["user_id"], row["request_id"]) for row in rows.values())
    twice = [key for key, count in requests.items() if count > 1]
    answered = {(call.user, call.request_id) for call in calls if not call.error}
    unanswered = [key for key in requests if key not in answered]
    open_jobs = [row for row in rows.values() if row["status"] not in TERMINAL]
    # The load cancels nothing and every payload is valid: a job that ended otherwise than
    # COMPLETED was failed by the roll (a worker that could not read it, say).
    not_completed = [row for row in rows.values() if row["status"] in ("FAILED", "CANCELLED")]
    watchers = watcher_problems(traffic, rows)
    report = audit(tree, cluster)
    statuses = Counter(row["status"] for row in rows.values())
    verdict.figures.update(
        {
            "calls": len(calls),
            "calls_failed": len(failed),
            "submissions_lost": len(lost),
            "charged_twice": len(twice),
            "jobs_without_a_reply": len(unanswered),
            "jobs_non_terminal": len(open_jobs),
            "jobs_not_completed": len(not_completed),
            "jobs": dict(statuses),
            "watchers": len(traffic.seen),
            "watcher_events": sum(sum(s.kinds.values()) for s in traffic.seen),
            "watcher_problems": len(watchers),
            "audit_ok": bool(report.get("ok")),
            "sweeps": dict(Counter(cluster.sweeps)),
        }
    )
    phases: dict[str, list[float]] = {}
    for call in calls:
        if not call.error:
            phases.setdefault(call.phase, []).append(call.seconds)
    verdict.figures["submit_ms"] = {
        phase: {"n": len(samples), **percentiles(samples, 50, 99)}
        for phase, samples in phases.items()
    }
    errors = Counter(call.error.split(":")[0] for call in failed)
    checks = [
        (failed, f"{len(failed)} call(s) failed as the client saw them: {dict(errors)}"),
        (lost, f"{len(lost)} submission(s) answered but not in the database"),
        (twice, f"{len(twice)} request id(s) charged more than once"),
        (unanswered, f"{len(unanswered)} job(s) charged for a call that failed"),
        (open_jobs, f"{len(open_jobs)} job(s) not terminal after settling"),
        (not_completed, f"{len(not_completed)} job(s) failed or cancelled"),
        (watchers, f"watchers: {watchers[:5]}"),
        ([] if report.get("ok") else [1], f"audit: {report.get('violations', [])[:5]}"),
        ([c for c in cluster.sweeps if c != 0], f"sweeps exited {dict(Counter(cluster.sweeps))}"),
    ]
    verdict.problems = [message for found, message in checks if found]
    return verdict
