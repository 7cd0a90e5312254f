"""Time encryption at rest (ASSAY_DATA_KEY_FILE) per job, against the encoding it adds to.

Run from the repository root: ``python bench/bench_sealing.py [--jobs N]``. Per job the
archive seals test_data and raw_responses (submission) and the profile (completion), and
opens the inputs to build the queue message (relay); a read opens a result row. Prints the
CPU microseconds of each, for a Talent Mapping submission with 30 raw answers and its profile
(all stored as protobuf, ``archive_svc.inputs``, ``archive_svc.profiles``: sealed as they
are).
"""

from __future__ import annotations

import argparse
import base64
import os
import time
import uuid
from collections.abc import Callable

from archive_svc import inputs, profiles
from archive_svc.events import queue_message
from archive_svc.sealing import DataKeys
from assay.common.v1 import assessment_pb2
from bench.load import sample
from worker.analyzers import analyze

ASSESSMENT_NAME = "AI-Driven Talent Mapping"


def cpu_us(work: Callable[[], object], jobs: int) -> float:
    """CPU microseconds per call of ``work``."""
    work()  # warm up
    started = time.process_time()
    for _ in range(jobs):
        work()
    return (time.process_time() - started) / jobs * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=5000)
    args = parser.parse_args()
    keys = DataKeys.parse("bench " + base64.b64encode(os.urandom(32)).decode())
    data = sample(7)
    raw = assessment_pb2.RawResponses()
    for index in range(30):
        raw.responses["riasec"].items.add(question_id=f"q{index}", number_value=index)
    profile = analyze(ASSESSMENT_NAME, data, raw)
    job_id = uuid.uuid4()
    job = {"job_id": job_id, "user_id": "u", "result_id": uuid.uuid4(), "assessment_name": "x"}
    values = {
        "test_data": inputs.encode(data),
        "raw_responses": inputs.encode(raw),
        "test_result": profiles.encode(profile),
    }
    message = queue_message(job, data, raw, 1).SerializeToString()
    row = {"job_id": job_id, **{c: keys.seal_column(v, c, job_id) for c, v in values.items()}}
    inputs_only = {c: row[c] for c in ("job_id", "test_data", "raw_responses")}

    def seal_job() -> None:
        for column, value in values.items():
            keys.seal_column(value, column, job_id)
        keys.open_row(inputs_only)

    def encode_job() -> None:
        inputs.encode(data), inputs.encode(raw), profiles.encode(profile)
        queue_message(job, data, raw, 1).SerializeToString()

    sizes = ", ".join(f"{c} {len(v)} B" for c, v in values.items())
    print(f"sizes: {sizes}, queue message {len(message)} B")
    print(f"seal a job (3 values) and open its inputs: {cpu_us(seal_job, args.jobs):.0f} µs")
    print(f"open a result row (3 values): {cpu_us(lambda: keys.open_row(row), args.jobs):.0f} µs")
    encoding = cpu_us(encode_job, args.jobs)
    print(f"for scale, encode the job's values and queue message: {encoding:.0f} µs")


if __name__ == "__main__":
    main()
