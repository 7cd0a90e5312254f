"""A subscriber: every status change of the caller's jobs, exactly once, across restarts.

ASSAY_ASSESSMENT_ADDR=… ASSAY_NOTIFIER_ADDR=… ASSAY_TOKEN=… python subscribe.py CURSOR_FILE
"""

import asyncio
import os
import sys

from assay_client import AssayClient, FileCursorStore


async def main(cursor_file: str) -> None:
    async with AssayClient(
        os.environ["ASSAY_ASSESSMENT_ADDR"],
        notifier_addr=os.environ["ASSAY_NOTIFIER_ADDR"],
        token=os.environ["ASSAY_TOKEN"],
    ) as assay:
        async for item in assay.watch(cursor_store=FileCursorStore(cursor_file)):
            if item.kind == "relisted":
                print("cursor expired: relisting")  # snapshots of the jobs follow
            elif item.kind == "snapshot":
                print("now", item.job_id, item.status, item.version, flush=True)
            else:
                print("event", item.job_id, item.status, item.version, flush=True)


asyncio.run(main(sys.argv[1]))
