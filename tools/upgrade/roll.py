"""The rolling update under load: the previous release's cluster serving steady traffic, then
the new release's migrations and its processes one at a time, then back to the previous
release against the new schema, then forward again; then the checks of ``verify``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from assaylib.version import VERSION
from tools.upgrade.build import Build
from tools.upgrade.cluster import REPLICAS, SERVICES, Cluster
from tools.upgrade.traffic import Traffic
from tools.upgrade.verify import Verdict, verify

T = TypeVar("T")


@dataclass
class RollReport:
    """Each step of each roll (seconds to ready, to drained) and the verdict."""

    steps: list[dict[str, Any]] = field(default_factory=list)
    phases: dict[str, float] = field(default_factory=dict)
    verdict: Verdict = field(default_factory=Verdict)


class Roll:
    """One run: the cluster, the load, and an executor whose one thread starts every process
    (each dies with the thread that started it, so that thread lives as long as the run)."""

    def __init__(
        self, release: Build, tree: Build, root: Path, *, steady: float, at_least: float
    ) -> None:
        self.release, self.tree = release, tree
        self.cluster = Cluster(root)
        self.traffic = Traffic(self.cluster)
        self.steady = steady
        self.at_least = at_least  # seconds of load in each roll's phase, for a few hundred calls
        self.report = RollReport()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="upgrade-processes")

    async def _blocking(self, call: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, call, *args)

    def _expected_version(self, build: Build) -> set[str]:
        # 0.1.0 predates assay_build_info: its processes report none.
        return {VERSION} if build is self.tree else {build.label, ""}

    async def _roll_to(self, build: Build, phase: str) -> None:
        for service in SERVICES:
            for replica in REPLICAS:
                ready, drained = await self._blocking(self.cluster.replace, service, replica, build)
                process = self.cluster.running[(service, replica)]
                version = await self._blocking(self.cluster.build_version, process)
                if version not in self._expected_version(build):
                    raise RuntimeError(
                        f"{service}-{replica} reports {version!r}, not {build.label}"
                    )
                self.report.steps.append(
                    {
                        "phase": phase,
                        "process": f"{service}-{replica}",
                        "to": build.label,
                        "ready_s": round(ready, 2),
                        "drained_s": round(drained, 2),
                    }
                )
        self.cluster.sweep_build = build

    async def run(self) -> RollReport:
        """Start the release, load it, roll forward, back and forward; verify."""
        await self._blocking(self.cluster.up_servers)
        sweeper: asyncio.Task[None] | None = None
        try:
            await self._blocking(self.cluster.migrate, self.release)
            await self._roll_to(self.release, "start")
            sweeper = asyncio.create_task(self.cluster.sweep_forever())
            await self.traffic.grant()
            await self.traffic.start()
            await self._phase("steady", self._sleep)
            await self._phase("roll forward", self._forward)
            await self._phase("roll back", self._back)
            await self._phase("roll forward again", self._forward)
            await self.traffic.stop_submitting()
            self.report.verdict = await verify(self.cluster, self.traffic, self.tree)
        finally:
            if sweeper is not None:
                sweeper.cancel()
                await asyncio.gather(sweeper, return_exceptions=True)
            await self.traffic.close()
            await self._blocking(self.cluster.down)
            self._executor.shutdown()
        return self.report

    async def _phase(self, name: str, body: Callable[[str], Any]) -> None:
        started = time.monotonic()
        self.traffic.phase = name
        print(f"upgrade: {name}", flush=True)
        await body(name)
        self.report.phases[name] = round(time.monotonic() - started, 1)
        # The load goes on, still counted in this phase, until it has lasted at_least.
        await asyncio.sleep(max(0.0, started + self.at_least - time.monotonic()))

    async def _sleep(self, _phase: str) -> None:
        await asyncio.sleep(self.steady)

    async def _forward(self, phase: str) -> None:
        await self._blocking(self.cluster.migrate, self.tree)  # the migration Job first
        await self._roll_to(self.tree, phase)

    async def _back(self, phase: str) -> None:
        await self._roll_to(self.release, phase)  # the schema stays the new one
