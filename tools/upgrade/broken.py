"""Deliberately incompatible copies of the working tree, for showing that the checks bite: a
migration that drops what the release calls, a renamed proto field, a queue message the
release's worker cannot analyse. Each is the tree's code copied to a directory and changed
there (run as an overlay build: its source ahead of the installed tree on PYTHONPATH)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tools.upgrade.build import Build, tree
from tools.upgrade.release import ROOT, export, previous_release

CODE = ("archive_svc", "assaylib", "assessment_svc", "worker", "notifier", "gen")
DROP_CREATE_SUBMISSION = """\
DO $$
DECLARE f regprocedure;
BEGIN
    FOR f IN SELECT oid::regprocedure FROM pg_proc WHERE proname = 'assay_create_submission'
    LOOP
        EXECUTE 'DROP FUNCTION ' || f;
    END LOOP;
END $$"""
"""What a contracting migration would do: drop the submission function the release calls
(as the inputs' move to protobuf storage dropped its jsonb form)."""


def copy_of_tree(dest: Path) -> Build:
    """The tree's code in ``dest`` (no caches), run with the tree's interpreter."""
    for name in CODE:
        shutil.copytree(
            ROOT / name, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
        )
    shutil.copytree(ROOT / "clients/python/src", dest / "clients/python/src")
    return Build("broken", dest, tree().python, overlay=True)


def current_head() -> str:
    """The tree's latest migration revision."""
    from alembic.script import ScriptDirectory

    from archive_svc.migrate import alembic_config

    head = ScriptDirectory.from_config(alembic_config("postgresql://unused")).get_current_head()
    assert head is not None
    return head


def dropping_migration(dest: Path) -> Build:
    """The tree plus a migration after its head that drops ``assay_create_submission``."""
    build = copy_of_tree(dest)
    versions = dest / "archive_svc" / "migrations" / "versions"
    (versions / "9999_contract_submissions.py").write_text(
        '"""A contracting change in one release: not allowed (docs/operations.md#upgrading)."""\n'
        "from alembic import op\n\n"
        'revision = "9999"\n'
        f"down_revision = {current_head()!r}\n"
        "branch_labels = None\ndepends_on = None\n\n\n"
        "def upgrade() -> None:\n"
        f"    op.execute({DROP_CREATE_SUBMISSION!r})\n\n\n"
        "def downgrade() -> None:\n"
        '    raise NotImplementedError("a test migration")\n'
    )
    return build


def unreadable_queue_message(dest: Path) -> Build:
    """The tree whose relay writes the queue message without ``assessment_data`` (as if the
    scores had moved to a field only the new worker reads)."""
    build = copy_of_tree(dest)
    events = dest / "archive_svc" / "events.py"
    text = events.read_text()
    assert text.count("assessment_data=data,") == 1, "archive_svc.events.queue_message changed"
    events.write_text(text.replace("assessment_data=data,", "assessment_data=None,"))
    return build


def renamed_field_protos(dest: Path, message: str, old: str, new: str) -> Path:
    """The tree's protos with field ``old`` of ``message`` renamed to ``new``; their dir."""
    shutil.copytree(ROOT / "protos", dest / "protos")
    shutil.copy(ROOT / "buf.yaml", dest / "buf.yaml")
    for proto in (dest / "protos").rglob("*.proto"):
        text = proto.read_text()
        if f"message {message} " in text and f" {old} = " in text:
            proto.write_text(text.replace(f" {old} = ", f" {new} = ", 1))
            return dest
    raise AssertionError(f"no field {old} in message {message}")


def buf_breaking(protos_dir: Path, work: Path) -> subprocess.CompletedProcess[str]:
    """``buf breaking`` of the protos in ``protos_dir`` against the last release's."""
    against = export(previous_release().commit, work / "release-protos", "protos", "buf.yaml")
    buf = tree().bin / "buf"
    return subprocess.run(
        [str(buf), "breaking", "--against", str(against)],
        cwd=protos_dir,
        capture_output=True,
        text=True,
        check=False,
    )
