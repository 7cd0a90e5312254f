"""How much CPU the run's own processes use: its containers (their cpuacct cgroups) plus the
host processes it started (NATS nodes, PostgreSQL, the kube-proxy stand-in, itself).

Other sessions share this machine, so its overall busy time says nothing about the run's
load; this counts only what the run owns. A process or container that ends between two
samples loses its last interval (an undercount of well under a second per pod replaced).
"""

from __future__ import annotations

import os
from pathlib import Path

CPUACCT = Path("/sys/fs/cgroup/cpuacct/libpod_parent")
TICK = os.sysconf("SC_CLK_TCK")


def _descendants(root: int) -> list[int]:
    """``root`` and every process below it (from /proc's parent links)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


def _process_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def sample(container_ids: list[str]) -> dict[str, float]:
    """CPU seconds so far of each of the run's processes and containers, by a stable key."""
    seconds: dict[str, float] = {}
    for pid in _descendants(os.getpid()):
        used = _process_seconds(pid)
        if used is not None:
            seconds[f"pid:{pid}"] = used
    for container in container_ids:
        try:
            usage = (CPUACCT / f"libpod-{container}" / "cpuacct.usage").read_text()
        except OSError:
            continue
        seconds[f"ctr:{container}"] = int(usage) / 1e9
    return seconds


def used_between(before: dict[str, float], after: dict[str, float]) -> float:
    """CPU seconds used between two samples by what both saw."""
    return sum(max(0.0, after[key] - before[key]) for key in after.keys() & before.keys())
