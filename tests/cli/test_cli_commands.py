"""Every client command against a running stack: --json output parses and carries the fields
it claims; readable output says the same; failures exit non-zero."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nats
import pytest

from tests.archive.helpers import wait_until
from tests.cli.conftest import EXAMPLES, Cli, stack_down, stack_up, user_token

pytestmark = pytest.mark.e2e

TALENT = str(EXAMPLES / "talent-mapping.json")


def json_lines(text: str) -> list[dict[str, Any]]:
    """Each line of a JSON Lines output, parsed."""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def job_of(item: dict[str, Any]) -> dict[str, Any]:
    """The job state a WatchJobs item carries (an event's or a snapshot's)."""
    state: dict[str, Any] = item.get("event") or item["snapshot"]
    return state


def write_json(path: Path, document: Any) -> str:
    """Write a JSON file; its path."""
    path.write_text(json.dumps(document))
    return str(path)


async def test_job_result_and_token_commands_json(cli: Cli, stack) -> None:
    granted = await cli.run("tokens", "grant", "--user", "erin", "--amount", "5", "--json")
    assert granted.code == 0, granted.describe()
    grant = granted.json()
    assert grant["balance"] == "5" and grant["entry"]["userId"] == "erin"

    minted = await cli.run("token", "mint", "--user", "erin", "--role", "user", "--json")
    token_doc = minted.json()
    assert token_doc["user_id"] == "erin" and token_doc["roles"] == ["user"]
    assert token_doc["expires_at"] > 0
    token = token_doc["token"]

    submitted = await cli.run("submit", TALENT, "--json", "--token", token)
    assert submitted.code == 0, submitted.describe()
    reply = submitted.json()
    job_id = reply["job"]["jobId"]
    assert reply["tokensRemaining"] == "4" and reply["job"]["userId"] == "erin"

    watched = await cli.run("watch", "--job", job_id, "--json", "--token", token)
    assert watched.code == 0, watched.describe()
    items = json_lines(watched.stdout)
    last = job_of(items[-1])
    assert last["jobId"] == job_id and last["status"] == "JOB_STATUS_COMPLETED"

    got = (await cli.run("jobs", "get", job_id, "--json", "--token", token)).json()
    assert got["job"]["jobId"] == job_id and got["job"]["status"] == "JOB_STATUS_COMPLETED"
    assert got["job"]["attempt"] == 1 and got["job"]["resultId"]

    listed = await cli.run("jobs", "list", "--status", "completed", "--json", "--token", token)
    assert [job["jobId"] for job in listed.json()["jobs"]] == [job_id]
    as_operator = await cli.run("jobs", "list", "--user", "erin", "--json")
    assert [job["jobId"] for job in as_operator.json()["jobs"]] == [job_id]
    queued = await cli.run("jobs", "list", "--status", "QUEUED", "--json", "--token", token)
    assert queued.json()["jobs"] == []

    by_job = (await cli.run("results", "get", job_id, "--json", "--token", token)).json()
    result = by_job["result"]
    assert result["jobId"] == job_id and result["testResult"]["archetype"]
    assert result["testResult"]["analyzer"]["locale"] == "id", "Bahasa Indonesia by default"
    assert result["testData"]["riasec"]["investigative"] == 88
    by_id = await cli.run("results", "get", "--result-id", result["resultId"], "--json")
    assert by_id.json() == by_job

    balance = (await cli.run("tokens", "balance", "--json", "--token", token)).json()
    assert balance == {"userId": "erin", "balance": "4"}
    other = (await cli.run("tokens", "balance", "--user", "erin", "--json")).json()
    assert other == balance

    stuck = (await cli.run("stuck", "list", "--json")).json()
    assert stuck["jobs"] == [] and stuck["inFlight"] == "0"
    swept = await cli.run("sweep", "--dry-run", "--json")
    assert swept.code == 0, swept.describe()
    assert swept.json()["found"] == 0 and swept.json()["heldBack"] is False

    replay = await cli.run("watch", "--resume", "1", "--timeout", "1", "--json", "--token", token)
    assert replay.code == 0, replay.describe()
    replayed = [item["event"] for item in json_lines(replay.stdout) if "event" in item]
    assert [e["eventType"] for e in replayed if e["jobId"] == job_id][-1] == "analysis.completed"


async def test_submit_locale_picks_the_profiles_language(cli: Cli, stack) -> None:
    token = await user_token(cli, "hana", grant=2)
    ran = await cli.run("submit", TALENT, "--locale", "en", "--watch", "--json", "--token", token)
    assert ran.code == 0, ran.describe()
    profile = ran.json()["result"]["testResult"]
    assert profile["analyzer"] == {"name": "talent-mapping", "version": "2", "locale": "en"}
    assert "Holland code" in profile["shortSummary"]
    refused = await cli.run("submit", TALENT, "--locale", "fr", "--token", token)
    assert refused.code == 1, refused.describe()
    assert "error: INVALID_ARGUMENT: " in refused.stderr
    assert "  locale: unknown locale 'fr'" in refused.stderr


async def test_human_output_of_client_commands(cli: Cli, stack) -> None:
    token = await user_token(cli, "fay", grant=2)
    submitted = await cli.run("submit", str(EXAMPLES / "teacher-social.json"), "--token", token)
    assert submitted.code == 0, submitted.describe()
    assert "submitted job" in submitted.stdout and "1 token(s) left" in submitted.stdout
    job_id = submitted.stdout.split()[2]
    watched = await cli.run("watch", "--job", job_id, "--token", token)
    assert watched.code == 0 and "COMPLETED" in watched.stdout, watched.describe()

    listed = await cli.run("jobs", "list", "--token", token)
    assert job_id in listed.stdout and listed.stdout.startswith("JOB")
    got = await cli.run("jobs", "get", job_id, "--token", token)
    assert f"job:        {job_id}" in got.stdout and "status:" in got.stdout
    result = await cli.run("results", "get", job_id, "--token", token)
    assert "CAREERS" in result.stdout and "STRENGTHS" in result.stdout
    balance = await cli.run("tokens", "balance", "--token", token)
    assert balance.stdout.strip() == "fay: 1 token(s)"
    stuck = await cli.run("stuck", "list")
    assert stuck.stdout.startswith("0 stuck of 0 processing")


async def test_failed_job_exits_non_zero_and_retry_requeues_it(cli: Cli, stack, tmp_path) -> None:
    # No analyzer exists for the IQ test: the worker fails the job for good and refunds it.
    iq = write_json(tmp_path / "iq.json", {"assessmentName": "AI-Based IQ Test"})
    token = await user_token(cli, "gus", grant=2)
    ran = await cli.run("submit", iq, "--watch", "--token", token)
    assert ran.code == 1, ran.describe()
    assert "ended FAILED: UNSUPPORTED_ASSESSMENT_TYPE" in ran.stderr
    assert "Traceback" not in ran.stderr
    job_id = ran.stdout.split()[2].rstrip(";")
    balance = (await cli.run("tokens", "balance", "--json", "--token", token)).json()
    assert balance["balance"] == "2"  # refunded

    retried = await cli.run("retry", job_id, "--json", "--token", token)
    assert retried.code == 0, retried.describe()
    assert retried.json()["job"]["chargeCount"] == 2
    assert retried.json()["tokensRemaining"] == "1"
    watched = await cli.run("watch", "--job", job_id, "--json", "--token", token)
    assert watched.code == 1, watched.describe()
    final = json_lines(watched.stdout)[-1]
    assert job_of(final)["status"] == "JOB_STATUS_FAILED"

    cancelled = await cli.run("cancel", job_id, "--token", token)
    assert cancelled.code == 1
    assert cancelled.stderr.startswith("error: FAILED_PRECONDITION INVALID_TRANSITION: ")
    assert len(cancelled.stderr.splitlines()) == 1


async def test_cancel_of_a_slow_job(cli: Cli, cli_env) -> None:
    cli.env = {**cli_env, "ASSAY_ANALYZER_DELAY": "60"}  # the worker holds the job a minute
    info = await stack_up(cli)
    try:
        token = await user_token(cli, "hal", grant=1)
        submitted = await cli.run("submit", TALENT, "--json", "--token", token)
        job_id = submitted.json()["job"]["jobId"]
        cancelled = await cli.run("cancel", job_id, "--json", "--token", token)
        assert cancelled.code == 0, cancelled.describe()
        job = cancelled.json()["job"]
        assert job["status"] == "JOB_STATUS_CANCELLED" or job["cancelRequested"] is True
        watched = await cli.run("watch", "--job", job_id, "--token", token)
        assert watched.code == 1, watched.describe()
        assert "CANCELLED" in watched.stdout
        balance = (await cli.run("tokens", "balance", "--json", "--token", token)).json()
        assert balance["balance"] == "1"  # refunded
    finally:
        await stack_down(cli, info)


async def test_watch_relists_when_its_cursor_expired(
    cli: Cli, stack, servers, stream_names
) -> None:
    # The watch is the client's: an expired cursor is marked and the jobs listed again
    # (before the CLI ran on assay_client, it exited with an error instead).
    token = await user_token(cli, "ivo", grant=2)
    first = await cli.run("submit", TALENT, "--json", "--token", token)
    assert first.code == 0, first.describe()
    nc = await nats.connect(servers.nats_url)
    try:
        js = nc.jetstream()
        await js.purge_stream(stream_names.events_stream)  # every event past retention
        second = await cli.run("submit", TALENT, "--json", "--token", token)
        assert second.code == 0, second.describe()
        second_id = second.json()["job"]["jobId"]

        async def after_purge() -> bool:
            return (await js.stream_info(stream_names.events_stream)).state.messages >= 1

        await wait_until(after_purge, within=10)
    finally:
        await nc.close()
    watched = await cli.run(
        "watch", "--resume", "1", "--job", second_id, "--json", "--token", token
    )
    assert watched.code == 0, watched.describe()
    items = json_lines(watched.stdout)
    assert items[0] == {"relisted": {"cursor": "1"}}, watched.describe()
    assert job_of(items[-1])["jobId"] == second_id
    assert job_of(items[-1])["status"] == "JOB_STATUS_COMPLETED"
    readable = await cli.run("watch", "--resume", "1", "--job", second_id, "--token", token)
    assert readable.code == 0, readable.describe()
    assert "cursor 1 is older than the events the notifier keeps" in readable.stderr


async def test_submit_batch_watches_every_job_to_its_end(cli: Cli, stack, tmp_path) -> None:
    token = await user_token(cli, "hana", grant=3)
    document = json.loads(EXAMPLES.joinpath("talent-mapping.json").read_bytes())
    lines = [json.dumps({**document, "locale": locale}) for locale in ("en", "id", "en")]
    batch = tmp_path / "class.jsonl"
    batch.write_text("\n".join(lines) + "\n")

    done = await cli.run("submit", "--batch", str(batch), "--watch", "--token", token)

    assert done.code == 0, done.describe()
    assert "submitted 3 job(s) for 1 user(s); hana has 0 token(s) left" in done.stdout
    assert "COMPLETED 3" in done.stdout
    # The same file again replays: nothing charged, the same jobs.
    again = await cli.run("submit", "--batch", str(batch), "--json", "--token", token)
    assert again.code == 0, again.describe()
    assert len(again.json()["responses"]) == 3
    tier = await cli.run("users", "tier", "hana", "premium")
    assert tier.code == 0 and "hana is now premium (priority 1)" in tier.stdout, tier.describe()
