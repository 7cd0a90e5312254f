"""The knowledge tables (JSON files in ``tables/<locale>/``), parsed once per locale into frozen
dataclasses. Every locale has the same files with the same keys; only the texts differ."""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

from assaylib import jobs

Band = str
"""A Big Five band: "low", "moderate" or "high"."""

BANDS: tuple[Band, ...] = ("low", "moderate", "high")

LOCALES: tuple[str, ...] = jobs.LOCALES
"""The locales with knowledge tables (BCP 47 language tags): Bahasa Indonesia and English."""

TABLE_FILES: tuple[str, ...] = (
    "riasec.json",
    "careers.json",
    "via.json",
    "ocean.json",
    "industries.json",
    "phrases.json",
)
"""The files every locale's table folder holds."""


@dataclass(frozen=True, slots=True)
class RoleModelEntry:
    """A real person whose path illustrates an interest type."""

    name: str
    title: str


@dataclass(frozen=True, slots=True)
class BookEntry:
    """A real book, its author, and why it fits the trait it is filed under."""

    title: str
    author: str
    reason: str


@dataclass(frozen=True, slots=True)
class InterestType:
    """One Holland (RIASEC) interest type and the texts derived from it."""

    key: str
    letter: str
    label: str
    description: str
    motivator: str
    strength: str
    pitfall: str
    learning: str
    environment: str
    skills: tuple[str, ...]
    extracurriculars: tuple[str, ...]
    role_models: tuple[RoleModelEntry, ...]
    books: tuple[BookEntry, ...]


@dataclass(frozen=True, slots=True)
class Career:
    """A career with its Holland code, related majors, industries and prospect ratings."""

    name: str
    code: str
    summary: str
    majors: tuple[str, ...]
    industries: tuple[str, ...]
    prospects: Mapping[str, str]

    @property
    def family(self) -> str:
        """The career family: the first letter of its Holland code."""
        return self.code[0]


@dataclass(frozen=True, slots=True)
class Virtue:
    """One of the six VIA virtues that group the 24 character strengths."""

    key: str
    label: str
    motivator: str
    insight: str
    extracurricular: str
    book: BookEntry


@dataclass(frozen=True, slots=True)
class CharacterStrength:
    """One VIA character strength; ``lesser`` describes it when it is among the lowest."""

    key: str
    label: str
    virtue: str
    description: str
    lesser: str


@dataclass(frozen=True, slots=True)
class TraitBand:
    """What one band of one Big Five trait contributes to the profile."""

    learning: str
    environment: str
    insight: str
    weakness: str | None
    pitfall: str | None
    skill: str | None
    book: BookEntry | None


@dataclass(frozen=True, slots=True)
class Trait:
    """A Big Five trait with its three bands."""

    key: str
    label: str
    bands: Mapping[Band, TraitBand]


@dataclass(frozen=True, slots=True)
class Knowledge:
    """Every table the talent-mapping analyzer reads."""

    interest_types: Mapping[str, InterestType]
    archetypes: Mapping[str, str]
    consistency: Mapping[int, str]
    differentiation: tuple[tuple[int, str], ...]
    careers: tuple[Career, ...]
    prospect_axes: tuple[str, ...]
    virtues: Mapping[str, Virtue]
    strengths: Mapping[str, CharacterStrength]
    traits: Mapping[str, Trait]
    band_low_max: int
    band_high_min: int
    risk_levels: tuple[tuple[int, str], ...]
    industries: Mapping[str, str]
    type_by_letter: Mapping[str, InterestType]
    phrases: Mapping[str, str]
    """Sentence templates (``str.format``) that frame the texts above, by name."""
    band_labels: Mapping[Band, str]
    """How a Big Five band is written in this locale."""
    locale: str
    """The language of these tables (a BCP 47 tag)."""

    def say(self, phrase: str, **values: object) -> str:
        """The template ``phrase`` filled with ``values``."""
        return self.phrases[phrase].format(**values)


def read_table(locale: str, name: str) -> Any:
    """The parsed JSON of table file ``name`` of ``locale``."""
    folder = resources.files(f"worker.analyzers.tables.{locale}")
    return json.loads(folder.joinpath(name).read_text("utf-8"))


def _book(raw: Any) -> BookEntry:
    return BookEntry(title=raw["title"], author=raw["author"], reason=raw["reason"])


def _interest_type(key: str, raw: Any) -> InterestType:
    return InterestType(
        key=key,
        letter=raw["letter"],
        label=raw["label"],
        description=raw["description"],
        motivator=raw["motivator"],
        strength=raw["strength"],
        pitfall=raw["pitfall"],
        learning=raw["learning"],
        environment=raw["environment"],
        skills=tuple(raw["skills"]),
        extracurriculars=tuple(raw["extracurriculars"]),
        role_models=tuple(
            RoleModelEntry(name=m["name"], title=m["title"]) for m in raw["role_models"]
        ),
        books=tuple(_book(b) for b in raw["books"]),
    )


def _career(raw: Any) -> Career:
    return Career(
        name=raw["name"],
        code=raw["code"],
        summary=raw["summary"],
        majors=tuple(raw["majors"]),
        industries=tuple(raw["industries"]),
        prospects=dict(raw["prospects"]),
    )


def _trait_band(raw: Any) -> TraitBand:
    book = raw.get("book")
    return TraitBand(
        learning=raw["learning"],
        environment=raw["environment"],
        insight=raw["insight"],
        weakness=raw.get("weakness"),
        pitfall=raw.get("pitfall"),
        skill=raw.get("skill"),
        book=_book(book) if book is not None else None,
    )


def _trait(key: str, raw: Any) -> Trait:
    return Trait(key=key, label=raw["label"], bands={b: _trait_band(raw[b]) for b in BANDS})


def _virtue(key: str, raw: Any) -> Virtue:
    return Virtue(
        key=key,
        label=raw["label"],
        motivator=raw["motivator"],
        insight=raw["insight"],
        extracurricular=raw["extracurricular"],
        book=_book(raw["book"]),
    )


def _strength(key: str, raw: Any) -> CharacterStrength:
    return CharacterStrength(
        key=key,
        label=raw["label"],
        virtue=raw["virtue"],
        description=raw["description"],
        lesser=raw["lesser"],
    )


@functools.cache
def load_knowledge(locale: str) -> Knowledge:
    """Parse the knowledge tables of ``locale``; cached, so each locale's files are read once
    per process. ``KeyError`` for a locale without tables."""
    if locale not in LOCALES:
        raise KeyError(f"no knowledge tables for locale {locale!r}")
    riasec, careers, via, ocean, industries, phrases = (
        read_table(locale, name) for name in TABLE_FILES
    )
    interest_types = {k: _interest_type(k, v) for k, v in riasec["types"].items()}
    return Knowledge(
        interest_types=interest_types,
        archetypes=dict(riasec["archetypes"]),
        consistency={int(k): v for k, v in riasec["consistency"].items()},
        differentiation=tuple((d["min_spread"], d["text"]) for d in riasec["differentiation"]),
        careers=tuple(_career(c) for c in careers["careers"]),
        prospect_axes=tuple(careers["prospect_axes"]),
        virtues={k: _virtue(k, v) for k, v in via["virtues"].items()},
        strengths={k: _strength(k, v) for k, v in via["strengths"].items()},
        traits={k: _trait(k, v) for k, v in ocean["traits"].items()},
        band_low_max=ocean["bands"]["low_max"],
        band_high_min=ocean["bands"]["high_min"],
        risk_levels=tuple((r["min_index"], r["level"]) for r in ocean["risk_tolerance"]),
        industries=dict(industries),
        type_by_letter={t.letter: t for t in interest_types.values()},
        phrases={k: v for k, v in phrases.items() if isinstance(v, str)},
        band_labels={b: phrases["bands"][b] for b in BANDS},
        locale=locale,
    )
