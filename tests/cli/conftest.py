"""Fixtures for the CLI tests: the `assay` command run as a subprocess against the suite's
PostgreSQL and NATS (so a stack starts only the services, in a few seconds), and checks
that nothing it started outlives it."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

from assay_cli.stack import pid_alive

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
RUN_TIMEOUT = 90.0


@pytest.fixture(scope="session", autouse=True)
def interruptible_cli() -> Iterator[None]:
    """SIGINT at its default in every CLI process these tests start, as a terminal's
    foreground job has it: the tests interrupt `dev up` and `status --watch` as Ctrl-C does.
    A suite started as a background job of a non-interactive shell (`make test &` in a
    script, `nohup`) ignores SIGINT, and an ignored signal is inherited across exec: the CLI
    would then ignore the interrupt and the tests wait for nothing. A handler is not
    inherited (exec resets it to the default), so this process takes Python's own."""
    ignored = signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    if ignored:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    if ignored:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


@dataclass
class Ran:
    """A finished CLI run."""

    args: tuple[str, ...]
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        """stdout as one JSON document."""
        return json.loads(self.stdout)

    def describe(self) -> str:
        """For assertion messages."""
        return f"assay {' '.join(self.args)} → {self.code}\n{self.stdout}\n{self.stderr}"


class Cli:
    """Runs `python -m assay_cli` with this test's environment, from the repository root."""

    def __init__(self, env: dict[str, str], marker: str) -> None:
        self.env = env
        self.marker = marker  # in the environment of every process this test starts

    async def spawn(
        self, *args: str, env: dict[str, str] | None = None
    ) -> asyncio.subprocess.Process:
        """Start the CLI without waiting for it."""
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "assay_cli",
            *args,
            cwd=REPO,
            env=env or self.env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )

    async def run(
        self, *args: str, env: dict[str, str] | None = None, limit: float = RUN_TIMEOUT
    ) -> Ran:
        """Run the CLI to completion."""
        process = await self.spawn(*args, env=env)
        try:
            stdout, stderr = await asyncio.wait_for(process.communicate(), limit)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise AssertionError(f"assay {' '.join(args)} did not finish in {limit}s") from None
        assert process.returncode is not None
        return Ran(args, process.returncode, stdout.decode(), stderr.decode())


def pid_running(pid: int) -> bool:
    """Whether pid is a live process (a zombie counts as gone)."""
    return pid_alive(pid)


def processes_with(marker: str) -> list[int]:
    """Live processes whose environment holds marker (this test's stream prefix)."""
    key, _, value = marker.partition("=")
    found = []
    for process in psutil.process_iter():
        if process.pid == os.getpid():
            continue
        try:
            if process.environ().get(key) == value and pid_alive(process.pid):
                found.append(process.pid)
        except psutil.Error:
            continue
    return found


def running(pids: Iterable[int]) -> list[int]:
    """The pids that still run. `dev down` returns only once each has exited, so callers
    check right after it, without waiting."""
    return [pid for pid in pids if pid_running(pid)]


def state_file(state_dir: str) -> Path:
    """The stack record in a state dir."""
    return Path(state_dir, "stack.json")


def read_state(state_dir: str) -> dict[str, Any]:
    """The stack recorded in a state dir."""
    recorded: dict[str, Any] = json.loads(state_file(state_dir).read_text())
    return recorded


def same_path(a: str, b: str) -> bool:
    """Whether two paths name the same place."""
    return Path(a).resolve() == Path(b).resolve()


@pytest.fixture
def cli_env(servers, database, stream_names, tmp_path) -> dict[str, str]:
    """The CLI's environment: the suite's servers, this test's database, streams and state
    dir, and nothing from the caller's ASSAY_* settings (a stack makes its own issuer key)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("ASSAY_")}
    env.update(
        ASSAY_DATABASE_URL=database,
        ASSAY_NATS_URL=servers.nats_url,
        ASSAY_STREAM_PREFIX=stream_names.prefix,
        ASSAY_STATE_DIR=str(tmp_path / "state"),
        ASSAY_SHUTDOWN_GRACE="5",
        ASSAY_HEARTBEAT_INTERVAL="0.5",
    )
    return env


@pytest.fixture
def cli(cli_env, stream_names) -> Cli:
    """The CLI for this test."""
    return Cli(cli_env, f"ASSAY_STREAM_PREFIX={stream_names.prefix}")


async def stack_up(cli: Cli, *extra: str) -> dict[str, Any]:
    """`assay dev up --detach --json`; the stack's JSON."""
    up = await cli.run("dev", "up", "--detach", "--json", *extra)
    assert up.code == 0, up.describe()
    info: dict[str, Any] = up.json()
    return info


async def stack_down(cli: Cli, info: dict[str, Any]) -> None:
    """`assay dev down`, then check that nothing the stack started still runs."""
    down = await cli.run("dev", "down", "--json")
    assert down.code == 0, down.describe()
    assert sorted(down.json()["stopped"]) == sorted(info["pids"]), down.describe()
    assert running(info["pids"].values()) == []
    assert processes_with(cli.marker) == []
    assert not state_file(info["state_dir"]).exists()


@pytest.fixture
async def stack(cli: Cli) -> AsyncIterator[dict[str, Any]]:
    """A detached local stack on the suite's servers; stopped (and checked) afterwards."""
    info = await stack_up(cli)
    try:
        yield info
    finally:
        await stack_down(cli, info)


async def user_token(cli: Cli, user: str, grant: int = 0) -> str:
    """A user token minted by the CLI, with grant tokens credited by the operator."""
    if grant:
        granted = await cli.run("tokens", "grant", "--user", user, "--amount", str(grant))
        assert granted.code == 0, granted.describe()
    minted = await cli.run("token", "mint", "--user", user, "--role", "user", "--json")
    assert minted.code == 0, minted.describe()
    token: str = minted.json()["token"]
    return token
