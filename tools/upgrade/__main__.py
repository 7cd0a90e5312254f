"""`make test-upgrade` (``python -m tools.upgrade``): the last release (CHANGELOG.md) beside the
working tree.

1. builds the release from git history in its own venv (cached by commit);
2. messages: what either release writes on ASSAY_JOBS and ASSAY_EVENTS, the other reads
   (``tools.upgrade.messages``);
3. schema: the release's archive, relay and sweep tests against the tree's schema
   (``tools.upgrade.schema``);
4. the roll: two processes of each service of the release under steady load, the tree's
   migrations, the tree's processes one at a time, back to the release, forward again
   (``tools.upgrade.roll``); then the checks, printed with the submit latency of each phase.

Exit 0 when everything held, 1 otherwise. ``--only messages,schema`` runs a part.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from tools.upgrade import broken, messages, schema
from tools.upgrade.build import Build, release_build, tree
from tools.upgrade.roll import Roll

PARTS = ("messages", "schema", "roll")
BROKEN = {
    "drop-function": broken.dropping_migration,
    "unreadable-message": broken.unreadable_queue_message,
}


def check_messages(release: Build, new: Build) -> bool:
    """Part 2; prints what it found."""
    problems = messages.check(release, new)
    for problem in problems:
        print(f"  {problem}")
    print(f"messages: {'ok' if not problems else f'{len(problems)} problem(s)'}", flush=True)
    return not problems


def check_schema(release: Build, new: Build, logs: Path, *, again: bool) -> bool:
    """Part 3; prints pytest's summary and where its output is. A pass against the same
    release and the same migrations is remembered (the release's tests take minutes): it is
    not run again unless ``again``. CI starts clean, so it always runs there."""
    record = schema.passed_before(release, new)
    if record.exists() and not again:
        print(f"schema: ok: passed before against this schema ({record.read_text().strip()})")
        return True
    result = schema.run(release, new, logs / "schema.log")
    state = "ok" if result.ok else "FAILED"
    print(f"schema: {state}: {result.summary} ({result.seconds:.0f}s; {result.log})", flush=True)
    if result.ok and not new.overlay:
        record.write_text(f"{time.strftime('%Y-%m-%d %H:%M:%S')}: {result.summary}\n")
    return result.ok


def check_roll(release: Build, new: Build, root: Path, steady: float, phase: float) -> bool:
    """Part 4; prints each step, the figures and the verdict."""
    report = asyncio.run(Roll(release, new, root, steady=steady, at_least=phase).run())
    for step in report.steps:
        print(
            f"  {step['phase']:<20} {step['process']:<14} → {step['to']:<6}"
            f" ready {step['ready_s']:5.2f}s  old drained {step['drained_s']:5.2f}s"
        )
    verdict = report.verdict
    figures = dict(verdict.figures)
    latency = figures.pop("submit_ms", {})
    print("roll: seconds each roll took " + json.dumps(report.phases))
    print("roll: submit latency (ms), by phase:")
    for phase, stats in latency.items():
        print(f"  {phase:<20} n={stats['n']:<5} p50={stats['p50']:<8} p99={stats['p99']}")
    print("roll: " + json.dumps(figures))
    for problem in verdict.problems:
        print(f"  PROBLEM: {problem}")
    print(f"roll: {'ok' if verdict.ok else 'FAILED'}", flush=True)
    return verdict.ok


def main(argv: list[str] | None = None) -> int:
    """Run the parts asked for; 0 when all held."""
    parser = argparse.ArgumentParser(prog="python -m tools.upgrade", description=__doc__)
    parser.add_argument("--only", default=",".join(PARTS), help="parts, comma-separated")
    parser.add_argument("--steady", type=float, default=25.0, help="seconds of steady load")
    parser.add_argument(
        "--phase", type=float, default=25.0, help="at least this many seconds of load per roll"
    )
    parser.add_argument(
        "--again", action="store_true", help="run the schema check even if it passed before"
    )
    parser.add_argument("--keep", action="store_true", help="keep the logs even when all held")
    parser.add_argument(
        "--broken",
        choices=sorted(BROKEN),
        help="run against a copy of the tree made incompatible (tools/upgrade/broken.py)",
    )
    args = parser.parse_args(argv)
    parts = [part for part in args.only.split(",") if part]
    unknown = set(parts) - set(PARTS)
    if unknown:
        parser.error(f"unknown part(s) {sorted(unknown)}; choose from {PARTS}")
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="assay-upgrade-"))
    release, new = release_build(), tree()
    if args.broken:  # show that the checks fail on an incompatible tree
        new = BROKEN[args.broken](workdir / "broken-tree")
        print(f"upgrade: the tree made incompatible on purpose: {args.broken}", flush=True)
    print(f"upgrade: release {release.label} ({release.python}) → {new.src}", flush=True)
    results = []
    if "messages" in parts:
        results.append(check_messages(release, new))
    if "schema" in parts:
        results.append(check_schema(release, new, workdir, again=args.again))
    if "roll" in parts:
        results.append(check_roll(release, new, workdir / "cluster", args.steady, args.phase))
    ok = all(results)
    if ok and not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    kept = "" if ok and not args.keep else f" (logs: {workdir})"
    print(f"upgrade: {'ok' if ok else 'FAILED'} in {time.monotonic() - started:.0f}s{kept}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
