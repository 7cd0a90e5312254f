"""What ``assay import original`` reports: counts per original status, balances, rejects;
the progress bar on a terminal; the rejects file."""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from assay_cli.original import STATUSES, Reject

OUTCOMES = ("read", "imported", "skipped", "rejected", "left")
"""Per original status: rows read; imported now; skipped as already present; rejected (in
the rejects file); left for a later pass (``--in-flight leave``)."""


def _zero() -> dict[str, int]:
    return dict.fromkeys(OUTCOMES, 0)


@dataclass
class Report:
    """The counts of one run (kept in the checkpoint, so a resumed run reports the whole)."""

    jobs: dict[str, dict[str, int]] = field(default_factory=dict)
    users: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(
            ("read", "imported", "corrected", "skipped", "rejected"), 0
        )
    )
    results_without_job: int = 0
    source_balance_sum: int = 0
    """The sum of every source user's balance (negative ones included)."""
    assay_balance_sum: int | None = None
    """The sum of the imported users' Assay balances after the run (None on a dry run)."""
    refunded_at_cut_over: int = 0
    """Jobs in flight imported FAILED and refunded (``--in-flight fail``)."""
    elapsed_s: float = 0.0

    def count(self, status: str, outcome: str, n: int = 1) -> None:
        """Add to one status's count."""
        self.jobs.setdefault(status, _zero())[outcome] += n

    def total(self, outcome: str) -> int:
        """One outcome over every status."""
        return sum(counts[outcome] for counts in self.jobs.values())

    @property
    def rejected(self) -> int:
        """Every rejected row (jobs, results without a job, users)."""
        return self.total("rejected") + self.results_without_job + self.users["rejected"]

    def to_dict(self) -> dict[str, Any]:
        """The checkpoint's and ``--json``'s form."""
        return {
            "jobs": self.jobs,
            "users": self.users,
            "results_without_job": self.results_without_job,
            "source_balance_sum": self.source_balance_sum,
            "assay_balance_sum": self.assay_balance_sum,
            "refunded_at_cut_over": self.refunded_at_cut_over,
            "elapsed_s": round(self.elapsed_s, 3),
        }

    @classmethod
    def from_dict(cls, document: dict[str, Any]) -> Report:
        """Back from ``to_dict``."""
        report = cls()
        report.jobs = {status: {**_zero(), **n} for status, n in document["jobs"].items()}
        report.users.update(document["users"])
        report.results_without_job = int(document["results_without_job"])
        report.source_balance_sum = int(document["source_balance_sum"])
        report.refunded_at_cut_over = int(document.get("refunded_at_cut_over", 0))
        report.elapsed_s = float(document.get("elapsed_s", 0.0))
        return report

    def lines(self) -> list[str]:
        """The report for a person."""
        width = max(len(s) for s in STATUSES) + 2
        rows = [f"{'JOBS':<{width}}" + "".join(f"{o.upper():>10}" for o in OUTCOMES)]
        statuses = list(STATUSES) + sorted(set(self.jobs) - set(STATUSES))
        for status in statuses:
            counts = self.jobs.get(status, _zero())
            rows.append(f"{status:<{width}}" + "".join(f"{counts[o]:>10,}" for o in OUTCOMES))
        rows.append(f"{'total':<{width}}" + "".join(f"{self.total(o):>10,}" for o in OUTCOMES))
        u = self.users
        rows.append(
            f"users: {u['read']:,} read, {u['imported']:,} imported, {u['corrected']:,}"
            f" corrected, {u['skipped']:,} unchanged, {u['rejected']:,} rejected"
        )
        if self.results_without_job:
            rows.append(f"results without a job (rejected): {self.results_without_job:,}")
        assay = "-" if self.assay_balance_sum is None else f"{self.assay_balance_sum:,}"
        rows.append(f"balances: source {self.source_balance_sum:,}, Assay {assay}")
        if self.refunded_at_cut_over:
            rows.append(
                f"  (Assay holds {self.refunded_at_cut_over:,} more token(s) per cost unit:"
                " jobs in flight at the cut-over were failed and refunded)"
            )
        imported = self.total("imported")
        rate = imported / self.elapsed_s if self.elapsed_s else 0.0
        rows.append(f"{imported:,} jobs imported in {self.elapsed_s:.1f} s ({rate:,.0f} jobs/s)")
        return rows


@dataclass
class Checkpoint:
    """Where a run is, saved after every batch (atomically: written aside, then renamed)."""

    path: Path
    options: dict[str, Any]
    phase: str = "users"  # users → jobs → orphans → done
    user_after: str | None = None
    job_after: tuple[dt.datetime, str] | None = None
    report: Report = field(default_factory=Report)
    resumed: bool = False

    @classmethod
    def load(cls, path: Path, options: dict[str, Any]) -> Checkpoint:
        """The unfinished run with the same options, or a new one."""
        try:
            saved = json.loads(path.read_text())
        except (OSError, ValueError):
            return cls(path, options)
        if saved.get("options") != options or saved.get("phase") == "done":
            return cls(path, options)
        after = saved.get("job_after")
        return cls(
            path,
            options,
            saved["phase"],
            saved.get("user_after"),
            (dt.datetime.fromisoformat(after[0]), after[1]) if after else None,
            Report.from_dict(saved["report"]),
            resumed=True,
        )

    def save(self) -> None:
        """Write it durably."""
        document = {
            "options": self.options,
            "phase": self.phase,
            "user_after": self.user_after,
            "job_after": [self.job_after[0].isoformat(), self.job_after[1]]
            if self.job_after
            else None,
            "report": self.report.to_dict(),
        }
        aside = self.path.with_suffix(".tmp")
        with aside.open("w") as stream:
            json.dump(document, stream)
            stream.flush()
            os.fsync(stream.fileno())
        aside.replace(self.path)


class Rejects:
    """The rejects file: one JSON object per line, appended as rows are refused."""

    def __init__(self, path: Path, *, append: bool) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.stream: TextIO = path.open("a" if append else "w", encoding="utf-8")

    def write(self, reject: Reject) -> None:
        """Append one reject."""
        self.stream.write(json.dumps(reject.to_dict(), ensure_ascii=False) + "\n")

    def flush(self) -> None:
        """Make what is written durable before the checkpoint moves past it."""
        self.stream.flush()

    def close(self) -> None:
        """Close the file."""
        self.stream.close()


class Progress:
    """A one-line progress bar on stderr when it is a terminal (nothing otherwise)."""

    def __init__(self, total: int, label: str, enabled: bool) -> None:
        self.total = max(total, 1)
        self.label = label
        self.enabled = enabled and sys.stderr.isatty()
        self.started = time.monotonic()
        self.done = 0

    def advance(self, n: int) -> None:
        """Count n more rows and redraw."""
        self.done += n
        if not self.enabled:
            return
        share = min(self.done / self.total, 1.0)
        bar = "#" * int(share * 30)
        rate = self.done / max(time.monotonic() - self.started, 1e-6)
        sys.stderr.write(
            f"\r{self.label} {self.done:>10,}/{self.total:,} [{bar:<30}] {rate:,.0f}/s"
        )
        sys.stderr.flush()

    def end(self) -> None:
        """Finish the line."""
        if self.enabled:
            sys.stderr.write("\n")
            sys.stderr.flush()
