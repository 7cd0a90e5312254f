"""A cluster on loopback, as Kubernetes would run Assay: two processes of each service, each
started from the build (release or tree) it is given, and a rolling update's one step —
start the replacement, wait until it reports SERVING, then SIGTERM the old process and let it
drain.

PostgreSQL and NATS come from the embedded wheels, the tokens from a stack issuer as in
``assay dev up`` (``assay_cli.stack`` and ``assaylib.embedded``, reused). Each service has
three address slots, all named in every caller's target (``ip:port,…``, round robin): two
hold the running processes and the third is where a replacement starts — a new pod's new
address beside the old one's, as a Service's endpoints have it. The relay is a singleton as
in a cluster (every archive runs one; a PostgreSQL advisory lock lets one at a time work);
the sweep is the CronJob's command, run every ``SWEEP_EVERY`` seconds, never overlapping.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from assay_cli.renew import renew_tokens, token_path
from assay_cli.stack import MODULES, LocalStack, wait_serving
from assaylib.access import SERVICE_IDENTITIES
from assaylib.embedded import EmbeddedNats, EmbeddedPostgres, die_with_parent, free_port
from assaylib.issuer import Issuer, write_jwks
from tools.upgrade.build import Build

SERVICES = ("archive", "assessment", "notifier", "worker")
"""The roll's order after the migration Job (docs/operations.md#upgrading); the sweep last."""
REPLICAS = ("a", "b")
SLOTS = 3
SWEEP_EVERY = 10.0
SETTINGS = {
    "ASSAY_LOG_LEVEL": "WARNING",
    "ASSAY_MAX_INFLIGHT_PER_USER": "0",
    "ASSAY_SHUTDOWN_GRACE": "10s",
}
"""What every process of the cluster runs with, beside addresses, servers and keys."""
STOP_WITHIN = 30.0
"""A pod's terminationGracePeriodSeconds: a process still running then has failed to drain."""


class ClusterError(RuntimeError):
    """A process did not start, become ready or drain; the message names its log."""


@dataclass
class Process:
    """One running service process: which build, where it listens, its /metrics."""

    service: str
    replica: str
    build: Build
    slot: int
    popen: subprocess.Popen[bytes]
    log: Path
    metrics: str


@dataclass
class Cluster:
    """The servers, the address slots and the running processes."""

    root: Path
    env: dict[str, str] = field(default_factory=dict)
    slots: dict[str, list[str]] = field(default_factory=dict)
    running: dict[tuple[str, str], Process] = field(default_factory=dict)
    operator_token: str = ""
    issuer: Issuer | None = None
    postgres: EmbeddedPostgres | None = None
    nats: EmbeddedNats | None = None
    sweep_build: Build | None = None
    sweeps: list[int] = field(default_factory=list)
    """Exit status of each sweep run (0: swept, or another held the lock)."""
    started: int = 0

    def targets(self, service: str) -> str:
        """Every slot of ``service``: what its callers dial."""
        return ",".join(self.slots[service])

    @property
    def database_url(self) -> str:
        """The cluster's database (SQLAlchemy form)."""
        return self.env["ASSAY_DATABASE_URL"]

    def up_servers(self) -> None:
        """PostgreSQL, NATS, the issuer's keys and tokens, the slots; no service yet."""
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "logs").mkdir(exist_ok=True)
        self.postgres = EmbeddedPostgres(self.root / "postgres", die_with_parent=True)
        self.postgres.start()
        LocalStack._create_database(self.postgres, "assay")
        self.nats = EmbeddedNats(self.root / "nats", die_with_parent=True)
        self.nats.start()
        self.issuer = Issuer.generate()
        jwks = self.root / "issuer" / "jwks.json"
        write_jwks(jwks, [self.issuer])
        renew_tokens(self.issuer, self.root, SERVICE_IDENTITIES, 4 * 3600)
        self.operator_token = self.issuer.mint("upgrade-operator", ["operator"], ttl=4 * 3600)
        self.slots = {name: [f"127.0.0.1:{free_port()}" for _ in range(SLOTS)] for name in SERVICES}
        base = {k: v for k, v in os.environ.items() if not k.startswith(("ASSAY_", "OTEL_"))}
        self.env = {
            **base,
            **SETTINGS,
            "ASSAY_DATABASE_URL": self.postgres.url("assay"),
            "ASSAY_NATS_URL": self.nats.url,
            "ASSAY_JWKS_FILE": str(jwks),
            "ASSAY_JWT_ISSUER": self.issuer.issuer,
            "ASSAY_JWT_AUDIENCE": self.issuer.audience,
            "ASSAY_SERVICE_TOKEN_FILE": str(token_path(self.root, "{name}")),
            **{f"ASSAY_{name.upper()}_ADDR": self.targets(name) for name in SERVICES},
        }

    def user_token(self, user: str) -> str:
        """A caller's bearer token."""
        assert self.issuer is not None
        return self.issuer.mint(user, ["user"], ttl=4 * 3600)

    def migrate(self, build: Build) -> None:
        """The migration Job: ``python -m archive_svc migrate`` of ``build``."""
        log = self.root / "logs" / f"migrate-{build.label}.log"
        with open(log, "ab") as out:
            done = subprocess.run(
                [str(build.python), "-m", "archive_svc", "migrate"],
                cwd=build.src,
                env=build.env(self.env),
                stdout=out,
                stderr=subprocess.STDOUT,
                check=False,
            )
        if done.returncode != 0:
            raise ClusterError(f"migrations of {build.label} failed; see {log}")

    def _free_slot(self, service: str) -> int:
        taken = {p.slot for (name, _), p in self.running.items() if name == service}
        return next(i for i in range(SLOTS) if i not in taken)

    def start(self, service: str, replica: str, build: Build) -> Process:
        """Start one process of ``service`` on a free slot and wait until it is SERVING."""
        slot = self._free_slot(service)
        addr = self.slots[service][slot]
        self.started += 1
        log = self.root / "logs" / f"{service}-{replica}-{self.started}-{build.label}.log"
        metrics = f"127.0.0.1:{free_port()}"
        env = build.env(self.env)
        env[f"ASSAY_{service.upper()}_ADDR"] = addr  # its own listen address
        env["ASSAY_METRICS_ADDR"] = metrics
        with open(log, "ab") as out:
            popen = subprocess.Popen(
                [str(build.python), "-m", MODULES[service]],
                cwd=build.src,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent(signal.SIGTERM),
            )
        process = Process(service, replica, build, slot, popen, log, f"http://{metrics}/metrics")
        try:
            wait_serving(addr, 60.0, lambda: popen.poll() is None)
        except Exception as err:
            popen.kill()
            popen.wait()
            raise ClusterError(f"{service}-{replica} ({build.label}): {err}; see {log}") from None
        return process

    def stop(self, process: Process) -> float:
        """SIGTERM, then wait for the drain (ClusterError beyond STOP_WITHIN or on a non-zero
        exit); the seconds it took."""
        started = time.monotonic()
        process.popen.send_signal(signal.SIGTERM)
        try:
            code = process.popen.wait(STOP_WITHIN)
        except subprocess.TimeoutExpired:
            process.popen.kill()
            process.popen.wait()
            raise ClusterError(
                f"{process.service}-{process.replica} did not drain within {STOP_WITHIN:.0f}s;"
                f" see {process.log}"
            ) from None
        if code != 0:
            raise ClusterError(
                f"{process.service}-{process.replica} exited {code} on SIGTERM; see {process.log}"
            )
        return time.monotonic() - started

    def replace(self, service: str, replica: str, build: Build) -> tuple[float, float]:
        """One step of a rolling update: the new process ready, then the old one drained.
        Returns (seconds to ready, seconds to drain)."""
        began = time.monotonic()
        new = self.start(service, replica, build)
        ready = time.monotonic() - began
        old = self.running.get((service, replica))
        self.running[(service, replica)] = new
        drained = self.stop(old) if old is not None else 0.0
        return ready, drained

    def build_version(self, process: Process) -> str:
        """The version a process reports in ``assay_build_info`` ("" when none)."""
        with urllib.request.urlopen(process.metrics, timeout=5) as reply:
            for line in reply.read().decode().splitlines():
                if line.startswith("assay_build_info{"):
                    return str(line.split('version="', 1)[1].split('"', 1)[0])
        return ""

    def _sweep_log(self) -> BinaryIO:
        return open(self.root / "logs" / "sweep.log", "ab")

    async def sweep_forever(self) -> None:
        """The CronJob: one sweep (of the current ``sweep_build``) every SWEEP_EVERY seconds."""
        while True:
            build = self.sweep_build
            if build is not None:
                env = build.env(self.env)
                env["ASSAY_METRICS_ADDR"] = ""
                log = self._sweep_log()
                try:
                    child = await asyncio.create_subprocess_exec(
                        str(build.python),
                        "-m",
                        "assessment_svc.sweep",
                        cwd=build.src,
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                    self.sweeps.append(await child.wait())
                finally:
                    log.close()
            await asyncio.sleep(SWEEP_EVERY)

    def down(self) -> None:
        """Stop every process, then NATS and PostgreSQL."""
        for process in self.running.values():
            if process.popen.poll() is None:
                process.popen.send_signal(signal.SIGTERM)
        for process in self.running.values():
            try:
                process.popen.wait(STOP_WITHIN)
            except subprocess.TimeoutExpired:
                process.popen.kill()
                process.popen.wait()
        self.running.clear()
        with contextlib.suppress(Exception):
            if self.nats is not None:
                self.nats.stop()
        with contextlib.suppress(Exception):
            if self.postgres is not None:
                self.postgres.stop()
