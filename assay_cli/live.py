"""What ``submit --watch`` and ``submit --batch --watch`` share: a watch made live before
submitting, and the exit codes of a followed job."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

from assay_client import WatchItem

from assay_cli.connect import CliError

LIVE_TIMEOUT = 15.0  # seconds for a new watch to become live
EXIT_OK, EXIT_JOB_FAILED = 0, 1
Items = AsyncGenerator[WatchItem, None]


async def until_live(items: Items) -> None:
    """Read up to the watch's first bookmark: from there, every transition will come."""
    try:
        async with asyncio.timeout(LIVE_TIMEOUT):
            async for item in items:
                if item.kind == "bookmark":
                    return
    except TimeoutError:
        pass
    raise CliError(f"the notifier's watch did not start within {LIVE_TIMEOUT:g}s")
