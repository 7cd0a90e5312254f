"""`python -m bench compare`: Assay and the peer, alternately, on one machine.

A machine's speed drifts over minutes (other tenants, thermal state), so absolute figures from
different runs do not compare; pairs run back to back do. Each run is its own process (a fresh
interpreter, fresh servers); the report carries every run's figures and the median of the
pairs' ratios of jobs/s, CPU per job and WAL per job (JSON keys ``ratio``, ``assay``,
``peer``).
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench import environment
from bench.report import progress

KEPT = (
    "warmup",
    "jobs_per_second",
    "cpu_ms_per_job_total",
    "cpu_ms_per_job",
    "wal_bytes_per_job",
    "submit_latency_ms",
    "invariants_ok",
)
"""The figures of each run the comparison keeps."""


def one_run(scenario: str, jobs: int, extra: str) -> dict[str, Any]:
    """Run ``python -m bench SCENARIO`` in a process of its own; its JSON report."""
    with tempfile.TemporaryDirectory(prefix="assay-compare-") as tmp:
        report = Path(tmp) / "report.json"
        command = [sys.executable, "-m", "bench", scenario, "--jobs", str(jobs)]
        command += [*shlex.split(extra), "--json", str(report)]
        progress(" ".join(command[1:]))
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        found: dict[str, Any] = json.loads(report.read_text())
    return {key: found[key] for key in KEPT if key in found}


def run(args: argparse.Namespace) -> dict[str, Any]:
    """PAIRS pairs, Assay first in odd pairs and the peer first in even ones."""
    assay: list[dict[str, Any]] = []
    peer: list[dict[str, Any]] = []
    for n in range(args.pairs):
        order = [("e2e", assay, args.e2e), ("peer", peer, args.peer)]
        for scenario, runs, extra in order if n % 2 == 0 else reversed(order):
            runs.append(one_run(scenario, args.jobs, extra))
        progress(
            f"pair {n + 1}: Assay {assay[-1]['jobs_per_second']} jobs/s,"
            f" peer {peer[-1]['jobs_per_second']} jobs/s"
        )
    return {
        "machine": environment.machine(),
        "pairs": args.pairs,
        "ratio": {
            "jobs_per_second": _median_ratio(assay, peer, "jobs_per_second"),
            "cpu_ms_per_job": _median_ratio(assay, peer, "cpu_ms_per_job_total"),
            "wal_bytes_per_job": _median_ratio(assay, peer, "wal_bytes_per_job"),
        },
        "assay": assay,
        "peer": peer,
        "ok": all(run.get("invariants_ok", True) for run in assay),
    }


def _median_ratio(assay: list[dict[str, Any]], peer: list[dict[str, Any]], key: str) -> float:
    ratios = [a[key] / p[key] for a, p in zip(assay, peer, strict=True) if p.get(key)]
    return round(statistics.median(ratios), 2) if ratios else 0.0
