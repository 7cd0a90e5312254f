"""Bad rows of the original are never half-imported: each goes to the rejects file with the
original's ids and the reason, the rest is imported, and the command exits non-zero unless
--allow-rejects."""

from __future__ import annotations

import datetime as dt
import random
import uuid
from typing import Any

from bench import original_source
from bench.original_source import RawJson
from tests.archive.helpers import check_invariants
from tests.importer.conftest import Importer, Original, fill

START = dt.datetime(2025, 7, 1, tzinfo=dt.UTC)


def bad_source() -> tuple[original_source.Rows, dict[str, str]]:
    """Good rows and one of each bad kind; the bad ones' ids and the words of their reason."""
    rows = original_source.generate(jobs=12, users=3, seed=11, start=START)
    rng = random.Random(12)
    user = rows.users[0][0]
    at = START + dt.timedelta(days=1)
    expected: dict[str, str] = {}

    def add(status: str, reason: str, **kwargs: Any) -> str:
        job_id, _ = original_source.add_job(
            rows, rng, user, status, at + dt.timedelta(minutes=len(expected)), **kwargs
        )
        expected[job_id] = reason
        return job_id

    add("cancelled", "unknown status")
    scores = original_source.assessment_data(rng)
    scores["riasec"]["realistic"] = 150
    add("completed", "assessment_data", data=scores)
    add("completed", "not a JSON object", profile=RawJson('"{archetype: oops"'))
    add("queued", "cannot be queued", with_result=False)
    missing = add("completed", "is missing")
    rows.results = [r for r in rows.results if r[0] != _result_id(rows, missing)]
    twice = add("failed", "duplicate job_id")
    original_source.add_job(rows, rng, user, "failed", at + dt.timedelta(hours=1), twice)
    debtor = uuid.uuid4()
    rows.users.append((debtor, "debt@example.id", "x", -3, START, START))
    job_id, _ = original_source.add_job(rows, rng, debtor, "completed", at)
    expected[job_id] = "balance is negative"
    orphan = uuid.uuid4()
    rows.results.append(
        (orphan, user, '{"riasec": {}}', None, "failed", "lost", START, START, "Custom Assessment")
    )
    expected[str(orphan)] = "no job"
    return rows, expected


def _result_id(rows: original_source.Rows, job_id: str) -> object:
    return next(job[4] for job in rows.jobs if job[1] == job_id)


async def test_bad_rows_go_to_the_rejects_file(
    importer: Importer, original: Original, database: str
) -> None:
    rows, expected = bad_source()
    await fill(original, rows, loose=True)

    ran = await importer.run("--json")
    assert ran.code == 1, ran.describe()  # rows were rejected
    report = ran.json()
    rejects = importer.rejects()
    found = {r.get("original_job_id") or r.get("result_id"): r["reason"] for r in rejects}
    for ident, words in expected.items():
        assert ident in found, (ident, words, rejects)
        assert words in found[ident], (ident, found[ident])
    assert any(r["kind"] == "user" and "negative" in r["reason"] for r in rejects)
    assert report["jobs"]["completed"]["imported"] >= 1
    assert report["results_without_job"] == 1
    good = sum(c["imported"] for c in report["jobs"].values())
    # Every job row but the bad ones (the duplicate's two rows; the orphan is no job row).
    assert good == len(rows.jobs) - (len(expected) - 1) - 1
    await check_invariants(database)

    again = await importer.run("--allow-rejects", "--json")
    assert again.code == 0, again.describe()
    assert sum(c["imported"] for c in again.json()["jobs"].values()) == 0
    verified = await importer.run("--verify", "--json")
    assert verified.code == 1  # the rejected rows are differences: not in Assay
    missing = {d["id"] for d in verified.json()["differences"] if d["assay"] == "not imported"}
    rejected_jobs = {ident for ident in expected if ident in {str(job[1]) for job in rows.jobs}}
    assert rejected_jobs <= missing
