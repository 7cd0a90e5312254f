"""`python -m bench` cannot rot: a tiny end-to-end run through the real stack writes every
field its report promises, with the invariants checked. No timing is asserted."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench import waiting

pytestmark = pytest.mark.e2e


def bench(
    report: Path, *args: str, module: str = "bench", timeout: float = 240
) -> tuple[str, dict[str, Any]]:
    """Run ``python -m MODULE ARGS --json REPORT`` to success (``bench``, or one of its
    stand-alone modules); its printed report and JSON."""
    done = subprocess.run(
        [sys.executable, "-m", module, *args, "--json", str(report)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done.stdout, json.loads(report.read_text())


def test_a_tiny_e2e_run_reports_every_figure_and_holds_the_invariants(tmp_path: Path) -> None:
    printed, result = bench(
        tmp_path / "e2e.json",
        *("e2e", "--jobs", "6", "--concurrency", "3", "--users", "2", "--watchers", "2"),
        *("--warmup", "4"),
    )
    assert result["jobs"] == result["completed"] == 6
    # the warm-up's 4 jobs ran first (the audit sees them) and are not in the measurement
    assert result["warmup"] == 4 and result["audit"]["jobs"] == 10
    assert result["invariants_ok"] is True and result["audit"]["events"] == 30
    assert result["jobs_per_second"] > 0
    assert result["wal_bytes_per_job"] > 0 and result["wal_full_page_images_per_job"] >= 0
    assert set(result["submit_latency_ms"]) == {"p50", "p95", "p99"}
    assert set(result["event_latency_ms"]) == {"p50", "p99"}
    assert {"cores", "memory_gib", "packages", "command"} <= set(result["machine"])
    assert result["events_seen"] == {
        "analysis.queued": 6,
        "analysis.started": 6,
        "analysis.completed": 6,
    }
    assert "jobs_per_second:" in printed  # the printed report
    # where a submission waits: every service's loop lag, both hops' server time
    assert {"archive", "assessment", "worker", "notifier"} <= set(result["event_loop_lag_ms"])
    served = result["server_time_ms"]
    assert set(served) == {"assessment SubmitAssessment", "archive CreateSubmissions"}
    assert served["assessment SubmitAssessment"]["samples"] == 6
    assert 1 <= served["archive CreateSubmissions"]["samples"] <= 6  # batched
    # and the wait for a batch to leave, each submission once
    assert result["batch_wait_ms"]["assessment CreateSubmissions"]["samples"] == 6
    assert all(s["p50"] <= s["p99"] for s in served.values())


def test_quantiles_are_read_from_buckets_as_prometheus_does() -> None:
    buckets = [(0.01, 50.0), (0.02, 90.0), (0.05, 100.0), (math.inf, 100.0)]
    assert waiting.quantile(0.5, buckets) == pytest.approx(0.01)
    assert waiting.quantile(0.7, buckets) == pytest.approx(0.015)
    assert waiting.quantile(0.99, buckets) == pytest.approx(0.047)
    assert waiting.quantile(0.99, [(0.01, 0.0), (math.inf, 0.0)]) == 0.0
    assert waiting.quantile(0.99, [(0.01, 1.0), (math.inf, 10.0)]) == 0.01  # beyond the last


def test_a_tiny_watchers_run_measures_the_notifier_beside_a_bare_stream(tmp_path: Path) -> None:
    _, result = bench(
        tmp_path / "watchers.json", "watchers", "--count", "20", "--jobs", "4", "--rate", "20"
    )
    assert result["watchers_open"] == 20 and result["watch_errors"] == {}
    figures = ("kib_per_watcher", "bare_grpc_kib_per_stream", "notifier_kib_above_bare")
    assert all(isinstance(result[name], float) for name in figures)
    assert result["notifier_kib_above_bare"] == pytest.approx(
        result["kib_per_watcher"] - result["bare_grpc_kib_per_stream"], abs=0.2
    )
    assert set(result["event_latency_ms"]) == {"p50", "p99"}


def test_the_bare_unary_floor_is_timed_on_both_ends(tmp_path: Path) -> None:
    _, result = bench(
        tmp_path / "bare.json",
        *("--calls", "400", "--concurrency", "2"),
        module="bench.bare_unary",
        timeout=120,
    )
    assert result["calls"] == 400 and result["calls_per_second"] > 0
    assert result["server_cpu_us_per_call"] > 0 and result["caller_cpu_us_per_call"] > 0
    assert result["machine"]["command"].startswith("python -m bench.bare_unary --calls 400")


def test_the_bare_publish_floor_is_timed_each_way(tmp_path: Path) -> None:
    _, result = bench(
        tmp_path / "publish.json",
        *("--messages", "300", "--page", "64", "--rounds", "1"),
        module="bench.bare_publish",
        timeout=120,
    )
    assert result["messages"] == 300 and result["page"] == 64
    # each way stored every message (the run raises otherwise) and was timed on both ends
    for way in ("acked", "counted", "atomic"):
        assert result[way]["messages_per_second"] > 0
        assert result[way]["publisher_cpu_us_per_message"] >= 0
    assert result["machine"]["command"].startswith("python -m bench.bare_publish --messages 300")


def test_a_tiny_batch_run_times_batches_against_single_submits(tmp_path: Path) -> None:
    _, result = bench(tmp_path / "batch.json", "batch", "--items", "5", "--rounds", "1")
    assert result["items"] == 5 and result["batch_replayed"] is True
    assert result["invariants_ok"] is True and result["audit"]["jobs"] == 15
    assert {"batch_ms_per_item", "single_sequential_ms_per_item"} <= set(result)


def test_a_tiny_lanes_run_measures_both_modes(tmp_path: Path) -> None:
    _, result = bench(
        tmp_path / "lanes.json",
        *("lanes", "--backlog", "20", "--premium", "2", "--every", "0.01"),
        *("--both", "10", "--bulk", "10", "--singles", "1", "--repeat", "2"),
    )
    assert result["invariants_ok"] is True
    assert len(result["throughput_lanes_over_fifo_rounds"]) == 2  # the rounds, alternated
    assert len(result["lanes"]["bulk_jobs_per_second_rounds"]) == 2
    for mode in ("lanes", "fifo"):
        assert result[mode]["premium_jobs"] == 2
        assert set(result[mode]["premium_wait_ms"]) == {"p50", "p99"}
        assert result[mode]["drain_jobs_per_second"] > 0
    assert result["fifo"]["settings"]["ASSAY_TIERS"] == "standard:1"
