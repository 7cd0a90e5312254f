"""What `make test-prod-shape` checks after the faults, and prints.

* calls: every submission ``assay-client`` made either was accepted or is counted failed
  (after the client's own retries) — 0 failed;
* jobs (PostgreSQL, the system of record): every accepted job COMPLETED (0 lost); one DEBIT
  ledger entry per job and no refund (0 charged twice); one COMPLETED event per job in the
  outbox (0 completed twice);
* watchers: each job's watcher yielded exactly the job's events in the outbox — every
  version once, in order — whichever notifier pod its stream was on, with no relist;
* the relay: never two archive pods publishing in the same interval (faults.relay_publisher,
  sampled in the background), and one sweep at a time (faults.two_sweeps);
* memory: each container's largest use seen (podman stats) within its limit.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections import Counter
from urllib.parse import urlsplit

from assaylib.embedded import postgres_install_dir
from tools.podkube import cpu
from tools.podkube.faults import STREAMS, Recovery, relay_publisher
from tools.podkube.load import Load
from tools.podkube.pods import _bytes, podman
from tools.podkube.prodrun import ProdRun
from tools.podkube.run import STARTED, say

DRAIN_WITHIN = 120.0


def stream_replicas(run: ProdRun) -> None:
    """Both streams exist, created by the services, at the overlay's replica count."""
    config = next(
        run.cluster.data("ConfigMap", n)
        for n in run.cluster.of_kind("ConfigMap")
        if n.startswith("assay-config")
    )
    wanted = int(config.get("ASSAY_STREAM_REPLICAS", "1"))
    found = {s: run.nats.replicas_of(s) for s in STREAMS}
    if any(n != wanted for n in found.values()):
        raise RuntimeError(f"streams {found}, the overlay asks for {wanted} replicas")
    say(f"streams created by the services: {found} replicas (ASSAY_STREAM_REPLICAS={wanted})")


class Monitor:
    """Samples, in the background, which archive pods relay, and every container's memory."""

    def __init__(self, run: ProdRun) -> None:
        self.run = run
        self.memory: dict[str, tuple[int, int]] = {}
        """container → (largest use seen, limit) in bytes."""
        self.relay_samples = 0
        self.problems: list[str] = []
        self.cpu_seconds = 0.0
        self.wall_seconds = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="monitor", daemon=True)

    def start(self) -> None:
        """Start sampling."""
        self._thread.start()

    def stop(self) -> None:
        """Stop sampling, with one last memory sample."""
        self._stop.set()
        self._thread.join(30)
        self.sample_memory()

    def _loop(self) -> None:
        before, at = cpu.sample(self.container_ids()), time.monotonic()
        while not self._stop.wait(1.0):
            now, stamp = cpu.sample(self.container_ids()), time.monotonic()
            self.cpu_seconds += cpu.used_between(before, now)
            self.wall_seconds += stamp - at
            before, at = now, stamp
            try:
                relay_publisher(self.run, wait=2.0)
                self.relay_samples += 1
            except RuntimeError as err:
                self.problems.append(str(err))
            if self.relay_samples % 5 == 0:
                self.sample_memory()

    def container_ids(self) -> list[str]:
        """Full ids of this run's running containers."""
        label = f"label=assay.podkube.run={self.run.run_id}"
        return podman("ps", "--filter", label, "--no-trunc", "--format", "{{.ID}}").split()

    def cores(self) -> float:
        """CPU cores the run's processes used on average while sampled."""
        return self.cpu_seconds / self.wall_seconds if self.wall_seconds else 0.0

    def sample_memory(self) -> None:
        """One ``podman stats`` of this run's running containers."""
        label = f"label=assay.podkube.run={self.run.run_id}"
        names = podman("ps", "--filter", label, "--format", "{{.Names}}", check=False).split()
        if not names:
            return
        out = podman("stats", "--no-stream", "--format", "json", *names, check=False)
        try:
            stats = json.loads(out or "[]")
        except json.JSONDecodeError:
            return
        for entry in stats:
            name = entry.get("name") or entry.get("Name", "")
            usage, _, limit = str(entry.get("mem_usage") or entry.get("MemUsage", "")).partition(
                " / "
            )
            used, cap = _size(usage), _size(limit)
            before = self.memory.get(name, (0, cap))[0]
            self.memory[name] = (max(before, used), cap)


def _size(text: str) -> int:
    """``123.4MB`` / ``1.5GiB`` / ``512kB`` → bytes (podman's human units)."""
    text = text.strip()
    units = {"kB": 10**3, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KiB": 2**10}
    units |= {"MiB": 2**20, "GiB": 2**30, "B": 1}
    for unit in sorted(units, key=len, reverse=True):
        if text.endswith(unit):
            return int(float(text[: -len(unit)]) * units[unit])
    try:
        return int(_bytes(text)) if text else 0
    except ValueError:
        return 0


def psql(run: ProdRun, query: str) -> list[list[str]]:
    """Rows of a query on the run's database (unaligned, |-separated)."""
    url = urlsplit(run.database_url.replace("+asyncpg", ""))
    done = subprocess.run(
        [
            str(postgres_install_dir() / "bin" / "psql"),
            *("-h", url.hostname or "127.0.0.1", "-p", str(url.port), "-U", "postgres"),
            *("-d", url.path.lstrip("/"), "-At", "-v", "ON_ERROR_STOP=1", "-f", "-"),
        ],
        input=query,  # on stdin: thousands of job ids exceed an argument's length
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return [line.split("|") for line in done.stdout.splitlines() if line]


def everything(run: ProdRun, load: Load, results: list[Recovery], monitor: Monitor) -> None:
    """Drain the load, then every check; print the summary; RuntimeError on any failure."""
    unfinished = load.drain(DRAIN_WITHIN)
    monitor.stop()
    record = load.record
    jobs = list(record.accepted)
    problems = list(monitor.problems)
    if unfinished:
        problems.append(f"{len(unfinished)} jobs never seen ending, e.g. {unfinished[:3]}")
    ids = "'{" + ",".join(jobs) + "}'::uuid[]"
    status = dict(psql(run, f"SELECT job_id, status FROM jobs WHERE job_id = ANY({ids})"))
    lost = [j for j in jobs if status.get(j) != "COMPLETED"]
    ledger = Counter(
        (row[0], row[1])
        for row in psql(
            run,
            "SELECT job_id, kind FROM ledger_entries WHERE kind IN ('DEBIT', 'REFUND')"
            f" AND job_id = ANY({ids})",
        )
    )
    twice_charged = [j for j in jobs if ledger[(j, "DEBIT")] != 1 or ledger[(j, "REFUND")]]
    events: dict[str, list[tuple[int, str]]] = {}
    for job_id, version, state in psql(
        run,
        "SELECT job_id, job_version, status FROM outbox WHERE kind = 'event'"
        f" AND job_id = ANY({ids}) ORDER BY seq",
    ):
        events.setdefault(job_id, []).append((int(version), state))
    twice_completed = [j for j in jobs if sum(s == "COMPLETED" for _, s in events.get(j, [])) > 1]
    names = {1: "QUEUED", 2: "PROCESSING", 3: "COMPLETED", 4: "FAILED", 5: "CANCELLED"}
    watch_bad = []
    for job_id in jobs:
        seen = [(s.version, names.get(s.status, "?")) for s in record.seen.get(job_id, [])]
        if seen != events.get(job_id, []):
            watch_bad.append(f"{job_id}: saw {seen}, committed {events.get(job_id)}")
    over = {n: (u, c) for n, (u, c) in monitor.memory.items() if c and u > c}
    failed = len(record.failures)
    lines = [
        f"load: {monitor.cores():.2f} of {os.cpu_count()} cores used by the run's processes "
        f"(containers, NATS, PostgreSQL, proxy, callers) on average under load",
        f"{len(jobs)} jobs accepted, {failed} calls failed after assay-client's retries"
        + (f" (e.g. {record.failures[0][1]})" if failed else ""),
        f"{len(lost)} jobs lost (not COMPLETED), {len(twice_charged)} charged other than "
        f"once, {len(twice_completed)} completed twice",
        f"watchers: {len(jobs) - len(watch_bad)}/{len(jobs)} jobs' transitions seen once and "
        f"in order; {len(record.watch_errors)} watch errors/relists",
        f"relay: one archive pod publishing in each of {monitor.relay_samples} samples; "
        f"{len(monitor.problems)} with two",
        f"memory: {len(monitor.memory)} containers, {len(over)} over their limit; largest "
        + ", ".join(
            f"{n.split('-', 2)[-1]} {u / 2**20:.0f}/{c / 2**20:.0f}MiB"
            for n, (u, c) in sorted(monitor.memory.items(), key=lambda i: -i[1][0])[:3]
        ),
    ]
    say("recovery times:\n  " + "\n  ".join(r.line() for r in results))
    say("verify:\n  " + "\n  ".join(lines))
    if failed:
        when = ", ".join(f"{at - STARTED:.1f}s" for at, _ in record.failures[:10])
        problems.append(f"{failed} calls failed (at {when}; the progress lines' clock)")
    if lost or twice_charged or twice_completed:
        problems.append(
            f"lost {lost[:3]}, charged {twice_charged[:3]}, completed {twice_completed[:3]}"
        )
    if watch_bad or record.watch_errors:
        problems.append(f"watchers: {watch_bad[:2]} {record.watch_errors[:2]}")
    if over:
        problems.append(f"over their memory limit: {over}")
    if problems:
        raise RuntimeError("verification failed: " + "; ".join(problems))
