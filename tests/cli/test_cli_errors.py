"""User mistakes and unreachable servers: a one-line reason (plus one line per bad field),
a non-zero exit, and never a traceback."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from assaylib.embedded import free_port
from tests.cli.conftest import EXAMPLES, Cli, Ran, user_token


def user_error(ran: Ran, code: int, starts: str, lines: int = 1) -> None:
    """The run failed with code and a reason that starts with starts, in lines lines."""
    assert ran.code == code, ran.describe()
    assert "Traceback" not in ran.stderr + ran.stdout, ran.describe()
    assert ran.stderr.startswith(starts), ran.describe()
    assert len(ran.stderr.splitlines()) == lines, ran.describe()


def write(path: Path, text: str) -> str:
    """Write a file; its path."""
    path.write_text(text)
    return str(path)


async def test_bad_files_are_refused_before_anything_is_sent(cli: Cli, tmp_path) -> None:
    missing = await cli.run("submit", str(tmp_path / "nope.json"), "--token", "t")
    user_error(missing, 2, "error: cannot read ")
    assert "No such file or directory" in missing.stderr

    broken = await cli.run("submit", write(tmp_path / "b.json", "{bad"), "--token", "t")
    user_error(broken, 2, "error: ")
    assert "is not valid JSON" in broken.stderr

    listed = await cli.run("submit", write(tmp_path / "l.json", "[1, 2]"), "--token", "t")
    user_error(listed, 2, "error: ")
    assert "expected a JSON object" in listed.stderr

    typed = write(tmp_path / "t.json", '{"riasec": {"realistic": "high", "realistc": 4}}')
    wrong = await cli.run("submit", typed, "--token", "t")
    user_error(wrong, 2, "error: the file has fields the request cannot hold", lines=3)
    assert "  assessment_data.riasec.realistic: must be an integer 0–100" in wrong.stderr
    assert "  assessment_data.riasec.realistc: unknown score 'realistc'" in wrong.stderr


async def test_missing_credentials_and_arguments(cli: Cli, cli_env) -> None:
    no_token = await cli.run("jobs", "list")  # no ASSAY_TOKEN and no stack
    user_error(no_token, 2, "error: no token: ")

    no_key = await cli.run("token", "mint", "--user", "u", "--role", "user")  # and no stack
    user_error(no_key, 2, "error: no signing key: ")

    bad_status = await cli.run("jobs", "list", "--status", "bogus")
    assert bad_status.code == 2 and "unknown status 'bogus'" in bad_status.stderr
    assert "Traceback" not in bad_status.stderr
    neither = await cli.run("results", "get")
    assert neither.code == 2 and "Traceback" not in neither.stderr


async def test_unreachable_service_is_one_sentence(cli: Cli, cli_env) -> None:
    addr = f"127.0.0.1:{free_port()}"
    env = {**cli_env, "ASSAY_ASSESSMENT_ADDR": addr, "ASSAY_TOKEN": "t"}
    ran = await cli.run("submit", str(EXAMPLES / "talent-mapping.json"), env=env)
    user_error(ran, 1, f"error: cannot reach the assessment service at {addr}; is the stack up?")


@pytest.mark.e2e
async def test_refusals_from_a_running_stack(cli: Cli, stack) -> None:
    token = await user_token(cli, "ivy", grant=1)
    invalid = await cli.run("submit", str(EXAMPLES / "invalid.json"), "--token", token)
    user_error(invalid, 1, "error: INVALID_ARGUMENT: ", lines=3)
    assert "  assessment_data.riasec.conventional: required score is missing" in invalid.stderr
    assert "  assessment_data.ocean.extraversion: must be an integer 0–100" in invalid.stderr

    unknown = await cli.run("jobs", "get", str(uuid.uuid4()), "--token", token)
    user_error(unknown, 1, "error: NOT_FOUND: ")
    malformed = await cli.run("results", "get", "not-a-job", "--token", token)
    user_error(malformed, 1, "error: INVALID_ARGUMENT: ", lines=2)
    assert "  job_id: " in malformed.stderr

    first = await cli.run("submit", str(EXAMPLES / "talent-mapping.json"), "--token", token)
    assert first.code == 0, first.describe()
    broke = await cli.run("submit", str(EXAMPLES / "teacher-social.json"), "--token", token)
    user_error(broke, 1, "error: FAILED_PRECONDITION INSUFFICIENT_TOKENS: ")

    not_operator = await cli.run(
        "tokens", "grant", "--user", "ivy", "--amount", "9", "--token", token
    )
    user_error(not_operator, 1, "error: PERMISSION_DENIED")
