"""A submission's inputs stored once, as bytes: ``results.test_data`` and ``raw_responses``
become ``bytea`` holding the AssessmentData's and RawResponses' protobuf bytes (raw answers
of 128 bytes or more as a zstd frame when smaller; maybe then sealed; ``archive_svc.inputs``),
and the submission's queue message is no longer stored beside them: its outbox row has no
payload, and the relay builds the message from the job and the result row, as it did for
retries. In the e2e bench the result row's insert logged 1.5 KB and the queue message's row
0.67 KB (the same data a second time); now 0.61 and 0.44 KB, and the WAL per job went from
7.96 to 6.57 KB (bench/RESULTS.md, WAL step 3).

A row written before keeps its JSON as UTF-8 bytes, which readers recognise by its first byte
(``{``; a frame starts with zstd's magic, a sealed value with a zero byte, protobuf with its
first field's tag); queue messages stored before stay in their outbox rows and are published
as they are. ``raw_responses`` defaults to empty bytes (an empty message), as an erased row's
inputs are. The ALTER rewrites the table under an exclusive lock: fine before the first
release, with no deployed data.

``assay_create_submission`` takes its inputs as ``bytea``: migration 0006's function with those
two parameter types, the same otherwise (it still stores ``p_queue``; the archive passes
NULL). The ``jsonb`` forms of migrations 0003, 0005 and 0006 are dropped: they could no longer
write a result row, so an archive of an older release fails at once rather than in the middle
of a submission.

The downgrade restores them and turns JSON rows back into ``jsonb`` (empty values into
``{}``); it refuses while any row holds protobuf inputs, which SQL cannot turn back into JSON.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03 08:00:00
"""

from __future__ import annotations

from alembic import op

from archive_svc.migrations import earlier

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

JSON_FIRST_BYTE = 123  # "{"
INPUTS = ("test_data", "raw_responses")
JSONB_FORMS = (
    "text, uuid, uuid, text, bigint, text, text, integer, jsonb, jsonb, bytea",
    "text, uuid, uuid, text, bigint, text, text, integer, jsonb, jsonb, bytea, text",
    "text, uuid, uuid, text, bigint, text, text, integer, jsonb, jsonb, bytea, text, text",
)
"""The argument types of assay_create_submission's forms before this migration."""
BYTEA_FORM = "text, uuid, uuid, text, bigint, text, text, integer, bytea, bytea, bytea, text, text"


def _jsonb_functions() -> tuple[str, str, str]:
    """The CREATE FUNCTION statements of migrations 0003, 0005 and 0006."""
    m0003, m0005, m0006 = (
        earlier.load(name)
        for name in ("0003_one_statement.py", "0005_job_traces.py", "0006_job_locale.py")
    )
    first = str(m0003.CREATE_SUBMISSION)
    traced = str(m0005._with_trace(first))
    return first, traced, str(m0006._with_locale(traced))


def create_submission() -> str:
    """Migration 0006's function with its inputs as ``bytea``."""
    function = _jsonb_functions()[2]
    old = "p_test_data jsonb, p_raw jsonb"
    assert function.count(old) == 1, f"migration 0006 no longer holds {old!r}"
    return function.replace(old, "p_test_data bytea, p_raw bytea")


def upgrade() -> None:
    op.execute("ALTER TABLE results ALTER COLUMN raw_responses DROP DEFAULT")
    op.execute(
        "ALTER TABLE results "
        + ", ".join(
            f"ALTER COLUMN {column} TYPE bytea USING convert_to({column}::text, 'UTF8')"
            for column in INPUTS
        )
    )
    op.execute("ALTER TABLE results ALTER COLUMN raw_responses SET DEFAULT ''::bytea")
    for arguments in JSONB_FORMS:
        op.execute(f"DROP FUNCTION assay_create_submission({arguments})")
    op.execute(create_submission())


def downgrade() -> None:
    protobuf = " OR ".join(
        f"(length({column}) > 0 AND get_byte({column}, 0) <> {JSON_FIRST_BYTE})"
        for column in INPUTS
    )
    op.execute(
        f"DO $$ BEGIN IF EXISTS (SELECT 1 FROM results WHERE {protobuf}) THEN RAISE EXCEPTION"
        " 'results hold protobuf inputs, which revision 0011 cannot read; erase or convert"
        " them first'; END IF; END $$"
    )
    op.execute(f"DROP FUNCTION assay_create_submission({BYTEA_FORM})")
    for function in _jsonb_functions():
        op.execute(function)
    op.execute("ALTER TABLE results ALTER COLUMN raw_responses DROP DEFAULT")
    op.execute(
        "ALTER TABLE results "
        + ", ".join(
            f"ALTER COLUMN {column} TYPE jsonb USING CASE WHEN length({column}) = 0"
            f" THEN '{{}}'::jsonb ELSE convert_from({column}, 'UTF8')::jsonb END"
            for column in INPUTS
        )
    )
    op.execute("ALTER TABLE results ALTER COLUMN raw_responses SET DEFAULT '{}'::jsonb")
