"""Batches and priority lanes (issue 28), measured:

* ``batch``: SubmitAssessments of N items accepted — seconds per call and milliseconds per
  item — against the same N items as single SubmitAssessment calls (one at a time, and from
  16 concurrent callers), and a whole batch replayed.
* ``lanes``: the same three phases on a stack with lanes (``ASSAY_TIERS``, default
  ``premium:4,standard:1``) and on one with a single lane (FIFO, as before tiers), both up
  at once:
  1. premium wait: N standard jobs queued, then premium jobs submitted one by one every
     ``--every`` seconds while the backlog drains; each one's wait from submit to PROCESSING
     (``started_at − created_at`` in PostgreSQL).
  2. shares: M standard and M premium jobs queued while the workers are stopped, then the
     workers started; the standard lane's share of the jobs started while both still had
     jobs queued, and the throughput of the drain: ``--repeat`` rounds alternating between
     the stacks; the medians, and the median of the rounds' throughput ratios.
  3. user fairness within the default lane: one user's K jobs queued, then another user's
     single jobs; their waits, and the bulk's throughput (``ASSAY_QUEUED_PER_USER``: set it
     to 0 for first come, first served); ``--repeat`` rounds alternating, the medians.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import time
import uuid
from typing import Any

import asyncpg
import grpc.aio

from assay.assessment.v1 import assessment_service_pb2 as pb
from assay.assessment.v1 import assessment_service_pb2_grpc as assessment_grpc
from assaylib.issuer import Issuer
from bench.environment import CpuSample
from bench.load import sample
from bench.report import percentiles, progress
from bench.stack import BenchStack, running_stack, settings_of

CHUNK = 1000
SINGLE_CALLERS = 16
FIFO_TIERS = "standard:1"


def register(scenario: Any) -> None:
    """Add ``batch`` and ``lanes`` to the bench's command line (``scenario`` makes one)."""
    batch = scenario("batch", "SubmitAssessments of N items against N single submits")
    batch.add_argument("--items", type=int, default=1000, help="items per batch (≤ 1000)")
    batch.add_argument("--rounds", type=int, default=3, help="batches timed")
    lanes = scenario("lanes", "premium wait, lane shares, user fairness: lanes against FIFO")
    lanes.add_argument("--backlog", type=int, default=5000, help="standard jobs queued first")
    lanes.add_argument("--premium", type=int, default=40, help="premium jobs, one by one")
    lanes.add_argument("--every", type=float, default=0.1, help="seconds between them")
    lanes.add_argument("--both", type=int, default=2000, help="jobs per lane for the shares")
    lanes.add_argument("--repeat", type=int, default=5, help="rounds of shares and fairness")
    lanes.add_argument("--bulk", type=int, default=2000, help="one user's jobs (fairness)")
    lanes.add_argument("--singles", type=int, default=5, help="another user's single jobs")
    lanes.add_argument("--modes", default="lanes,fifo", help="which stacks: lanes, fifo or both")
    lanes.add_argument(
        "--phases", default="premium,shares,fairness", help="which phases, in this order"
    )


def stub_for(stack: BenchStack, user: str, tier: str = "") -> tuple[grpc.aio.Channel, Any]:
    """An AssessmentService stub as ``user``, its token naming ``tier`` when given."""
    claims = {"tier": tier} if tier else {}
    token = Issuer.load(stack.info.signing_key_file).mint(user, ["user"], 86400, **claims)
    channel = stack.channel(stack.info.assessment, token)
    return channel, assessment_grpc.AssessmentServiceStub(channel)


def requests(count: int, seed: int = 0) -> list[pb.SubmitAssessmentRequest]:
    """``count`` submissions, each with a fresh request id."""
    return [
        pb.SubmitAssessmentRequest(assessment_data=sample(seed + n), request_id=uuid.uuid4().hex)
        for n in range(count)
    ]


async def submit_all(stub: Any, items: list[pb.SubmitAssessmentRequest]) -> list[str]:
    """Submit ``items`` in batches of up to 1,000; the job ids."""
    job_ids: list[str] = []
    for start in range(0, len(items), CHUNK):
        call = pb.SubmitAssessmentsRequest(requests=items[start : start + CHUNK])
        reply = await stub.SubmitAssessments(call, timeout=120)
        job_ids += [r.job.job_id for r in reply.responses]
    return job_ids


async def run_batch(stack: BenchStack, args: argparse.Namespace) -> dict[str, Any]:
    """Batches timed against single submits of as many items."""
    items = min(args.items, CHUNK)
    await stack.grant(["bench-school"], items * (args.rounds + 3))
    channel, stub = stub_for(stack, "bench-school")
    accepted: list[float] = []
    async with channel:
        for round_no in range(args.rounds):
            batch = pb.SubmitAssessmentsRequest(requests=requests(items, round_no * items))
            started = time.perf_counter()
            await stub.SubmitAssessments(batch, timeout=120)
            accepted.append(time.perf_counter() - started)
            progress(f"batch {round_no + 1}: {items} items in {accepted[-1]:.3f}s")
        started = time.perf_counter()
        replay = await stub.SubmitAssessments(batch, timeout=120)
        replayed_s = time.perf_counter() - started
        sequential = await singles(stub, requests(items, 10**6), 1)
        concurrent = await singles(stub, requests(items, 2 * 10**6), SINGLE_CALLERS)
    best = statistics.median(accepted)
    audit = stack.audit()
    return {
        "items": items,
        "batch_accept_s": {"median": round(best, 3), "max": round(max(accepted), 3)},
        "batch_ms_per_item": round(best * 1000 / items, 3),
        "batch_replay_s": round(replayed_s, 3),
        "batch_replayed": replay.replayed,
        "single_sequential_s": round(sequential, 3),
        "single_sequential_ms_per_item": round(sequential * 1000 / items, 3),
        f"single_{SINGLE_CALLERS}_callers_s": round(concurrent, 3),
        f"single_{SINGLE_CALLERS}_callers_ms_per_item": round(concurrent * 1000 / items, 3),
        "batch_speedup_vs_sequential": round(sequential / best, 1),
        f"batch_speedup_vs_{SINGLE_CALLERS}_callers": round(concurrent / best, 1),
        "invariants_ok": bool(audit.get("ok")),
        "audit": audit,
    }


async def singles(stub: Any, items: list[pb.SubmitAssessmentRequest], callers: int) -> float:
    """Seconds to submit ``items`` one call each from ``callers`` concurrent callers."""
    queue = list(reversed(items))

    async def caller() -> None:
        while queue:
            await stub.SubmitAssessment(queue.pop(), timeout=60)

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(callers)))
    return time.perf_counter() - started


async def waits(dsn: str, job_ids: list[str]) -> list[float]:
    """Seconds from submit to PROCESSING of each job (all must have started)."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT extract(epoch FROM started_at - created_at)::float8 AS wait FROM jobs"
            " WHERE job_id = ANY($1::uuid[]) AND started_at IS NOT NULL",
            job_ids,
        )
    finally:
        await conn.close()
    return [row["wait"] for row in rows]


async def behind_a_bulk(
    dsn: str,
    bulk: tuple[grpc.aio.Channel, Any],
    single: tuple[grpc.aio.Channel, Any],
    backlog: int,
    singles: int,
    every: float,
) -> list[float]:
    """Queue ``backlog`` jobs as ``bulk``'s user, then ``singles`` jobs one by one as
    ``single``'s, ``every`` seconds apart; once all ran, the singles' waits (both channels
    closed)."""
    await submit_all(bulk[1], requests(backlog))
    job_ids = []
    for n in range(singles):
        reply = await single[1].SubmitAssessment(requests(1, n)[0], timeout=60)
        job_ids.append(reply.job.job_id)
        await asyncio.sleep(every)
    await drained(dsn, 300)
    for channel, _ in (bulk, single):
        await channel.close()
    return await waits(dsn, job_ids)


async def drained(dsn: str, within: float) -> None:
    """Wait until no job is QUEUED or PROCESSING (or ``within`` seconds pass)."""
    conn = await asyncpg.connect(dsn)
    try:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            left = await conn.fetchval(
                "SELECT count(*) FROM jobs WHERE status IN ('QUEUED', 'PROCESSING')"
            )
            if not left:
                return
            await asyncio.sleep(0.2)
        progress("gave up waiting for the queue to drain")
    finally:
        await conn.close()


async def premium_wait(stack: BenchStack, args: argparse.Namespace) -> dict[str, Any]:
    """Phase 1: premium jobs one by one behind a standard backlog."""
    dsn = stack.dsn
    standard, premium = (
        stub_for(stack, "bench-standard"),
        stub_for(stack, "bench-premium", "premium"),
    )
    progress(f"queueing {args.backlog} standard jobs, then {args.premium} premium one by one")
    found = await behind_a_bulk(dsn, standard, premium, args.backlog, args.premium, args.every)
    return {"premium_jobs": len(found), "premium_wait_ms": percentiles(found, 50, 99)}


def shares_of(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Phase 2's report from its rounds on one stack: the medians, and each round's drain."""
    drains = [found["drain_jobs_per_second"] for found in rounds]
    return {
        "standard_share_while_both_queued": statistics.median(
            found["standard_share_while_both_queued"] for found in rounds
        ),
        "jobs_started_while_both_queued": rounds[-1]["jobs_started_while_both_queued"],
        "drain_jobs_per_second": statistics.median(drains),
        "drain_jobs_per_second_rounds": drains,
        "drain_cpu_ms_per_job": statistics.median(r["drain_cpu_ms_per_job"] for r in rounds),
        "drain_cpu_ms_per_job_by_process": {
            name: statistics.median(
                r["drain_cpu_ms_per_job_by_process"].get(name, 0) for r in rounds
            )
            for name in rounds[-1]["drain_cpu_ms_per_job_by_process"]
        },
    }


async def shares_once(stack: BenchStack, args: argparse.Namespace) -> dict[str, Any]:
    """One round of phase 2."""
    dsn = stack.dsn
    standard, premium = (
        stub_for(stack, "bench-standard"),
        stub_for(stack, "bench-premium", "premium"),
    )
    progress(f"queueing {args.both} standard and {args.both} premium jobs, workers stopped")
    await asyncio.to_thread(stack.stop_workers)
    await asyncio.gather(
        submit_all(standard[1], requests(args.both)), submit_all(premium[1], requests(args.both))
    )
    await asyncio.to_thread(stack.start_workers)
    before = CpuSample.take(stack.pids)
    await drained(dsn, 300)
    cpu = CpuSample.take(stack.pids).since(before)
    for channel, _ in (standard, premium):
        await channel.close()
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(SHARES_SQL, args.both)
    finally:
        await conn.close()
    both = (row["standard_in_window"] or 0) + (row["premium_in_window"] or 0)
    return {
        "standard_share_while_both_queued": round((row["standard_in_window"] or 0) / both, 3)
        if both
        else 0.0,
        "jobs_started_while_both_queued": both,
        "drain_jobs_per_second": round(row["jobs"] / row["seconds"], 1) if row["seconds"] else 0,
        "drain_cpu_ms_per_job": per_job_ms(sum(cpu.values()), row["jobs"]),
        "drain_cpu_ms_per_job_by_process": {
            name: per_job_ms(seconds, row["jobs"]) for name, seconds in sorted(cpu.items())
        },
    }


def per_job_ms(seconds: float, jobs: int) -> float:
    """Milliseconds of CPU per job."""
    return round(seconds * 1000 / jobs, 3) if jobs else 0.0


SHARES_SQL = """
WITH recent AS (
  SELECT user_id, started_at, finished_at, created_at FROM jobs
  WHERE user_id IN ('bench-standard', 'bench-premium')
  ORDER BY created_at DESC LIMIT 2 * $1
), window_end AS (
  SELECT least((SELECT max(started_at) FROM recent WHERE user_id = 'bench-standard'),
               (SELECT max(started_at) FROM recent WHERE user_id = 'bench-premium')) AS ends,
         (SELECT max(created_at) FROM recent) AS begins
)
SELECT
  count(*) FILTER (WHERE user_id = 'bench-standard' AND started_at BETWEEN begins AND ends)
    AS standard_in_window,
  count(*) FILTER (WHERE user_id = 'bench-premium' AND started_at BETWEEN begins AND ends)
    AS premium_in_window,
  count(*) AS jobs,
  extract(epoch FROM max(finished_at) - min(started_at))::float8 AS seconds
FROM recent, window_end
"""


async def user_fairness(stack: BenchStack, args: argparse.Namespace) -> dict[str, Any]:
    """Phase 3: one user's bulk, then another's single jobs, in the default lane."""
    dsn = stack.dsn
    bulk, single = stub_for(stack, "bench-bulk"), stub_for(stack, "bench-single")
    conn = await asyncpg.connect(dsn)
    try:
        since = await conn.fetchval("SELECT now()")
        progress(f"queueing {args.bulk} jobs of one user, then {args.singles} of another")
        found = await behind_a_bulk(dsn, bulk, single, args.bulk, args.singles, args.every)
        per_job = await conn.fetchval(
            "SELECT extract(epoch FROM max(finished_at) - min(started_at))::float8 / count(*)"
            " FROM jobs WHERE user_id = 'bench-bulk' AND created_at >= $1",
            since,
        )
    finally:
        await conn.close()
    return {
        "single_user_wait_ms": percentiles(found, 50, 99),
        "bulk_ms_per_job": round((per_job or 0) * 1000, 3),
        "bulk_jobs_per_second": round(1 / per_job, 1) if per_job else 0,
    }


def fairness_of(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Phase 3's report from its rounds on one stack: the medians, and each round's bulk."""
    bulk = [found["bulk_jobs_per_second"] for found in rounds]
    return {
        "single_user_wait_ms": {
            key: statistics.median(found["single_user_wait_ms"][key] for found in rounds)
            for key in ("p50", "p99")
        },
        "bulk_ms_per_job": statistics.median(found["bulk_ms_per_job"] for found in rounds),
        "bulk_jobs_per_second": statistics.median(bulk),
        "bulk_jobs_per_second_rounds": bulk,
    }


async def lanes_on(stacks: dict[str, BenchStack], args: argparse.Namespace) -> dict[str, Any]:
    """The phases on every stack; the rounds of the shares and of the fairness alternate
    between the stacks (lanes, FIFO, lanes, ...), so that the machine's drift falls on both
    alike."""
    total = args.backlog + args.premium + (2 * args.both + args.bulk + args.singles) * args.repeat
    users = ["bench-standard", "bench-premium", "bench-bulk", "bench-single"]
    found: dict[str, dict[str, Any]] = {mode: {} for mode in stacks}
    for stack in stacks.values():
        await stack.grant(users, total)
    in_rounds = {"shares": (shares_once, shares_of), "fairness": (user_fairness, fairness_of)}
    for phase in args.phases.split(","):
        if phase in in_rounds:
            once, summary = in_rounds[phase]
            rounds: dict[str, list[dict[str, Any]]] = {mode: [] for mode in stacks}
            for n in range(args.repeat):
                for mode, stack in stacks.items():
                    progress(f"{mode}: {phase}, round {n + 1} of {args.repeat}")
                    rounds[mode].append(await once(stack, args))
            for mode in stacks:
                found[mode] |= summary(rounds[mode])
            continue
        for mode, stack in stacks.items():
            progress(f"{mode}: {phase}")
            found[mode] |= await premium_wait(stack, args)
    for mode, stack in stacks.items():
        found[mode]["invariants_ok"] = bool(stack.audit().get("ok"))
        found[mode]["settings"] = dict(sorted(stack.settings.items()))
    return found


def run_lanes(args: argparse.Namespace) -> dict[str, Any]:
    """The phases on a stack with lanes and on one with a single lane (FIFO), both up at
    once; both reports, and the throughput ratio (the median of the rounds' ratios)."""
    unknown = set(args.phases.split(",")) - {"premium", "shares", "fairness"}
    if unknown:
        raise SystemExit(f"--phases: no phase {', '.join(sorted(unknown))}")
    with contextlib.ExitStack() as running:
        stacks: dict[str, BenchStack] = {}
        for mode in args.modes.split(","):
            settings = settings_of(args.set)
            if mode == "fifo":
                settings["ASSAY_TIERS"] = FIFO_TIERS
            progress(f"{mode}: ASSAY_TIERS={settings.get('ASSAY_TIERS', 'premium:4,standard:1')}")
            stacks[mode] = running.enter_context(
                running_stack(settings, workers=args.workers, archives=args.archives)
            )
        found: dict[str, Any] = asyncio.run(lanes_on(stacks, args))
    invariants_ok = all(result["invariants_ok"] for result in found.values())
    if {"lanes", "fifo"} <= found.keys() and "drain_jobs_per_second_rounds" in found["lanes"]:
        pairs = zip(
            found["lanes"]["drain_jobs_per_second_rounds"],
            found["fifo"]["drain_jobs_per_second_rounds"],
            strict=True,
        )
        ratios = [lanes / fifo for lanes, fifo in pairs if fifo]
        found["throughput_lanes_over_fifo_rounds"] = [round(r, 3) for r in ratios]
        if ratios:
            found["throughput_lanes_over_fifo"] = round(statistics.median(ratios), 3)
        cpu = [found[mode]["drain_cpu_ms_per_job"] for mode in ("lanes", "fifo")]
        if all(cpu):  # a tiny run can take less than the clock's 10 ms ticks
            found["cpu_per_job_lanes_over_fifo"] = round(cpu[0] / cpu[1], 3)
    found["invariants_ok"] = invariants_ok
    return found


def run_batch_scenario(args: argparse.Namespace) -> dict[str, Any]:
    """``batch`` on one stack."""
    settings = settings_of(args.set)
    with running_stack(settings, workers=args.workers, archives=args.archives) as stack:
        result = asyncio.run(run_batch(stack, args))
        result["settings"] = dict(sorted(stack.settings.items()))
    return result


def run(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Run ``batch`` or ``lanes``."""
    with contextlib.suppress(KeyboardInterrupt):
        return run_lanes(args) if name == "lanes" else run_batch_scenario(args)
    raise SystemExit(130)
