"""The compatibility checks fail on an incompatible change (a test of `make test-upgrade`'s
tests): a migration that drops the function the last release calls fails the release's
archive tests against the new schema; a renamed proto field fails `buf breaking`; a queue
message the last release's worker cannot analyse fails the message check. Until the last
release has a successor, the release and the tree are the same code, and only these show that
the checks would catch a break."""

from __future__ import annotations

from pathlib import Path

import pytest

from tools.upgrade import broken, messages, schema
from tools.upgrade.build import tree
from tools.upgrade.release import ROOT

pytestmark = [pytest.mark.upgrade, pytest.mark.timeout(600)]


def test_a_migration_dropping_what_the_release_calls_fails_the_schema_check(
    release, tmp_path: Path
) -> None:
    contracted = broken.dropping_migration(tmp_path / "tree")
    # -x: the first of the release's tests that submits is enough to show it.
    result = schema.run(release, contracted, tmp_path / "schema.log", extra=("-x",))
    output = result.log.read_text()
    assert not result.ok, output[-3000:]
    # The release's statement fails, not the migration: PostgreSQL names what is missing.
    assert "function assay_create_submission(" in output, output[-3000:]
    assert "does not exist" in output, output[-3000:]


def test_a_renamed_proto_field_fails_buf_breaking(tmp_path: Path) -> None:
    unchanged = broken.buf_breaking(ROOT, tmp_path / "unchanged")
    assert unchanged.returncode == 0, unchanged.stdout + unchanged.stderr
    protos = broken.renamed_field_protos(
        tmp_path / "renamed", "AnalysisJobMessage", "charge_count", "charges"
    )
    done = broken.buf_breaking(protos, tmp_path)
    assert done.returncode != 0
    assert 'changed name from "charge_count" to "charges"' in done.stdout + done.stderr


def test_a_message_the_release_cannot_read_fails_the_message_check(release, tmp_path: Path) -> None:
    assert messages.check(release, tree()) == []
    unreadable = broken.unreadable_queue_message(tmp_path / "tree")
    problems = messages.check(release, unreadable)
    assert any(
        p.startswith(f"broken → {release.label}: relay queue message") and "analyzer refused" in p
        for p in problems
    ), problems
