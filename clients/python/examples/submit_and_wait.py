"""A caller: submit one Talent Mapping assessment and print its persona profile.

ASSAY_ASSESSMENT_ADDR=… ASSAY_NOTIFIER_ADDR=… ASSAY_TOKEN=… python submit_and_wait.py
"""

import asyncio
import os

from assay_client import AssayClient
from google.protobuf.message import Message

from assay.common.v1 import assessment_pb2


def scores(message: Message, value: int) -> None:
    """Set every score of a RIASEC, OCEAN or VIA message (each 0–100)."""
    for field in message.DESCRIPTOR.fields:
        setattr(message, field.name, value)


async def main() -> None:
    data = assessment_pb2.AssessmentData()
    for group, value in (("riasec", 70), ("ocean", 60), ("via_is", 55)):
        scores(getattr(data, group), value)
    async with AssayClient(
        os.environ["ASSAY_ASSESSMENT_ADDR"],
        notifier_addr=os.environ["ASSAY_NOTIFIER_ADDR"],
        token=os.environ["ASSAY_TOKEN"],  # or a Path (re-read when it changes), or a callable
    ) as assay:
        reply = await assay.submit(data)  # a request id is made: retries charge once
        job, result = await assay.wait(reply.job.job_id)
        print(job.job_id, job.status, result.test_result.archetype if result else job.error_code)


asyncio.run(main())
