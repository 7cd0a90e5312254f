"""The persona profile is stored compressed: ``results.test_result`` becomes ``bytea``, holding
the profile's protobuf bytes compressed by zstd with a dictionary trained on profiles (maybe
then sealed), about 0.7 KB where TOAST stored its JSON in 5.5 KB (``archive_svc.profiles``).

A row written before keeps its JSON as UTF-8 bytes, which readers recognise by its first byte
(``{``; a frame starts with zstd's magic, a sealed value with a zero byte). The ALTER rewrites
the table under an exclusive lock: fine before the first release, with no deployed data.

The table also gets ``fillfactor = 60``: a result row is written twice (its submission, then
its profile by COMPLETE, seconds later), and with room left in its page the update stays in
the page (HOT) — PostgreSQL then logs only the bytes that changed (the profile, not the
submission before it) and no index entries: 0.85 KB less WAL per job in the e2e bench. (Its
earlier trial, −6 %, was with the 10 KB JSON profile, which went to TOAST either way.) The
space is not lost: each row grows into it when its profile arrives.

The downgrade turns JSON rows back into ``jsonb`` and refuses while any row holds a compressed
profile, which SQL cannot turn back into JSON.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03 06:45:00
"""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

JSON_FIRST_BYTE = 123  # "{"


def upgrade() -> None:
    op.execute(
        "ALTER TABLE results ALTER COLUMN test_result TYPE bytea"
        " USING convert_to(test_result::text, 'UTF8')"
    )
    op.execute("ALTER TABLE results SET (fillfactor = 60)")


def downgrade() -> None:
    op.execute(
        "DO $$ BEGIN IF EXISTS (SELECT 1 FROM results WHERE test_result IS NOT NULL"
        f" AND get_byte(test_result, 0) <> {JSON_FIRST_BYTE}) THEN RAISE EXCEPTION"
        " 'results hold compressed profiles, which revision 0009 cannot read; erase or"
        " convert them first'; END IF; END $$"
    )
    op.execute(
        "ALTER TABLE results ALTER COLUMN test_result TYPE jsonb"
        " USING convert_from(test_result, 'UTF8')::jsonb"
    )
    op.execute("ALTER TABLE results RESET (fillfactor)")
