"""`python -m bench all` and `python -m bench.bench_create` cannot rot: the first reads every
figure of issue 30 from its scenarios' reports (here canned, the scenarios themselves run in
test_bench_harness) and runs submit-latency at half the measured capacity; the second runs
a tiny comparison on a real PostgreSQL. No timing is asserted."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench import standing

CANNED: dict[str, dict[str, Any]] = {
    "compare": {
        "ratio": {"jobs_per_second": 1.3, "cpu_ms_per_job": 0.9, "wal_bytes_per_job": 2.8},
        "assay": [{"jobs_per_second": 180.0, "wal_bytes_per_job": 6500}],
        "peer": [{"jobs_per_second": 140.0}],
        "ok": True,
    },
    "submit-latency": {"submit_latency_ms": {"p50": 7.0, "p99": 25.0}, "invariants_ok": True},
    "sweep": {"stuck": 10000, "sweep_seconds": 1.0, "ok": True},
    "watchers": {"event_latency_ms": {"p99": 9.0}, "notifier_kib_above_bare": 8.7},
}


def test_bench_all_reads_every_figure_against_its_target(monkeypatch: pytest.MonkeyPatch) -> None:
    ran: list[tuple[str, ...]] = []

    def scenario(*arguments: str) -> dict[str, Any]:
        ran.append(arguments)
        return CANNED[arguments[0]]

    monkeypatch.setattr(standing, "scenario", scenario)
    args = argparse.Namespace(pairs=1, jobs=100, duration=5.0, stuck=10000, watchers=1000)
    result = standing.run(args)
    assert ("submit-latency", "--rate", "90.0", "--duration", "5.0") in ran
    assert ("submit-latency", "--rate", "20.0", "--duration", "10") in ran  # the idle floor
    assert result["submit_latency_idle"]["submit_latency_ms"] == {"p50": 7.0, "p99": 25.0}
    assert result["capacity_jobs_per_second"] == 180.0
    targets = result["targets"]
    assert set(targets) == set(standing.TARGETS)
    assert targets["submit_p50_ms"].endswith(": met)")
    assert targets["submit_p99_ms"].endswith(": not met)")
    assert targets["notifier_kib_per_idle_watcher_above_bare"].endswith(": not met)")
    assert targets["wal_bytes_per_job"].startswith("6500 ")


TINY = ("--sizes", "1,3", "--batches", "2", "--warmup", "1", "--users", "2")


@pytest.mark.e2e
def test_bench_create_compares_both_statements(tmp_path: Path) -> None:
    report = tmp_path / "create.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench.bench_create", *TINY, "--json", str(report)],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    result = json.loads(report.read_text())
    for size in ("batch of 1", "batch of 3"):
        assert set(result[size]) == {"previous (per item)", "set-based"}
        assert result[size]["set-based"]["wal_bytes_per_item"] > 0
    notified = result["notifications per batch of 16"]
    assert notified == {"previous (per item)": 32.0, "set-based": 1.0}
