"""`python -m archive_svc audit`: check the invariants over the whole database.

I1: each charge of a job has exactly one debit; each FAILED or CANCELLED job's current charge
and every earlier (retried) charge has exactly one refund; a COMPLETED job's current charge
has none; every balance equals the sum of its user's ledger entries. I2: each committed
transition has exactly one event (a job at version v has events with job_version 1..v, in
outbox order) and no event exists without its job.

The tests call ``audit`` after every scenario; the bench runs the command after a load.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

import asyncpg

from assay.events.v1 import events_pb2

MAX_LISTED = 20  # violations spelled out; the rest are counted


@dataclass
class AuditReport:
    """What the audit found: counts, and the violations (empty when the invariants hold)."""

    jobs: int = 0
    ledger: int = 0
    events: int = 0
    violations: list[str] = field(default_factory=list)
    violation_count: int = 0

    @property
    def ok(self) -> bool:
        """Whether every invariant holds."""
        return self.violation_count == 0

    def add(self, violation: str) -> None:
        """Record one violation (the first MAX_LISTED are kept word for word)."""
        self.violation_count += 1
        if len(self.violations) < MAX_LISTED:
            self.violations.append(violation)

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data."""
        return {**asdict(self), "ok": self.ok}


async def audit(dsn: str) -> AuditReport:
    """Check I1 and I2 over the database at ``dsn`` (a libpq DSN)."""
    conn = await asyncpg.connect(dsn)
    try:
        jobs = await conn.fetch("SELECT job_id, status, charge_count, version FROM jobs")
        ledger = await conn.fetch("SELECT job_id, charge_no, kind FROM ledger_entries")
        events = await conn.fetch(
            "SELECT job_id, job_version, payload FROM outbox WHERE kind = 'event' ORDER BY seq"
        )
        mismatched = await conn.fetch(
            "SELECT a.user_id, a.balance, coalesce(s.total, 0) AS total FROM token_accounts a"
            " FULL JOIN (SELECT user_id, sum(amount) AS total FROM ledger_entries"
            " GROUP BY user_id) s ON s.user_id = a.user_id"
            " WHERE a.balance IS DISTINCT FROM coalesce(s.total, 0)"
        )
    finally:
        await conn.close()
    report = AuditReport(jobs=len(jobs), ledger=len(ledger), events=len(events))
    for row in mismatched:
        report.add(f"user {row['user_id']}: balance {row['balance']} ≠ ledger sum {row['total']}")
    _check_charges(report, jobs, ledger)
    _check_events(report, jobs, events)
    return report


def _check_charges(report: AuditReport, jobs: list[Any], ledger: list[Any]) -> None:
    entries = Counter((e["job_id"], e["charge_no"], str(e["kind"])) for e in ledger if e["job_id"])
    for key, count in entries.items():
        if count != 1:
            report.add(f"job {key[0]} charge {key[1]}: {count} {key[2]} entries")
    for job in jobs:
        for charge in range(1, job["charge_count"] + 1):
            if entries[(job["job_id"], charge, "DEBIT")] != 1:
                report.add(f"job {job['job_id']} charge {charge}: no debit")
            current = charge == job["charge_count"]
            refunded = str(job["status"]) in ("FAILED", "CANCELLED") or not current
            if entries[(job["job_id"], charge, "REFUND")] != int(refunded):
                report.add(
                    f"job {job['job_id']} ({job['status']}) charge {charge}: "
                    f"{entries[(job['job_id'], charge, 'REFUND')]} refund(s), "
                    f"expected {int(refunded)}"
                )


def _check_events(report: AuditReport, jobs: list[Any], events: list[Any]) -> None:
    versions: dict[Any, list[int]] = defaultdict(list)
    for row in events:
        version = row["job_version"]
        if version is None:  # an event row written before migration 0003
            version = events_pb2.JobEvent.FromString(row["payload"]).job_version
        versions[row["job_id"]].append(version)
    for job in jobs:
        seen = versions.pop(job["job_id"], [])
        if seen != list(range(1, job["version"] + 1)):
            report.add(f"job {job['job_id']} at version {job['version']}: events {seen[:10]}")
    for job_id in list(versions)[:MAX_LISTED]:
        report.add(f"events without a job: {job_id}")


def main(dsn: str, as_json: bool) -> int:
    """Run the audit, print it; exit 0 when the invariants hold, 1 when they do not."""
    report = asyncio.run(audit(dsn))
    if as_json:
        print(json.dumps(report.to_dict()))
    else:
        verdict = "hold" if report.ok else f"are broken ({report.violation_count} violations)"
        print(
            f"{report.jobs} jobs, {report.ledger} ledger entries, {report.events} events: "
            f"the invariants {verdict}"
        )
        for violation in report.violations:
            print(f"  {violation}")
    sys.stdout.flush()
    return 0 if report.ok else 1
