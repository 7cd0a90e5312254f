"""`python -m bench <scenario>`: measure Assay on this machine (see bench/README.md).

    python -m bench e2e --jobs 2000 --concurrency 16 --users 16 --watchers 1 [--workers 1]
    python -m bench submit-latency --rate 150 --duration 20
    python -m bench sweep --stuck 10000
    python -m bench watchers --count 1000
    python -m bench peer --jobs 2000 [--workers 2]
    python -m bench compare [--pairs 3] [--jobs 2000]
    python -m bench all [--pairs 3] [--jobs 10000]
    python -m bench batch --items 1000 --rounds 3
    python -m bench lanes --backlog 5000 --premium 40 --both 2000 --bulk 2000
    python -m bench import --jobs 100000 [--batch 500]

Every report prints the machine, versions, settings and command line; --json FILE writes it.
"""

from __future__ import annotations

import argparse
import sys

from bench import compare, peer, priority, scenarios, standing
from bench.report import emit

WARMUP = 3000
WARMUP_HELP = (
    "jobs run first, then VACUUM (ANALYZE), before anything is measured (the steady state, "
    "not a database's first seconds; 0: none)"
)


def parser() -> argparse.ArgumentParser:
    """The command line."""
    root = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = root.add_subparsers(dest="scenario", required=True)

    def scenario(name: str, text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=text, description=text)
        sub.add_argument("--json", metavar="FILE", help="also write the report as JSON")
        if name != "peer":
            sub.add_argument("--workers", type=int, default=1, help="worker processes")
            sub.add_argument("--archives", type=int, default=1, help="archive replicas")
            sub.add_argument(
                "--set",
                action="append",
                default=[],
                metavar="ASSAY_NAME=VALUE",
                help="a setting of the measured stack (repeatable)",
            )
            sub.add_argument(
                "--trace-sample",
                type=float,
                metavar="RATIO",
                help="tracing on, new traces sampled at RATIO, exported over OTLP to a sink",
            )
        return sub

    e2e = scenario("e2e", "end-to-end jobs/s, submit and event latency, invariants")
    e2e.add_argument("--jobs", type=int, default=2000)
    e2e.add_argument("--concurrency", type=int, default=16, help="concurrent submitters")
    e2e.add_argument("--users", type=int, default=16, help="distinct submitting users")
    e2e.add_argument("--watchers", type=int, default=1, help="WatchJobs streams (≥ 1)")
    e2e.add_argument("--warmup", type=int, default=WARMUP, help=WARMUP_HELP)
    e2e.add_argument("--profile", metavar="DIR", help="py-spy every service into DIR")
    e2e.add_argument("--pg-stats", action="store_true", help="PostgreSQL's busiest statements")
    e2e.add_argument("--peer", metavar="FILE", help="a `bench peer --json` report to compare")

    latency = scenario("submit-latency", "submit latency at a fixed offered rate (open loop)")
    latency.add_argument("--rate", type=float, default=100.0, help="submissions per second")
    latency.add_argument("--duration", type=float, default=20.0, help="seconds")
    latency.add_argument("--users", type=int, default=16)
    latency.add_argument("--warmup", type=int, default=WARMUP, help=WARMUP_HELP)

    sweep = scenario("sweep", "one sweep of N stuck jobs made directly in the database")
    sweep.add_argument("--stuck", type=int, default=10_000)
    sweep.add_argument("--batch", type=int, default=500, help="jobs per sweep transaction")

    watchers = scenario("watchers", "idle WatchJobs streams: memory each, event latency")
    watchers.add_argument("--count", type=int, default=1000)
    watchers.add_argument("--jobs", type=int, default=200, help="jobs run with them open")
    watchers.add_argument("--rate", type=float, default=50.0, help="submissions per second")

    priority.register(scenario)
    importing = scenario("import", "assay import original: a source of N jobs imported")
    importing.add_argument("--jobs", type=int, default=100_000)
    importing.add_argument("--users", type=int, default=0, help="source users (default N/10)")
    importing.add_argument("--batch", type=int, default=500, help="jobs per import batch")

    comparison = scenario("peer", "procrastinate on the same PostgreSQL: N no-op jobs")
    comparison.add_argument("--jobs", type=int, default=2000)
    comparison.add_argument("--concurrency", type=int, default=16, help="concurrent deferrers")
    comparison.add_argument("--worker-concurrency", type=int, default=16)
    comparison.add_argument(
        "--warmup",
        type=int,
        default=0,
        help="jobs run first, then VACUUM (ANALYZE) (default 0: the peer at its best; its "
        "finished jobs stay in its table and cost it per job as they accumulate)",
    )
    comparison.add_argument(
        "--workers", type=int, default=2, help="worker processes (2: the best on 2 cores)"
    )

    pairs = commands.add_parser(
        "compare",
        help="Assay and the peer alternately, N pairs: the median ratio",
        description="Runs `e2e` and `peer` alternately on this machine (PAIRS pairs, each "
        "as its own process) and prints each run's figures and the median ratio of jobs/s.",
    )
    pairs.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    pairs.add_argument("--pairs", type=int, default=3)
    pairs.add_argument("--jobs", type=int, default=2000)
    pairs.add_argument(
        "--e2e",
        default="--concurrency 16 --users 16 --watchers 1",
        help="further arguments of each e2e run",
    )
    pairs.add_argument("--peer", default="--workers 2", help="further arguments of each peer run")

    everything = commands.add_parser(
        "all",
        help="every figure of issue 30 against its target, in one command",
        description="compare, then submit-latency at half the capacity compare measured, a "
        "sweep of stuck jobs and idle watchers, each as its own process; every figure beside "
        "its target.",
    )
    everything.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    everything.add_argument("--pairs", type=int, default=3)
    everything.add_argument("--jobs", type=int, default=10_000, help="jobs per compare run")
    everything.add_argument("--duration", type=float, default=20.0, help="submit-latency s")
    everything.add_argument("--stuck", type=int, default=10_000)
    everything.add_argument("--watchers", type=int, default=1000)
    return root


def main(argv: list[str] | None = None) -> int:
    """Run one scenario and report it."""
    args = parser().parse_args(argv)
    if args.scenario == "compare":
        result = compare.run(args)
    elif args.scenario == "all":
        result = standing.run(args)
    elif args.scenario == "peer":
        result = peer.run(args)
    elif args.scenario in ("batch", "lanes"):
        result = priority.run(args.scenario, args)
    else:
        result = scenarios.run(args.scenario, args)
    emit(result, args.json)
    failed = result.get("invariants_ok") is False or result.get("ok") is False
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
