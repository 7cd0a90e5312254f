"""pytest plugin for a release's own test suite (``-p upgrade_schema_plugin``): "migrate to the
latest revision" means the NEW schema, migrated by the new build's own code — the command in
ASSAY_UPGRADE_MIGRATE (JSON: argv, cwd, env). Every statement the release's archive, relay
and sweep run in its tests then runs against the schema it will meet in a rolling update.

A test that moves the database between the release's own revisions (Alembic upgrades or
downgrades to a named revision) tests those migrations, not compatibility: it is skipped.
Standalone: it runs in the release's venv and imports only that release's code.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from typing import Any

import pytest
from alembic import command

import archive_svc.migrate as release_migrate

_MIGRATE = json.loads(os.environ["ASSAY_UPGRADE_MIGRATE"])


def upgrade(database_url: str, revision: str = "head") -> None:
    """Migrate to the new build's head with the new build's code."""
    if revision != "head":
        pytest.skip(f"moves the schema to the release's revision {revision}")
    env = {**os.environ, **_MIGRATE["env"], "ASSAY_DATABASE_URL": database_url}
    done = subprocess.run(
        _MIGRATE["argv"], cwd=_MIGRATE["cwd"], env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"the new build's migrations failed:\n{done.stdout}{done.stderr}")


async def upgrade_async(database_url: str, revision: str = "head") -> None:
    """``upgrade`` from inside a running event loop."""
    await asyncio.to_thread(upgrade, database_url, revision)


def _between_revisions(*args: Any, **kwargs: Any) -> None:
    pytest.skip("moves the schema between the release's own revisions")


release_migrate.upgrade = upgrade
release_migrate.upgrade_async = upgrade_async
command.upgrade = _between_revisions
command.downgrade = _between_revisions
