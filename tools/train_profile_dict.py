"""Train the zstd dictionaries the archive compresses persona profiles with, one per locale
(``archive_svc/profile_dicts/<dict id>.zdict``, see ``archive_svc.profiles``).

The samples are real profiles: the talent-mapping analyzer over seeded random submissions in
the dictionary's locale, each serialized as the archive stores it (protobuf). The same seed,
analyzer tables and zstd library give the same bytes; ``--check`` fails when a shipped
dictionary differs from what this tool makes now.

A new dictionary (say the analyzer's tables changed a lot) gets a new id in
``profiles.CURRENT_DICT_IDS``; the old file stays, so rows compressed with it still read.

Usage: python -m tools.train_profile_dict [--check]
"""

from __future__ import annotations

import argparse
import random
import sys

import zstandard

from archive_svc import profiles
from bench.bench_analyzer import ASSESSMENT_NAME, random_submission
from worker.analyzers import analyze

SAMPLES = 400
SEED = 18
DICT_SIZE = 64 * 1024  # 32 KiB: 40 % larger profiles; 112 KiB: 10 % smaller
# Fixed COVER parameters: without them zstd searches for the best for a minute, and may pick
# differently from one run (or thread count) to the next; k=256 is within 5 % of its pick.
K, D = 256, 8


def samples(
    locale: str, count: int = SAMPLES, seed: int = SEED
) -> list[bytes | bytearray | memoryview]:
    """``count`` profiles in ``locale`` of seeded random submissions, as stored bytes."""
    rng = random.Random(seed)
    return [
        analyze(ASSESSMENT_NAME, random_submission(rng), None, locale).SerializeToString(
            deterministic=True
        )
        for _ in range(count)
    ]


def train(locale: str, dict_id: int) -> bytes:
    """The dictionary of ``locale`` with id ``dict_id``, trained on ``samples(locale)``."""
    trained = zstandard.train_dictionary(
        DICT_SIZE, samples(locale), k=K, d=D, dict_id=dict_id, threads=1, level=profiles.LEVEL
    )
    return trained.as_bytes()


def main() -> int:
    """Write (or with --check, compare) the current dictionary of each locale."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    args = parser.parse_args()
    stale = 0
    for locale, dict_id in profiles.CURRENT_DICT_IDS.items():
        made = train(locale, dict_id)
        path = profiles.dictionary_path(dict_id)
        if args.check:
            if not path.exists() or path.read_bytes() != made:
                print(
                    f"{path} is not what this tool makes now. Never rewrite a shipped"
                    " dictionary (rows compressed with it would not read): when the analyzer"
                    " changed, give the locale a new id in profiles.CURRENT_DICT_IDS and train",
                    file=sys.stderr,
                )
                stale += 1
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(made)
        print(f"wrote {path} ({len(made)} bytes, {locale}, dict id {dict_id})")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
