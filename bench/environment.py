"""What a measurement ran on: cores, memory, versions, settings, the command line; and the
CPU each process of the stack spent."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import signal
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg
import psutil

PACKAGES = ("grpcio", "protobuf", "asyncpg", "SQLAlchemy", "nats-py", "uvloop", "procrastinate")


def machine() -> dict[str, Any]:
    """Cores, memory, Python and package versions, and the command line."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return {
        "cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "cpu": _cpu_model(),
        "python": platform.python_version(),
        "packages": versions,
        "command": " ".join([f"python -m {_module()}", *sys.argv[1:]]),
    }


def _module() -> str:
    """The module this process runs as (``bench``, ``bench.bench_create``, …)."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return spec.name.removesuffix(".__main__") if spec is not None else "bench"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def server_versions(postgres_bin: str | None, nats_bin: str | None) -> dict[str, str]:
    """The PostgreSQL and nats-server versions (when their binaries are known)."""
    found = {}
    for name, binary in (("postgres", postgres_bin), ("nats-server", nats_bin)):
        if binary:
            done = subprocess.run([binary, "--version"], capture_output=True, text=True)
            found[name] = (done.stdout or done.stderr).strip()
    return found


@dataclass(frozen=True)
class CpuSample:
    """Cumulative CPU seconds (user + system) of each named process and its children."""

    seconds: dict[str, float]

    @classmethod
    def take(cls, pids: Mapping[str, int]) -> CpuSample:
        """Sample every process in ``pids`` (PostgreSQL with all of its backends)."""
        seconds = {}
        for name, pid in pids.items():
            try:
                process = psutil.Process(pid)
                own = pid == os.getpid()  # the stack's processes are this one's children
                tree = [process] if own else [process, *process.children(recursive=True)]
                total = 0.0
                for member in tree:
                    try:
                        times = member.cpu_times()
                        total += times.user + times.system
                    except psutil.NoSuchProcess:
                        continue
                seconds[name] = total
            except psutil.NoSuchProcess:
                continue
        return cls(seconds)

    def since(self, earlier: CpuSample) -> dict[str, float]:
        """CPU seconds spent by each process between two samples."""
        return {
            name: round(value - earlier.seconds.get(name, 0.0), 2)
            for name, value in self.seconds.items()
        }


def rss_bytes(pid: int) -> int:
    """Resident memory of one process."""
    return int(psutil.Process(pid).memory_info().rss)


PROFILED = ("archive", "assessment", "worker", "notifier")


def start_profilers(
    pids: Mapping[str, int], directory: str | None
) -> list[subprocess.Popen[bytes]]:
    """py-spy on every service process, writing collapsed stacks to ``directory`` (none when
    ``directory`` is None). ``BENCH_GIL`` set: only samples holding the GIL (what runs
    Python, not threads waiting); ``BENCH_NATIVE`` set: C frames too."""
    if not directory:
        return []
    os.makedirs(directory, exist_ok=True)
    # The one installed beside this interpreter (a dev extra), else whichever is on PATH.
    beside = os.path.join(os.path.dirname(sys.executable), "py-spy")
    py_spy = beside if os.path.exists(beside) else "py-spy"
    return [
        subprocess.Popen(
            [
                py_spy,
                "record",
                "--pid",
                str(pid),
                "--rate",
                "250",
                "--format",
                "raw",
                *(["--native"] if os.environ.get("BENCH_NATIVE") else ["--nonblocking"]),
                *(["--gil"] if os.environ.get("BENCH_GIL") else []),
                "-o",
                os.path.join(directory, f"{name}.txt"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for name, pid in pids.items()
        if name in PROFILED or name.startswith("worker")
    ]


def stop_profilers(profilers: list[subprocess.Popen[bytes]]) -> None:
    """Stop the profilers; each writes its file as it exits."""
    for profiler in profilers:
        profiler.send_signal(signal.SIGINT)
    for profiler in profilers:
        profiler.wait(60)


async def wal_counters(dsn: str) -> tuple[int, int]:
    """PostgreSQL's current WAL position in bytes (``pg_current_wal_lsn``) and the full-page
    images written so far (``pg_stat_wal.wal_fpi``: the whole page a change logs when it is
    the page's first since a checkpoint), read in one statement. The difference of two
    readings is what everything on the server wrote between them."""
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(
            "SELECT pg_current_wal_lsn() - '0/0'::pg_lsn AS position, wal_fpi FROM pg_stat_wal"
        )
        return int(row["position"]), int(row["wal_fpi"])
    finally:
        await conn.close()


async def wal_position(dsn: str) -> int:
    """PostgreSQL's current WAL position in bytes (``wal_counters``)."""
    return (await wal_counters(dsn))[0]


async def settle(dsn: str) -> None:
    """``VACUUM (ANALYZE)`` the whole database: what autovacuum does a minute after a
    warm-up. Statistics taken on the warm-up's rows invalidate the plans the sessions cached
    while the tables were empty (those scan a table whole), as they would in a deployment
    that has run for a minute: the measurement that follows is of the steady state."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("VACUUM (ANALYZE)")
    finally:
        await conn.close()


def per_job(cpu: Mapping[str, float], wal_bytes: int, jobs: int) -> dict[str, Any]:
    """CPU milliseconds per job of each process and in all, and WAL bytes per job."""
    jobs = max(jobs, 1)
    return {
        "cpu_ms_per_job": {k: round(v * 1000 / jobs, 2) for k, v in cpu.items()},
        "cpu_ms_per_job_total": round(sum(cpu.values()) * 1000 / jobs, 2),
        "wal_bytes_per_job": round(wal_bytes / jobs),
    }
