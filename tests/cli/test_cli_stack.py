"""`assay dev up` / `submit --watch` / `dev down` end to end: processes, JSON, cleanup."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import urllib.request
from pathlib import Path
from typing import Any

import jwt
import psutil
import pytest

from tests.cli.conftest import (
    EXAMPLES,
    Cli,
    pid_running,
    processes_with,
    read_state,
    running,
    same_path,
    stack_down,
    stack_up,
    state_file,
    user_token,
)

SERVICES = {"archive", "assessment", "worker", "notifier", "sweep", "issuer"}
STACK_KEYS = {
    "assessment",
    "archive",
    "notifier",
    "worker",
    "token",
    "signing_key_file",
    "jwks_file",
    "state_dir",
    "database_url",
    "nats_url",
    "pids",
    "metrics",
}

pytestmark = pytest.mark.e2e


async def test_up_submit_watch_down_leaves_no_process(cli: Cli, cli_env) -> None:
    info = await stack_up(cli)
    try:
        assert set(info) >= STACK_KEYS
        # The suite's PostgreSQL and NATS were used, not started: only our processes.
        assert set(info["pids"]) == SERVICES
        assert all(pid_running(pid) for pid in info["pids"].values())
        assert same_path(info["state_dir"], cli_env["ASSAY_STATE_DIR"])
        assert info["database_url"] == cli_env["ASSAY_DATABASE_URL"]

        again = await cli.run("dev", "up", "--detach")
        assert again.code == 1
        assert "already up" in again.stderr and "Traceback" not in again.stderr

        token = await user_token(cli, "carol", grant=3)
        ran = await cli.run(
            "submit", str(EXAMPLES / "talent-mapping.json"), "--watch", "--json", "--token", token
        )
        assert ran.code == 0, ran.describe()
        outcome = ran.json()
        job = outcome["job"]
        assert job["status"] == "JOB_STATUS_COMPLETED" and job["userId"] == "carol"
        assert outcome["tokensRemaining"] == "2"
        events = outcome["events"]
        assert [e["eventType"] for e in events] == [
            "analysis.queued",
            "analysis.started",
            "analysis.completed",
        ]
        assert {e["jobId"] for e in events} == {job["jobId"]}
        versions = [int(e["jobVersion"]) for e in events]
        assert versions == sorted(set(versions))
        profile = outcome["result"]["testResult"]
        assert profile["archetype"] and 3 <= len(profile["careerRecommendation"]) <= 5
        assert outcome["result"]["jobId"] == job["jobId"] == outcome["result"]["jobId"]
        # The live status line went to stderr in --json mode.
        assert "QUEUED → PROCESSING (attempt 1) → COMPLETED" in ran.stderr

        balance = await cli.run("tokens", "balance", "--json", "--token", token)
        assert balance.json() == {"userId": "carol", "balance": "2"}

        # Every service process serves /metrics, and the job moved each one's figures.
        assert set(info["metrics"]) == SERVICES - {"sweep", "issuer"}
        metrics = info["metrics"]
        completed = 'assay_job_transitions_total{from_status="PROCESSING",rule="complete",'
        completed += 'to_status="COMPLETED"}'
        assert await scraped(metrics["archive"], completed, reaches=1) >= 1
        assert await scraped(metrics["worker"], "assay_worker_jobs_completed_total", reaches=1) == 1
        accepted = 'assay_assessment_submissions_total{outcome="accepted",reason=""}'
        assert await scraped(metrics["assessment"], accepted, reaches=1) == 1
        sent = "assay_notifier_events_sent_total"
        assert await scraped(metrics["notifier"], sent, reaches=3) >= 3
        # Every service samples its event loop's lag.
        for url in metrics.values():
            assert await scraped(url, "assay_event_loop_lag_seconds_count", reaches=1) >= 1
    finally:
        await stack_down(cli, info)


async def scraped(url: str, sample: str, reaches: float, within: float = 10.0) -> float:
    """The value of ``sample`` at ``url`` once it reaches ``reaches`` (or after ``within``
    seconds): a process counts what it did just after doing it, so the CLI may have seen the
    job complete a moment before every counter moved."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        value = _value(await scrape(url), sample)
        if value >= reaches or asyncio.get_running_loop().time() > deadline:
            return value
        await asyncio.sleep(0.1)


async def scrape(url: str) -> str:
    """The text a Prometheus scrape of ``url`` reads."""

    def get() -> str:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return str(reply.read().decode())

    return await asyncio.to_thread(get)


def _value(exposition: str, sample: str) -> float:
    """The value of one sample line (name with labels, exactly as exposed)."""
    for line in exposition.splitlines():
        name, _, value = line.rpartition(" ")
        if name == sample:
            return float(value)
    raise AssertionError(f"{sample} is not exposed")


async def test_human_output_of_up_and_submit(cli: Cli) -> None:
    up = await cli.run("dev", "up", "--detach")
    assert up.code == 0, up.describe()
    info = read_state(cli.env["ASSAY_STATE_DIR"])
    try:
        assert f"export ASSAY_ASSESSMENT_ADDR={info['assessment']}" in up.stdout
        assert f"export ASSAY_TOKEN={info['token']}" in up.stdout
        assert "Prometheus metrics:" in up.stdout
        assert all(url in up.stdout for url in info["metrics"].values())
        assert "waiting for notifier to be healthy" in up.stderr
        assert "starting the sweep loop" in up.stderr

        token = await user_token(cli, "dave", grant=1)
        ran = await cli.run(
            "submit", str(EXAMPLES / "engineer-original-format.json"), "--watch", "--token", token
        )
        assert ran.code == 0, ran.describe()
        assert "QUEUED → PROCESSING (attempt 1) → COMPLETED" in ran.stdout
        assert "CAREERS" in ran.stdout and "ROLE MODELS" in ran.stdout
    finally:
        await stack_down(cli, info)


_DRAINS: set[asyncio.Task[bytes]] = set()


async def foreground_up(cli: Cli) -> tuple[asyncio.subprocess.Process, dict[str, Any]]:
    """`assay dev up --json` in the foreground; the process and the stack's JSON. Its stderr
    (the stack's progress, its processes' logs) is read all along: a pipe nobody reads fills,
    and a stack whose writes block cannot stop."""
    process = await cli.spawn("dev", "up", "--json")
    assert process.stdout is not None and process.stderr is not None
    drain = asyncio.create_task(process.stderr.read())
    _DRAINS.add(drain)
    drain.add_done_callback(_DRAINS.discard)
    lines: list[str] = []
    async with asyncio.timeout(60):
        while not lines or lines[-1] != "}":  # the end of the stack's JSON
            line = await process.stdout.readline()
            assert line, "dev up ended before printing the stack"
            lines.append(line.decode().rstrip("\n"))
    info: dict[str, Any] = json.loads("\n".join(lines))
    assert set(info["pids"]) == SERVICES
    assert all(pid_running(pid) for pid in info["pids"].values())
    return process, info


# SIGHUP is what a closing terminal sends.
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
async def test_foreground_up_stops_everything_on_signal(cli: Cli, signum: int) -> None:
    process, info = await foreground_up(cli)

    process.send_signal(signum)
    try:
        async with asyncio.timeout(60):
            assert await process.wait() == 0
    except TimeoutError:
        alive = {name: pid for name, pid in info["pids"].items() if pid_running(pid)}
        raise AssertionError(f"dev up did not stop within 60 s; still running: {alive}") from None
    assert running(info["pids"].values()) == []
    assert processes_with(cli.marker) == []
    assert not state_file(info["state_dir"]).exists()


async def test_down_without_a_stack_is_harmless(cli: Cli) -> None:
    down = await cli.run("dev", "down", "--json")
    assert down.code == 0, down.describe()
    assert down.json()["stopped"] == []


async def test_a_foreground_stack_dies_with_a_killed_cli(cli: Cli) -> None:
    process, info = await foreground_up(cli)

    process.kill()  # SIGKILL: no handler runs; the processes it started follow it
    await process.wait()

    async with asyncio.timeout(60):
        # Process exits have no event to wait on: poll, bounded by the timeout.
        while running(info["pids"].values()) or processes_with(cli.marker):  # noqa: ASYNC110
            await asyncio.sleep(0.1)


def _holds_a_private_key(pid: int) -> list[str]:
    """Where a process holds a private key: an environment variable naming or holding one,
    or an open file that is one."""
    process = psutil.Process(pid)
    found = [
        f"env {name}"
        for name, value in process.environ().items()
        if name == "ASSAY_SIGNING_KEY_FILE" or "PRIVATE KEY" in value
    ]
    for opened in process.open_files():
        with contextlib.suppress(OSError):
            if b"PRIVATE KEY" in Path(opened.path).read_bytes()[:4096]:
                found.append(f"open file {opened.path}")
    return found


def _check_issuer_files(stack: dict[str, Any]) -> None:
    """The key (owner-only), the public JWKS, and a token file per service from the key."""
    key_file = Path(stack["signing_key_file"])
    assert b"PRIVATE KEY" in key_file.read_bytes()
    assert key_file.stat().st_mode & 0o077 == 0
    jwks = json.loads(Path(stack["jwks_file"]).read_text())
    assert [sorted(key) for key in jwks["keys"]] == [["alg", "crv", "kid", "kty", "use", "x", "y"]]
    tokens = Path(stack["state_dir"]) / "tokens"
    for name in ("assessment", "worker", "notifier", "sweep"):
        minted = (tokens / f"{name}.token").read_text().strip()
        claims = jwt.decode(minted, options={"verify_signature": False})
        assert (claims["sub"], claims["roles"], claims["iss"]) == (name, ["service"], "assay")
        assert jwt.get_unverified_header(minted)["kid"] == jwks["keys"][0]["kid"]


def _check_no_service_holds_a_key(stack: dict[str, Any]) -> None:
    services = {name: pid for name, pid in stack["pids"].items() if name != "issuer"}
    assert set(services) == SERVICES - {"issuer"}
    for name, pid in services.items():
        assert _holds_a_private_key(pid) == [], name
        environ = psutil.Process(pid).environ()
        assert environ["ASSAY_JWKS_FILE"] == stack["jwks_file"], name
        assert "ASSAY_JWT_SECRET" not in environ, name
    assert _holds_a_private_key(stack["pids"]["issuer"]) != []  # the renewer does: it signs


async def test_the_stack_is_the_issuer_and_no_service_holds_its_key(
    cli: Cli, stack: dict[str, Any]
) -> None:
    await asyncio.to_thread(_check_issuer_files, stack)
    await asyncio.to_thread(_check_no_service_holds_a_key, stack)
    # `token mint --service` signs with the stack's key; the identity reaches only its row.
    minted = await cli.run("token", "mint", "--service", "sweep")
    assert minted.code == 0, minted.describe()
    sweep_token = minted.stdout.strip()
    listed = await cli.run("stuck", "list", "--token", sweep_token)
    assert listed.code == 0, listed.describe()
    granted = await cli.run(
        "tokens", "grant", "--user", "u", "--amount", "1", "--token", sweep_token
    )
    assert granted.code != 0, granted.describe()
    assert "sweep" in granted.stderr and "GrantTokens" in granted.stderr, granted.describe()
