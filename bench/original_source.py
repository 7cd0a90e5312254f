"""A database in the original PetaTalenta system's schema, with rows shaped like its own: for
the import's tests and ``python -m bench import``.

The schema is written here from the columns of the original's ``archive.analysis_jobs``,
``archive.analysis_results`` and ``auth.users`` (PetaTalenta/backend at 401a478,
``migrations/current_database_dump_fixed.sql``), with their CHECK constraints and the unique
job_id; the rows are what its services wrote: job ids from uuidv4, the statuses ``queued``,
``processing``, ``completed`` and ``failed``, ``assessment_data`` as its assessment service
stored it (``riasec``, ``ocean``, ``viaIs``, ``industryScore`` in camelCase), and
``persona_profile`` as its analysis worker stored it — valid under the worker's schema
(camelCase, Bahasa Indonesia, its cardinalities). A queued or processing job has its result
row already (status ``processing``, assessment_data, no profile), as the original's later
"phase 2" flow created it at submission; a failed job has one with the error.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg

SCHEMA = """
CREATE SCHEMA IF NOT EXISTS archive;
CREATE SCHEMA IF NOT EXISTS auth;
CREATE TABLE auth.users (
    id uuid PRIMARY KEY,
    username varchar(100),
    email varchar(255) NOT NULL UNIQUE,
    password_hash varchar(255) NOT NULL,
    user_type varchar(20) NOT NULL DEFAULT 'user'
        CHECK (user_type IN ('user', 'admin', 'superadmin', 'moderator')),
    is_active boolean NOT NULL DEFAULT true,
    token_balance integer NOT NULL DEFAULT 0 CONSTRAINT users_token_balance_check
        CHECK (token_balance >= 0),
    last_login timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE archive.analysis_results (
    id uuid PRIMARY KEY,
    user_id uuid NOT NULL,
    assessment_data jsonb,
    persona_profile jsonb,
    status varchar(50) NOT NULL DEFAULT 'completed'
        CHECK (status IN ('completed', 'processing', 'failed')),
    error_message text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    assessment_name varchar(255) NOT NULL DEFAULT 'AI-Driven Talent Mapping'
        CHECK (assessment_name IN ('AI-Driven Talent Mapping', 'AI-Based IQ Test',
                                   'Custom Assessment'))
);
CREATE TABLE archive.analysis_jobs (
    id uuid PRIMARY KEY,
    job_id varchar(255) NOT NULL CONSTRAINT analysis_jobs_job_id_key UNIQUE,
    user_id uuid NOT NULL,
    status varchar(50) NOT NULL DEFAULT 'queued' CONSTRAINT analysis_jobs_status_check
        CHECK (status IN ('queued', 'processing', 'completed', 'failed')),
    result_id uuid,
    error_message text,
    completed_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    assessment_name varchar(255) NOT NULL DEFAULT 'AI-Driven Talent Mapping'
        CHECK (assessment_name IN ('AI-Driven Talent Mapping', 'AI-Based IQ Test',
                                   'Custom Assessment')),
    priority integer NOT NULL DEFAULT 0,
    retry_count integer NOT NULL DEFAULT 0,
    max_retries integer NOT NULL DEFAULT 3,
    processing_started_at timestamptz
);
CREATE INDEX idx_analysis_jobs_created_at ON archive.analysis_jobs (created_at);
CREATE INDEX idx_analysis_jobs_status ON archive.analysis_jobs (status);
"""

LOOSEN = """
ALTER TABLE archive.analysis_jobs DROP CONSTRAINT analysis_jobs_job_id_key;
ALTER TABLE archive.analysis_jobs DROP CONSTRAINT analysis_jobs_status_check;
ALTER TABLE auth.users DROP CONSTRAINT users_token_balance_check;
"""
"""What a damaged source has lost: its unique job ids, its status check, its balance check
(the tests' bad rows need them gone)."""

RIASEC = ("realistic", "investigative", "artistic", "social", "enterprising", "conventional")
OCEAN = ("openness", "conscientiousness", "extraversion", "agreeableness", "neuroticism")
VIA = (
    "creativity", "curiosity", "judgment", "loveOfLearning", "perspective", "bravery",
    "perseverance", "honesty", "zest", "love", "kindness", "socialIntelligence", "teamwork",
    "fairness", "leadership", "forgiveness", "humility", "prudence", "selfRegulation",
    "appreciationOfBeauty", "gratitude", "hope", "humor", "spirituality",
)  # fmt: skip
INDUSTRY = ("teknologi", "kesehatan", "keuangan", "pendidikan", "rekayasa", "kreatif")
ARCHETYPES = (
    "The Analytical Innovator", "The Compassionate Mentor", "The Strategic Builder",
    "The Creative Explorer", "The Reliable Organizer",
)  # fmt: skip
PROSPECT = ("super high", "high", "moderate", "low", "super low")
RISK = ("very high", "high", "moderate", "low", "very low")


def assessment_data(rng: random.Random) -> dict[str, Any]:
    """assessment_data as the original's assessment service stored it."""
    data: dict[str, Any] = {
        "riasec": {name: rng.randint(0, 100) for name in RIASEC},
        "ocean": {name: rng.randint(0, 100) for name in OCEAN},
        "viaIs": {name: rng.randint(0, 100) for name in VIA},
    }
    if rng.random() < 0.5:
        data["industryScore"] = {name: rng.randint(0, 100) for name in INDUSTRY}
    return data


def _career(rng: random.Random, n: int) -> dict[str, Any]:
    keys = (
        "jobAvailability", "salaryPotential", "careerProgression", "industryGrowth",
        "skillDevelopment", "aiOvertake",
    )  # fmt: skip
    return {
        "careerName": f"Karier {n} ({rng.choice(('Data Scientist', 'Guru', 'Arsitek'))})",
        "justification": "Cocok karena minat investigatif dan keterbukaan yang tinggi.",
        "relatedMajors": ["Statistika", "Ilmu Komputer", "Matematika"][: rng.randint(2, 3)],
        "careerProspect": {key: rng.choice(PROSPECT) for key in keys},
    }


def persona_profile(rng: random.Random) -> dict[str, Any]:
    """persona_profile as the original's analysis worker stored it (valid under its schema)."""

    def some(word: str, low: int, high: int) -> list[str]:
        return [f"{word} {n + 1}" for n in range(rng.randint(low, high))]

    return {
        "archetype": rng.choice(ARCHETYPES),
        "coreMotivators": some("Motivasi", 2, 4),
        "learningStyle": "Visual & Kinesthetic",
        "shortSummary": "Anda adalah seorang pemikir analitis dengan kreativitas tinggi.",
        "strengthSummary": "Kekuatan utama Anda terletak pada analisis mendalam.",
        "strengths": some("Kekuatan", 3, 6),
        "weaknessSummary": "Anda cenderung overthinking dan perfeksionis.",
        "weaknesses": some("Kelemahan", 3, 6),
        "careerRecommendation": [_career(rng, n) for n in range(rng.randint(3, 5))],
        "insights": some("Wawasan", 3, 5),
        "skillSuggestion": some("Keterampilan", 3, 6),
        "possiblePitfalls": some("Jebakan", 2, 5),
        "riskTolerance": rng.choice(RISK),
        "workEnvironment": "Lingkungan kerja yang dinamis dan kolaboratif.",
        "roleModel": [
            {"name": f"Tokoh {n + 1}", "title": "Ilmuwan"} for n in range(rng.randint(2, 3))
        ],
        "developmentActivities": {
            "extracurricular": some("Kegiatan", 2, 4),
            "bookRecommendations": [
                {"title": f"Buku {n + 1}", "author": "Penulis", "reason": "Relevan."}
                for n in range(rng.randint(2, 6))
            ],
        },
    }


@dataclass
class Rows:
    """Rows for the three tables, as tuples in their columns' order (``COLUMNS``)."""

    users: list[tuple[Any, ...]] = field(default_factory=list)
    jobs: list[tuple[Any, ...]] = field(default_factory=list)
    results: list[tuple[Any, ...]] = field(default_factory=list)


COLUMNS = {
    "users": ("id", "email", "password_hash", "token_balance", "created_at", "updated_at"),
    "analysis_jobs": (
        "id", "job_id", "user_id", "status", "result_id", "error_message", "completed_at",
        "created_at", "updated_at", "assessment_name", "priority", "retry_count",
        "processing_started_at",
    ),
    "analysis_results": (
        "id", "user_id", "assessment_data", "persona_profile", "status", "error_message",
        "created_at", "updated_at", "assessment_name",
    ),
}  # fmt: skip
SCHEMAS = {"users": "auth", "analysis_jobs": "archive", "analysis_results": "archive"}
MIX = (("completed", 0.85), ("failed", 0.08), ("queued", 0.04), ("processing", 0.03))


def statuses(rng: random.Random) -> Iterator[str]:
    """Statuses in the original's proportions (mostly completed)."""
    names = [name for name, _ in MIX]
    weights = [weight for _, weight in MIX]
    while True:
        yield rng.choices(names, weights)[0]


def generate(jobs: int, users: int, seed: int = 1, start: dt.datetime | None = None) -> Rows:
    """``jobs`` jobs over ``users`` users, each job with its result row."""
    rng = random.Random(seed)
    start = start or dt.datetime(2025, 6, 1, tzinfo=dt.UTC)
    rows = Rows()
    user_ids = [uuid.UUID(int=rng.getrandbits(128), version=4) for _ in range(users)]
    for n, user in enumerate(user_ids):
        rows.users.append((user, f"user{n}@example.id", "x", rng.randint(0, 20), start, start))
    pick = statuses(rng)
    profiles = [RawJson(_json(persona_profile(rng)) or "") for _ in range(min(jobs, 300))]
    for n in range(jobs):
        status = next(pick)
        add_job(
            rows, rng, rng.choice(user_ids), status, start + dt.timedelta(seconds=30 * n),
            profile=rng.choice(profiles) if status == "completed" else None,
        )  # fmt: skip
    return rows


def add_job(
    rows: Rows,
    rng: random.Random,
    user: uuid.UUID,
    status: str,
    created: dt.datetime,
    job_id: str | None = None,
    *,
    data: Any = None,
    profile: Any = None,
    with_result: bool = True,
) -> tuple[str, uuid.UUID | None]:
    """Add one job (and its result row); returns its job id and result id."""
    job_id = job_id or str(uuid.UUID(int=rng.getrandbits(128), version=4))
    result_id = uuid.UUID(int=rng.getrandbits(128), version=4) if with_result else None
    started = created + dt.timedelta(seconds=2) if status != "queued" else None
    done = created + dt.timedelta(seconds=rng.randint(20, 90))
    finished = done if status in ("completed", "failed") else None
    error = "AI service timeout after 3 retries" if status == "failed" else None
    name = "AI-Driven Talent Mapping"
    rows.jobs.append(
        (uuid.uuid4(), job_id, user, status, result_id, error, finished, created,
         finished or started or created, name, 0, 1 if status == "failed" else 0, started)
    )  # fmt: skip
    if result_id is None:
        return job_id, None
    if profile is None and status == "completed":
        profile = persona_profile(rng)
    result_status = {"completed": "completed", "failed": "failed"}.get(status, "processing")
    rows.results.append(
        (result_id, user, _json(data if data is not None else assessment_data(rng)),
         _json(profile), result_status, error, created, finished or created, name)
    )  # fmt: skip
    return job_id, result_id


def _json(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, RawJson) else json.dumps(value, ensure_ascii=False)


class RawJson(str):
    """A jsonb value written as it is (a test's malformed profile: a JSON string, say)."""


async def create(dsn: str, *, loose: bool = False) -> None:
    """Create the original's tables (``loose``: without the checks a damaged source lost)."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(SCHEMA)
        if loose:
            await conn.execute(LOOSEN)
    finally:
        await conn.close()


async def load(dsn: str, rows: Rows) -> None:
    """Copy the rows in (binary COPY, jsonb as text)."""
    conn = await asyncpg.connect(dsn)
    try:
        for table, records in (
            ("users", rows.users),
            ("analysis_results", rows.results),
            ("analysis_jobs", rows.jobs),
        ):
            if records:
                await conn.copy_records_to_table(
                    table,
                    records=records,
                    columns=COLUMNS[table],
                    schema_name=SCHEMAS[table],
                )
    finally:
        await conn.close()
