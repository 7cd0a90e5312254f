"""`assay demo` (what `make demo` runs), pointed at the suite's servers: it works twice in
a row, shows the status changes and the profile, and leaves no process behind."""

from __future__ import annotations

import asyncio
import sys

import pytest

from tests.cli.conftest import EXAMPLES, REPO, Cli, processes_with

pytestmark = pytest.mark.e2e


async def test_demo_twice_in_a_row_leaves_nothing_running(cli: Cli) -> None:
    first = await cli.run("demo")
    assert first.code == 0, first.describe()
    assert "QUEUED → PROCESSING (attempt 1) → COMPLETED" in first.stdout
    assert "Pemikir Inventif" in first.stdout and "CAREERS" in first.stdout  # id: the default
    assert "granted 10 tokens to demo-user" in first.stderr
    assert "stopping the stack" in first.stderr
    assert processes_with(cli.marker) == []

    second = await cli.run("demo", "--json")
    assert second.code == 0, second.describe()
    outcome = second.json()
    assert outcome["job"]["status"] == "JOB_STATUS_COMPLETED"
    assert outcome["job"]["userId"] == "demo-user"
    assert outcome["result"]["testResult"]["archetype"] == "Pemikir Inventif"
    assert processes_with(cli.marker) == []


async def test_demo_with_a_bad_file_starts_nothing(cli: Cli) -> None:
    ran = await cli.run("demo", "--file", str(EXAMPLES / "missing.json"))
    assert ran.code == 2 and ran.stderr.startswith("error: cannot read")
    assert "starting" not in ran.stderr and processes_with(cli.marker) == []


async def test_demo_refused_submission_still_stops_everything(cli: Cli) -> None:
    ran = await cli.run("demo", "--file", str(EXAMPLES / "invalid.json"))
    assert ran.code == 1, ran.describe()
    assert "error: INVALID_ARGUMENT" in ran.stderr and "Traceback" not in ran.stderr
    assert "stopping the stack" in ran.stderr
    assert processes_with(cli.marker) == []


async def test_demo_whose_reader_leaves_still_stops_everything(cli: Cli) -> None:
    # `make demo | head`: the reader leaves; the writes that follow fail with a broken pipe.
    shell = await asyncio.create_subprocess_shell(
        f"{sys.executable} -m assay_cli demo | head -c 1 > /dev/null",
        cwd=REPO,
        env=cli.env,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(shell.communicate(), 120)
    assert "Traceback" not in stderr.decode(), stderr.decode()[-2000:]
    assert "stopping the stack" in stderr.decode()
    assert processes_with(cli.marker) == []
