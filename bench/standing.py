"""`python -m bench all`: where Assay stands, in one command (issue 30).

Runs, each as a process of its own on fresh servers: `compare` (Assay against the peer at its
best, PAIRS alternated pairs), then `submit-latency` at half the capacity that compare measured
(Assay's median jobs/s) and again at 20/s (the idle floor, for context), then `sweep` of
10,000 stuck jobs and `watchers` (1,000 idle streams and the bare grpc.aio floor). Prints
every figure the issue names beside its target, and the runs' own reports (JSON with
``--json``). Quote ratios from one run: this machine is noisy.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench import environment
from bench.report import progress

TARGETS = {
    "submit_p50_ms": ("≤", 8.0),
    "submit_p99_ms": ("≤", 20.0),
    "jobs_per_second_ratio": ("≥", 1.2),
    "cpu_per_job_ratio": ("≤", 1.0),
    "wal_bytes_per_job": ("≤", 6700.0),
    "event_p99_ms_at_1000_watchers": ("≤", 50.0),
    "sweep_10000_stuck_s": ("≤", 3.0),
    "notifier_kib_per_idle_watcher_above_bare": ("≤", 4.0),
}
"""Issue 30's figures and their targets."""
IDLE_RATE = 20.0
"""Submissions a second of the idle submit-latency run: what a submit costs with the machine
otherwise quiet, the floor under the figure at half capacity."""


def scenario(*arguments: str) -> dict[str, Any]:
    """``python -m bench ARGUMENTS`` in a process of its own; its JSON report."""
    with tempfile.TemporaryDirectory(prefix="assay-all-") as tmp:
        report = Path(tmp) / "report.json"
        command = [sys.executable, "-m", "bench", *arguments, "--json", str(report)]
        progress(" ".join(command[1:]))
        subprocess.run(command, check=False, stdout=subprocess.DEVNULL)
        if not report.exists():
            return {"failed": " ".join(arguments)}
        found: dict[str, Any] = json.loads(report.read_text())
    return found


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every scenario in turn; the figures against their targets."""
    compared = scenario("compare", "--pairs", str(args.pairs), "--jobs", str(args.jobs))
    assay = compared.get("assay", [])
    capacity = statistics.median(r["jobs_per_second"] for r in assay) if assay else 0.0
    rate = round(capacity / 2, 1) if capacity else 50.0
    latency = scenario("submit-latency", "--rate", str(rate), "--duration", str(args.duration))
    idle = scenario("submit-latency", "--rate", str(IDLE_RATE), "--duration", "10")
    sweep = scenario("sweep", "--stuck", str(args.stuck))
    watchers = scenario("watchers", "--count", str(args.watchers))
    ratio = compared.get("ratio", {})
    submit = latency.get("submit_latency_ms", {})
    figures = {
        "submit_p50_ms": submit.get("p50"),
        "submit_p99_ms": submit.get("p99"),
        "jobs_per_second_ratio": ratio.get("jobs_per_second"),
        "cpu_per_job_ratio": ratio.get("cpu_ms_per_job"),
        "wal_bytes_per_job": (
            statistics.median(r["wal_bytes_per_job"] for r in assay) if assay else None
        ),
        "event_p99_ms_at_1000_watchers": watchers.get("event_latency_ms", {}).get("p99"),
        "sweep_10000_stuck_s": sweep.get("sweep_seconds"),
        "notifier_kib_per_idle_watcher_above_bare": watchers.get("notifier_kib_above_bare"),
    }
    return {
        "machine": environment.machine(),
        "capacity_jobs_per_second": capacity,
        "submit_latency_offered_rate": rate,
        "targets": {
            name: f"{value} (target {sign} {limit:g}: {_verdict(value, sign, limit)})"
            for name, value in figures.items()
            for sign, limit in [TARGETS[name]]
        },
        "compare": {key: compared.get(key) for key in ("ratio", "assay", "peer", "ok")},
        "submit_latency": {
            key: latency.get(key)
            for key in (
                "offered_rate",
                "achieved_rate",
                "submit_latency_ms",
                "server_time_ms",
                "batch_wait_ms",
                "event_loop_lag_ms",
                "submit_failures",
                "invariants_ok",
            )
        },
        "submit_latency_idle": {
            "offered_rate": IDLE_RATE,
            "submit_latency_ms": idle.get("submit_latency_ms"),
        },
        "sweep": {key: sweep.get(key) for key in ("stuck", "sweep_seconds", "ok")},
        "watchers": {
            key: watchers.get(key)
            for key in (
                "watchers_open",
                "kib_per_watcher",
                "bare_grpc_kib_per_stream",
                "notifier_kib_above_bare",
                "event_latency_ms",
            )
        },
        "ok": bool(compared.get("ok")) and bool(latency.get("invariants_ok")),
    }


def _verdict(value: float | None, sign: str, limit: float) -> str:
    if value is None:
        return "not measured"
    met = value <= limit if sign == "≤" else value >= limit
    return "met" if met else "not met"
