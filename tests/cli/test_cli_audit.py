"""`assay audit reads`: an operator's read of a user's result shows up, the user's own does
not, and a user may not list the record."""

from __future__ import annotations

import pytest

from tests.cli.conftest import EXAMPLES, Cli, user_token

pytestmark = pytest.mark.e2e

TALENT = str(EXAMPLES / "talent-mapping.json")


async def test_audit_reads_lists_others_reads_only(cli: Cli, stack) -> None:
    token = await user_token(cli, "hana", grant=1)
    ran = await cli.run("submit", TALENT, "--watch", "--json", "--token", token)
    assert ran.code == 0, ran.describe()
    job_id = (await cli.run("jobs", "list", "--json", "--token", token)).json()["jobs"][0]["jobId"]
    own = await cli.run("results", "get", job_id, "--json", "--token", token)
    assert own.code == 0, own.describe()
    nothing = await cli.run("audit", "reads", "--user", "hana", "--json")
    assert nothing.code == 0, nothing.describe()
    assert nothing.json() == {"records": []}

    operator = await cli.run("results", "get", job_id, "--json")  # the stack's operator token
    assert operator.code == 0, operator.describe()
    listed = await cli.run("audit", "reads", "--user", "hana", "--json")
    [record] = listed.json()["records"]
    assert record["userId"] == "hana" and record["rpc"] == "GetResult"
    assert record["readerIdentity"] == "operator" and record["via"] == "assessment"
    assert record["jobId"] == job_id
    readable = await cli.run("audit", "reads", "--user", "hana")
    assert readable.code == 0 and "GetResult" in readable.stdout
    assert record["reader"] in readable.stdout

    refused = await cli.run("audit", "reads", "--user", "hana", "--token", token)
    assert refused.code == 1 and "PERMISSION_DENIED" in refused.stderr
