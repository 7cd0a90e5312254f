"""Where a call waits: each process's event-loop lag and the servers' own time per RPC, read
from the measured stack's /metrics before and after a run (the difference is the run's).

A submission's latency is the client's wait; the assessment service's SubmitAssessment time
is the part spent inside that service (its call to the archive included), the archive's
CreateSubmissions time the part inside the archive (the statement and its commit). Between
the two, a submission waits in the assessment service for its batch to leave, behind the
batches in flight (``assay_rpc_batch_wait_seconds``). What is left is the links and the
client. Each process's ``assay_event_loop_lag_seconds`` says how long ready work waited
behind other callbacks there: a loop that lags delays every call it serves by as much.
"""

from __future__ import annotations

import asyncio
import math
import urllib.request
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

LAG = "assay_event_loop_lag_seconds"
RPC = "assay_rpc_duration_seconds"
BATCH_WAIT = "assay_rpc_batch_wait_seconds"
RPCS = {
    "assessment": ("assay.assessment.v1.AssessmentService", "SubmitAssessment"),
    "archive": ("assay.archive.v1.ArchiveService", "CreateSubmissions"),
}
"""The RPCs a submission passes through, by the process that serves them."""

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _scrape(url: str) -> Samples:
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        if family.name not in (LAG, RPC, BATCH_WAIT):
            continue
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


async def snapshot(endpoints: Mapping[str, str]) -> dict[str, Samples]:
    """The lag and RPC histograms of every process that serves /metrics."""

    async def one(url: str) -> Samples:
        try:
            return await asyncio.to_thread(_scrape, url)
        except OSError:  # a process without the endpoint (or gone) has nothing to say
            return {}

    found = await asyncio.gather(*(one(url) for url in endpoints.values()))
    return dict(zip(endpoints, found, strict=True))


def quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """PromQL's histogram_quantile over (upper bound, cumulative count) pairs, in seconds."""
    total = buckets[-1][1] if buckets else 0.0
    if total <= 0:
        return 0.0
    rank, lower, below = q * total, 0.0, 0.0
    for upper, count in buckets:
        if count >= rank:
            if math.isinf(upper):
                return lower
            return lower + (upper - lower) * (rank - below) / max(count - below, 1e-12)
        lower, below = upper, count
    return lower


def _histogram(
    before: Samples, after: Samples, name: str, match: Mapping[str, str]
) -> tuple[list[tuple[float, float]], float, float]:
    """(buckets, sum, count) of one histogram's growth between two snapshots."""
    buckets: dict[float, float] = defaultdict(float)
    total = count = 0.0
    for (sample, labels), value in after.items():
        found = dict(labels)
        if any(found.get(k) != v for k, v in match.items()):
            continue
        grown = value - before.get((sample, labels), 0.0)
        if sample == f"{name}_bucket":
            buckets[float(found["le"])] += grown
        elif sample == f"{name}_sum":
            total += grown
        elif sample == f"{name}_count":
            count += grown
    return sorted(buckets.items()), total, count


def _summary(buckets: list[tuple[float, float]], total: float, count: float) -> dict[str, Any]:
    return {
        "samples": int(count),
        "mean": round(1000 * total / count, 2) if count else 0.0,
        "p50": round(1000 * quantile(0.5, buckets), 2),
        "p99": round(1000 * quantile(0.99, buckets), 2),
    }


def waiting(before: Mapping[str, Samples], after: Mapping[str, Samples]) -> dict[str, Any]:
    """Each process's event-loop lag, the submission RPCs' server time and the submissions'
    wait for their batch over the run, in milliseconds (p50/p99 interpolated in the
    histograms' buckets, as Prometheus does)."""
    lag = {}  # every process that samples its loop (a short run may have no sample yet)
    for process, samples in after.items():
        if any(name == f"{LAG}_count" for name, _ in samples):
            lag[process] = _summary(*_histogram(before.get(process, {}), samples, LAG, {}))
    rpc = {}
    for process, (service, method) in RPCS.items():
        samples = after.get(process, {})
        match = {"service": service, "method": method}
        buckets, total, count = _histogram(before.get(process, {}), samples, RPC, match)
        if count:
            rpc[f"{process} {method}"] = _summary(buckets, total, count)
    # the assessment service's batcher, in front of the archive's RPC
    method = RPCS["archive"][1]
    buckets, total, count = _histogram(
        before.get("assessment", {}), after.get("assessment", {}), BATCH_WAIT, {"rpc": method}
    )
    waits = {f"assessment {method}": _summary(buckets, total, count)} if count else {}
    return {"event_loop_lag_ms": lag, "server_time_ms": rpc, "batch_wait_ms": waits}
