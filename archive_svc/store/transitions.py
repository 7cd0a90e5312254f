"""The state table as SQL: each operation is one statement, built once from its rows.

An operation is the rows (``archive_svc.states``) one RPC may apply, in order, and the
request columns they read. Its statement, for a batch of jobs (one is a batch of one):

1. ``i`` — the request, one row per job (arrays unnested, with the position ``n``);
2. ``c`` — each job locked (``FOR UPDATE``, in job-id order so concurrent batches cannot
   deadlock) and classified: the first row whose sources and guard hold;
3. ``m`` — the compare-and-set UPDATE applying each job's row (version + 1 for a
   transition), returning the new job;
4. the ledger movement and the balance (refunds), the result row (COMPLETE), the events and
   queue messages (the outbox), all from ``m``;
5. the applied jobs, then the refused ones as they are (``rule`` NULL): a refusal is
   explained by the same round trip. A job id that does not exist returns nothing.

Scanning operations (the sweep) select the jobs by a guard instead of by id, skipping rows
another transaction holds (``SKIP LOCKED``).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from archive_svc.states import Token, Transition

JOB_COLUMNS = (
    "job_id",
    "user_id",
    "result_id",
    "assessment_name",
    "status",
    "attempt",
    "worker_id",
    "version",
    "cancel_requested",
    "error_code",
    "error_message",
    "charge_count",
    "token_cost",
    "request_id",
    "created_at",
    "updated_at",
    "started_at",
    "heartbeat_at",
    "finished_at",
    "processing_time_ms",
    "requeues",
    "priority",
)
"""Every column of a job row, in the order statements return them."""
SETTABLE = frozenset(JOB_COLUMNS) - {
    "job_id",
    "user_id",
    "status",
    "version",
    "created_at",
    "priority",
}


@dataclass(frozen=True)
class Rule:
    """A row of the state table as one operation applies it: ``when`` narrows it to the
    requests that ask for it (say, ``i.report = 'complete'``)."""

    transition: Transition
    when: str = "true"

    @property
    def name(self) -> str:
        """The row's name."""
        return self.transition.name


@dataclass(frozen=True)
class Operation:
    """What one RPC applies: its rules in order and the request columns they read."""

    name: str
    rules: tuple[Rule, ...]
    inputs: tuple[tuple[str, str], ...]
    """(name, PostgreSQL type) of each request column; ``job_id`` first unless scanning."""
    scan: str = ""
    """Scanning: the ORDER BY of the jobs to look at (the rules' guards select them)."""
    writes_result: bool = False
    """COMPLETE: also store ``i.test_result`` in the job's result row."""

    @functools.cached_property
    def sql(self) -> str:
        """The operation's one statement."""
        return _statement(self)


@dataclass(frozen=True)
class Applied:
    """The outcome for one job: ``rule`` is the row applied, None when refused; ``job`` is
    the row after (or, refused, as it is)."""

    position: int
    rule: str | None
    job: asyncpg.Record

    @property
    def previous_status(self) -> str:
        """The job's status before the statement (its status now, when refused)."""
        return str(self.job["previous"])


def _q(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _names(rules: Iterable[Rule]) -> str:
    return ", ".join(_q(rule.name) for rule in rules)


def _classify(rules: Sequence[Rule]) -> str:
    cases = []
    for rule in rules:
        sources = ", ".join(_q(status.value) for status in rule.transition.sources)
        condition = f"j.status IN ({sources}) AND ({rule.transition.guard}) AND ({rule.when})"
        cases.append(f"WHEN {condition} THEN {_q(rule.name)}")
    return "CASE " + " ".join(cases) + " END"


def _effective_sets(rule: Rule) -> dict[str, str]:
    sets = dict(rule.transition.sets)
    if rule.transition.is_transition:
        sets.setdefault("updated_at", "now()")
    unknown = set(sets) - SETTABLE
    if unknown:
        raise ValueError(f"{rule.name} may not set {sorted(unknown)}")
    return sets


def _set_clause(rules: Sequence[Rule]) -> str:
    transitions = [rule for rule in rules if rule.transition.is_transition]
    status = " ".join(
        f"WHEN {_q(r.name)} THEN {_q(r.transition.target.value)}::job_status" for r in rules
    )
    clauses = [
        f"status = CASE c.rule {status} ELSE j.status END",
        f"version = j.version + CASE WHEN c.rule IN ({_names(transitions) or 'NULL'})"
        " THEN 1 ELSE 0 END",
    ]
    sets = {rule.name: _effective_sets(rule) for rule in rules}
    for column in sorted({column for values in sets.values() for column in values}):
        values = " ".join(
            f"WHEN {_q(name)} THEN {exprs[column]}"
            for name, exprs in sets.items()
            if column in exprs
        )
        clauses.append(f"{column} = CASE c.rule {values} ELSE j.{column} END")
    return ", ".join(clauses)


def _side_effects(operation: Operation) -> list[str]:
    rules = operation.rules
    refunding = [r for r in rules if r.transition.token is Token.REFUND]
    evented = [r for r in rules if r.transition.event is not None]
    queueing = [r for r in rules if r.transition.queues]
    effects = []
    if refunding:
        reasons = " ".join(
            f"WHEN {_q(r.name)} THEN {r.transition.refund_reason}" for r in refunding
        )
        effects.append(
            "refunds AS (INSERT INTO ledger_entries (user_id, kind, amount, job_id, charge_no,"
            f" reason) SELECT m.user_id, 'REFUND', m.token_cost, m.job_id, m.charge_count,"
            f" CASE m.rule {reasons} END FROM m JOIN i ON i.n = m.n"
            f" WHERE m.rule IN ({_names(refunding)}) RETURNING user_id, amount)"
        )
        effects.append(
            "credited AS (UPDATE token_accounts a SET balance = a.balance + s.total,"
            " updated_at = now() FROM (SELECT user_id, sum(amount) AS total FROM refunds"
            " GROUP BY user_id) s WHERE a.user_id = s.user_id)"
        )
    if operation.writes_result:
        effects.append(
            "result AS (UPDATE results r SET test_result = i.test_result, updated_at = now()"
            " FROM m JOIN i ON i.n = m.n WHERE r.result_id = m.result_id"
            " AND m.rule = 'complete')"
        )
    if evented:
        types = " ".join(f"WHEN {_q(r.name)} THEN {_q(str(r.transition.event))}" for r in evented)
        effects.append(
            "events AS (INSERT INTO outbox (id, kind, job_id, event_type, user_id, result_id,"
            " status, job_version, attempt, error_code, error_message, processing_time_ms,"
            " assessment_name, charge_count, occurred_at)"
            f" SELECT gen_random_uuid(), 'event', m.job_id, CASE m.rule {types} END, m.user_id,"
            " m.result_id, m.status, m.version, m.attempt, m.error_code, m.error_message,"
            " m.processing_time_ms, m.assessment_name, m.charge_count, m.updated_at"
            f" FROM m WHERE m.rule IN ({_names(evented)}))"
        )
    if queueing:
        effects.append(
            "queue AS (INSERT INTO outbox (id, kind, job_id, user_id, result_id,"
            " assessment_name, charge_count, occurred_at) SELECT gen_random_uuid(), 'job',"
            " m.job_id, m.user_id, m.result_id, m.assessment_name, m.charge_count,"
            f" m.updated_at FROM m WHERE m.rule IN ({_names(queueing)}))"
        )
    return effects


def _statement(operation: Operation) -> str:
    columns = ", ".join(f"j.{column}" for column in JOB_COLUMNS)
    names = ", ".join(name for name, _ in operation.inputs)
    arrays = ", ".join(f"${k}::{kind}[]" for k, (_, kind) in enumerate(operation.inputs, 1))
    classify = _classify(operation.rules)
    if operation.scan:
        limit = f"${len(operation.inputs) + 1}"
        sources = ", ".join(
            sorted({_q(s.value) for rule in operation.rules for s in rule.transition.sources})
        )
        select = (
            f"c AS (SELECT {columns}, i.n, {classify} AS rule FROM jobs j, i"
            f" WHERE j.status IN ({sources}) AND ({classify}) IS NOT NULL"
            f" ORDER BY {operation.scan} LIMIT {limit} FOR UPDATE OF j SKIP LOCKED)"
        )
    else:
        select = (
            f"c AS (SELECT {columns}, i.n, {classify} AS rule FROM jobs j"
            " JOIN i ON j.job_id = i.job_id ORDER BY j.job_id FOR UPDATE OF j)"
        )
    parts = [
        f"i AS (SELECT * FROM unnest({arrays}) WITH ORDINALITY AS i({names}, n))",
        select,
        f"m AS (UPDATE jobs j SET {_set_clause(operation.rules)} FROM c JOIN i ON i.n = c.n"
        f" WHERE j.job_id = c.job_id AND c.rule IS NOT NULL"
        f" RETURNING {columns}, c.n, c.rule, c.status AS previous)",
        *_side_effects(operation),
    ]
    plain = ", ".join(JOB_COLUMNS)
    return (
        "WITH "
        + ", ".join(parts)
        + f" SELECT {plain}, n, rule, previous FROM m"
        + f" UNION ALL SELECT {plain}, n, NULL, status FROM c WHERE c.rule IS NULL"
    )


async def apply(
    conn: asyncpg.Connection | asyncpg.Pool,
    operation: Operation,
    requests: Sequence[Mapping[str, Any]],
    *,
    limit: int | None = None,
) -> list[Applied]:
    """Apply ``operation`` to one job per request (or, scanning, to up to ``limit`` jobs
    with one request of parameters); the outcomes in request order (by position)."""
    arrays = [[request[name] for request in requests] for name, _ in operation.inputs]
    args: list[Any] = [*arrays, limit] if operation.scan else arrays
    rows = await conn.fetch(operation.sql, *args)
    outcomes = [Applied(row["n"], row["rule"], row) for row in rows]
    outcomes.sort(key=lambda outcome: outcome.position)
    return outcomes


def unique_jobs(job_ids: Sequence[str]) -> bool:
    """Whether a batch names each job at most once (one statement locks a row once)."""
    return len(set(job_ids)) == len(job_ids)
