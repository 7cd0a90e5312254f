"""Tests marked ``upgrade`` build the last release (CHANGELOG.md) in a venv of its own (about
1.5 minutes once, then cached in .upgrade-cache/) and run parts of its test suite: `make
test-upgrade` runs them (ASSAY_TEST_UPGRADE=1); `make test` leaves them out (deselected: they
run in CI all the same, in `make test-upgrade`)."""

from __future__ import annotations

import os

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("ASSAY_TEST_UPGRADE") == "1":
        return
    upgrade = [item for item in items if item.get_closest_marker("upgrade")]
    if upgrade:
        config.hook.pytest_deselected(items=upgrade)
        items[:] = [item for item in items if not item.get_closest_marker("upgrade")]


@pytest.fixture(scope="session")
def release():
    """The last release, built (or taken from the cache)."""
    from tools.upgrade.build import release_build

    return release_build()
