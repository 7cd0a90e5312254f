"""Time the talent-mapping analyzer per profile over many varied inputs.

Run from the repository root:
``python bench/bench_analyzer.py [--profiles N] [--seed S] [--locale id|en]``.
Prints mean, p50, p99 and max per profile for each locale (both unless one is named), after a
warm-up that also loads the tables.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from assay.common.v1 import assessment_pb2
from worker.analyzers import analyze
from worker.analyzers.knowledge import LOCALES
from worker.analyzers.scores import INDUSTRY_ORDER, OCEAN_ORDER, RIASEC_ORDER, VIA_ORDER

ASSESSMENT_NAME = "AI-Driven Talent Mapping"
WARM_UP = 200


def random_submission(rng: random.Random) -> assessment_pb2.AssessmentData:
    """A random, valid submission; half of them carry a few industry scores."""

    def scores(names: tuple[str, ...]) -> dict[str, int]:
        return {name: rng.randint(0, 100) for name in names}

    data = assessment_pb2.AssessmentData(
        riasec=assessment_pb2.Riasec(**scores(RIASEC_ORDER)),
        ocean=assessment_pb2.Ocean(**scores(OCEAN_ORDER)),
        via_is=assessment_pb2.ViaIs(**scores(VIA_ORDER)),
    )
    if rng.random() < 0.5:
        chosen = tuple(rng.sample(INDUSTRY_ORDER, rng.randint(1, 8)))
        data.industry_score.CopyFrom(assessment_pb2.IndustryScore(**scores(chosen)))
    return data


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    index = min(len(sorted_values) - 1, max(0, round(fraction * len(sorted_values)) - 1))
    return sorted_values[index]


def main() -> None:
    """Run the benchmark and print the per-profile figures in milliseconds."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--profiles", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--locale", choices=LOCALES, help="one locale (default: each in turn)")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    submissions = [random_submission(rng) for _ in range(args.profiles)]
    for locale in [args.locale] if args.locale else LOCALES:
        timings_ms = time_profiles(submissions, locale)
        print(
            f"talent-mapping [{locale}]: {len(timings_ms)} profiles  "
            f"mean {statistics.fmean(timings_ms):.3f} ms  "
            f"p50 {percentile(timings_ms, 0.50):.3f} ms  "
            f"p99 {percentile(timings_ms, 0.99):.3f} ms  "
            f"max {timings_ms[-1]:.3f} ms"
        )


def time_profiles(submissions: list[assessment_pb2.AssessmentData], locale: str) -> list[float]:
    """Milliseconds per profile in ``locale``, sorted, after a warm-up."""
    for data in submissions[:WARM_UP]:
        analyze(ASSESSMENT_NAME, data, None, locale)
    timings_ms = []
    for data in submissions:
        start = time.perf_counter_ns()
        analyze(ASSESSMENT_NAME, data, None, locale)
        timings_ms.append((time.perf_counter_ns() - start) / 1e6)
    timings_ms.sort()
    return timings_ms


if __name__ == "__main__":
    main()
