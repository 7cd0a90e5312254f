"""The stack a measurement runs against: the local stack (embedded PostgreSQL with fsync,
NATS, the four services as processes) plus extra worker processes, and clients to it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import grpc.aio

from assay.archive.v1 import archive_service_pb2 as archive_pb
from assay.archive.v1 import archive_service_pb2_grpc as archive_grpc
from assay.assessment.v1 import assessment_service_pb2_grpc as assessment_grpc
from assay.notifier.v1 import notifier_service_pb2_grpc as notifier_grpc
from assay_cli.stack import LocalStack, StackInfo
from assaylib.auth import bearer_token_interceptors
from assaylib.embedded import EmbeddedNats, postgres_install_dir
from assaylib.issuer import Issuer
from bench import environment
from bench.report import progress

DEFAULTS = {
    "ASSAY_MAX_INFLIGHT_PER_USER": "0",
    "ASSAY_LOG_LEVEL": "WARNING",
    # The bench's analyses take 0.2 ms: a worker keeps many in flight to keep its archive
    # calls batched (measured in bench/RESULTS.md; 16 held the worker back).
    "ASSAY_WORKER_CONCURRENCY": "64",
}
"""Settings of a measured stack unless the command line sets them (--set KEY=VALUE)."""


@dataclass
class BenchStack:
    """A running stack, its settings and its processes."""

    stack: LocalStack
    info: StackInfo
    settings: dict[str, str]

    @property
    def pids(self) -> dict[str, int]:
        """Every process of the stack by name (PostgreSQL and NATS included)."""
        return dict(self.info.pids)

    @property
    def dsn(self) -> str:
        """The stack's database as asyncpg takes it."""
        return self.info.database_url.replace("postgresql+asyncpg://", "postgresql://")

    @property
    def measured_pids(self) -> dict[str, int]:
        """The stack's processes and this one (the load generator shares the machine)."""
        return {**self.pids, "bench (load and watchers)": os.getpid()}

    def channel(self, addr: str, token: str) -> grpc.aio.Channel:
        """A channel to one service carrying ``token``."""
        return grpc.aio.insecure_channel(
            addr,
            interceptors=bearer_token_interceptors(token),
            options=[("grpc.max_receive_message_length", 16 * 1024 * 1024)],
        )

    def user_token(self, user: str) -> str:
        """A bearer token for a user."""
        return Issuer.load(self.info.signing_key_file).mint(user, ["user"], ttl=86400)

    def assessment(self, user: str) -> tuple[grpc.aio.Channel, Any]:
        """An AssessmentService stub acting as ``user``."""
        channel = self.channel(self.info.assessment, self.user_token(user))
        return channel, assessment_grpc.AssessmentServiceStub(channel)

    def archive(self) -> tuple[grpc.aio.Channel, Any]:
        """An ArchiveService stub with the operator token."""
        channel = self.channel(self.info.archive, self.info.token)
        return channel, archive_grpc.ArchiveServiceStub(channel)

    def notifier(self) -> tuple[grpc.aio.Channel, Any]:
        """A NotifierService stub with the operator token."""
        channel = self.channel(self.info.notifier, self.info.token)
        return channel, notifier_grpc.NotifierServiceStub(channel)

    async def grant(self, users: list[str], amount: int) -> None:
        """Fund each user with ``amount`` tokens."""
        channel, archive = self.archive()
        async with channel:
            for user in users:
                await archive.GrantTokens(
                    archive_pb.GrantTokensRequest(user_id=user, amount=amount, reason="bench")
                )

    @property
    def workers(self) -> list[str]:
        """The labels of the stack's worker processes."""
        return [label for label in self.stack.processes if label.startswith("worker")]

    def stop_workers(self) -> None:
        """Stop every worker gracefully (SIGTERM), so that work queues up unserved."""
        for label in self.workers:
            self.stack.stop(label)

    def start_workers(self) -> None:
        """Start the stopped workers again and wait until each serves."""
        for label in self.workers:
            self.stack.start_service("worker", as_name="" if label == "worker" else label)
        for label in self.workers:
            self.stack.wait_healthy(label)

    def audit(self) -> dict[str, Any]:
        """``python -m archive_svc audit --json`` over the stack's database."""
        return audit_report(
            sys.executable, {**os.environ, "ASSAY_DATABASE_URL": self.info.database_url}
        )

    def versions(self) -> dict[str, str]:
        """PostgreSQL's and nats-server's versions."""
        return environment.server_versions(
            str(postgres_install_dir() / "bin" / "postgres"), EmbeddedNats.binary()
        )


def settings_of(overrides: list[str]) -> dict[str, str]:
    """The stack's ASSAY_* settings: the bench defaults, then ``KEY=VALUE`` overrides."""
    settings = dict(DEFAULTS)
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.startswith("ASSAY_"):
            raise SystemExit(f"--set takes ASSAY_NAME=VALUE, not {item!r}")
        settings[key] = value
    return settings


@contextmanager
def running_stack(
    settings: Mapping[str, str], *, workers: int = 1, archives: int = 1
) -> Iterator[BenchStack]:
    """Start a stack with ``workers`` worker processes; stop everything afterwards."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("ASSAY_") or k in ("ASSAY_DATABASE_URL", "ASSAY_NATS_URL")
    }
    env.update(settings)
    with tempfile.TemporaryDirectory(prefix="assay-bench-") as tmp:
        stack = LocalStack(Path(tmp) / "stack", env, die_with_parent=True)
        progress(
            f"starting the stack (PostgreSQL with fsync, NATS, four services, {archives}"
            f" archive(s), {workers} worker(s))"
        )
        info = stack.up(archives=archives)
        try:
            for index in range(2, workers + 1):
                stack.start_service("worker", as_name=f"worker{index}")
                stack.wait_healthy(f"worker{index}")
            yield BenchStack(stack, info, dict(settings))
        finally:
            progress("stopping the stack")
            stack.down()


def audit_report(python: str, env: Mapping[str, str], cwd: Path | None = None) -> dict[str, Any]:
    """``python -m archive_svc audit --json`` run by ``python`` with ``env`` (its database
    URL): its report, or a failed one holding the end of its stderr when it printed none."""
    done = subprocess.run(
        [python, "-m", "archive_svc", "audit", "--json"],
        cwd=cwd,
        env=dict(env),
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        return {"ok": False, "violations": [done.stderr.strip()[-2000:]]}
    return report
