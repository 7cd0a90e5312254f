"""The steps `make test-deploy` shows (the list is in ``__main__``'s docstring)."""

from __future__ import annotations

import json
import time
import urllib.request
from typing import TYPE_CHECKING, Any

from tools.podkube.pods import Pod, inspect, logs, podman
from tools.podkube.run import DEPLOYMENTS, SAMPLE, STUCK_AFTER, USER, WAIT, say

if TYPE_CHECKING:
    from tools.podkube.run import Run

POLL = 0.5
"""Seconds between looks at a condition being waited on (each wait has a deadline)."""
GRANT = 5


def all_steps(run: Run) -> None:
    """Every step, in order."""
    migrate_job(run)
    for name in DEPLOYMENTS:
        run.start_deployment(name)
    say("every Deployment is ready")
    metrics_are_served(run)
    submit_and_watch(run)
    memory_in_use(run)
    kill_worker_then_sweep(run)
    sigterm_worker_mid_job(run)
    sigterm_everything(run)
    logs_are_json(run)


def migrate_job(run: Run) -> None:
    """The migrate Job's pod completes — started, as `kubectl apply` does, together with an
    archive pod's migrate initContainer on the empty database (both must complete)."""
    job = run.cluster.named("Job", "assay-migrate")
    deadline = float(job["spec"].get("activeDeadlineSeconds", 600))
    job_pod, archive_pod = run.pod(job), run.pod(run.cluster.named("Deployment", "archive"))
    started = [job_pod.start(container) for container in job_pod.spec["containers"]]
    started += [archive_pod.start(init) for init in archive_pod.spec.get("initContainers", [])]
    run.containers += started
    for name in started:
        code = podman("wait", name, timeout=deadline)
        if code != "0":
            raise RuntimeError(f"{name} exited {code}:\n{logs(name)}")
    lines = len(logs(started[0]).splitlines())
    say(
        f"migrate Job: completed ({lines} log lines), racing the archive's initContainer "
        f"on the empty database (it completed too)"
    )


def metrics_are_served(run: Run) -> None:
    """Each Deployment serves /metrics where its prometheus.io annotations say."""
    for name, pod in run.pods.items():
        annotations = pod.template["metadata"].get("annotations", {})
        port = pod.ports[int(annotations["prometheus.io/port"])]
        url = f"http://127.0.0.1:{port}{annotations.get('prometheus.io/path', '/metrics')}"
        with urllib.request.urlopen(url, timeout=5) as reply:
            families = sum(line.startswith(b"# TYPE") for line in reply.read().splitlines())
        say(f"{name}: {url} serves {families} metric families")


def memory_in_use(run: Run) -> None:
    """What each container uses against its memory limit (printed, not asserted)."""
    for name, pod in run.pods.items():
        (container,) = pod.spec["containers"]
        usage = podman(
            "stats", "--no-stream", "--format", "{{.MemUsage}}", pod.container_name(container)
        )
        say(f"{name}: memory {usage}")


def submit_and_watch(run: Run) -> None:
    """A Talent Mapping job completes through the containers."""
    run.cli("tokens", "grant", "--user", USER, "--amount", str(GRANT), role="operator")
    out = run.cli("submit", str(SAMPLE), "--watch", "--timeout", str(WAIT))
    if "COMPLETED" not in out.upper():
        raise RuntimeError(f"assay submit --watch did not end COMPLETED:\n{out}")
    say(f"assay submit --watch: the Talent Mapping job COMPLETED ({len(out.splitlines())} lines)")


def kill_worker_then_sweep(run: Run) -> None:
    """podman kill of the worker mid-job; the sweep's pod fails the job and refunds it once.

    Nothing else can move the job meanwhile (no other worker runs, no sweep but these two), so
    each sweep's summary is checked whole: the first finds exactly this job, alone in flight,
    and fails it; the second runs (not held off by the lock) and finds nothing in flight."""
    worker = replace_worker(run, {"ASSAY_ANALYZER_DELAY": "600s"})
    before = balance(run, USER)
    reply = json.loads(run.cli("submit", str(SAMPLE), "--request-id", "podkube-kill", "--json"))
    job_id = reply["job"]["jobId"]
    wait_for(lambda: job(run, job_id)["status"].endswith("PROCESSING"), "job PROCESSING", WAIT)
    (container,) = [c for c in worker.spec["containers"]]
    killed = worker.container_name(container)
    podman("kill", killed)
    # podman kill returns once the signal is sent: wait until the worker is gone for sure.
    wait_for(lambda: not inspect(killed)["State"]["Running"], "the worker killed", WAIT)
    say(f"worker killed while job {job_id} was PROCESSING")
    listed: list[str] = []

    def stale() -> bool:
        listed[:] = [run.cli("stuck", "list", role="operator")]
        return job_id in listed[0]

    wait_for(stale, f"job stale for {STUCK_AFTER}", WAIT)
    cron = run.cluster.named("CronJob", "assay-sweep")
    first = sweep_once(run, cron, {"ASSAY_STUCK_AFTER": STUCK_AFTER})
    swept = job(run, job_id)
    refunded = balance(run, USER)
    wrong = first_sweep_wrong(first, job_id) or (
        "" if swept["status"].endswith("FAILED") else "the job is not FAILED"
    )
    if wrong or refunded != before:
        raise RuntimeError(
            f"the sweep did not fail and refund the job once ({wrong or 'not refunded'}): "
            f"balance {before} before, {refunded} after; summary {first}; job {swept}; "
            f"stuck list before it: {listed[0].strip()}"
        )
    second = sweep_once(run, cron, {"ASSAY_STUCK_AFTER": STUCK_AFTER})
    wrong = second_sweep_wrong(second)
    if wrong or balance(run, USER) != before:
        raise RuntimeError(f"a second sweep changed something ({wrong or 'the balance'}): {second}")
    say(
        f"sweep CronJob pod: {first['found']} stuck of {first['in_flight']} in flight, failed "
        f"{job_id} ({swept.get('errorCode')}), refunded once (balance {before} → {before - 1} → "
        f"{refunded}); a second run found {second['in_flight']} in flight and failed nothing"
    )


def first_sweep_wrong(summary: dict[str, Any], job_id: str) -> str:
    """Why the first sweep's summary is not "found this job alone in flight and failed it"
    ("" when it is)."""
    if summary.get("lock_busy") or summary.get("held_back"):
        return f"it did not run: {summary.get('reason') or 'another sweep held the lock'}"
    counts = {key: summary.get(key, 0) for key in ("in_flight", "found", "failed", "refunded")}
    if counts != dict.fromkeys(counts, 1) or summary.get("jobs") != [job_id]:
        return f"expected 1 in flight, found, failed and refunded: {job_id}"
    return ""


def second_sweep_wrong(summary: dict[str, Any]) -> str:
    """Why the second sweep's summary is not "ran and found nothing in flight" ("" when it
    is): the first failed the only job in flight."""
    if summary.get("lock_busy") or summary.get("held_back"):
        return f"it did not run: {summary.get('reason') or 'another sweep held the lock'}"
    if any(summary.get(key, 0) for key in ("in_flight", "found", "failed", "refunded")):
        return "expected nothing in flight, found or failed"
    return ""


def replace_worker(run: Run, overrides: dict[str, str] | None = None) -> Pod:
    """Stop the worker pod (SIGTERM, as a rollout would; its log is kept for the JSON check)
    and start another, with overrides."""
    old = run.pods.pop("worker")
    grace = int(old.spec.get("terminationGracePeriodSeconds", 30))
    for container in old.spec["containers"]:
        podman("stop", "--time", str(grace), old.container_name(container), timeout=grace + 30)
    return run.start_deployment("worker", overrides)


def sigterm_worker_mid_job(run: Run) -> None:
    """SIGTERM to the worker while it analyses a job: it ends within the grace period, and
    the job is not lost (it completes, charged once)."""
    worker = replace_worker(run, {"ASSAY_ANALYZER_DELAY": "3s"})
    grace = int(worker.spec.get("terminationGracePeriodSeconds", 30))
    before = balance(run, USER)
    reply = json.loads(run.cli("submit", str(SAMPLE), "--request-id", "podkube-term", "--json"))
    job_id = reply["job"]["jobId"]
    wait_for(lambda: job(run, job_id)["status"].endswith("PROCESSING"), "job PROCESSING", WAIT)
    (container,) = worker.spec["containers"]
    took, code = stop(worker.container_name(container), grace)
    if code != 0 or took >= grace:
        raise RuntimeError(f"worker: SIGTERM mid-job → exit {code} after {took:.1f}s")
    replace_worker(run)
    wait_for(lambda: job(run, job_id)["status"].endswith("COMPLETED"), "job COMPLETED", WAIT)
    if balance(run, USER) != before - 1:
        raise RuntimeError(f"balance {before} → {balance(run, USER)}: not charged exactly once")
    say(
        f"worker: SIGTERM mid-job → exit 0 in {took:.1f}s (grace {grace}s); "
        f"job {job_id} COMPLETED, charged once"
    )


def stop(name: str, grace: int) -> tuple[float, int]:
    """``podman stop`` (SIGTERM, SIGKILL after grace seconds); seconds taken, exit code."""
    start = time.monotonic()
    podman("stop", "--time", str(grace), name, timeout=grace + 30)
    return time.monotonic() - start, int(inspect(name)["State"]["ExitCode"])


def sweep_once(run: Run, cron: dict[str, Any], overrides: dict[str, str]) -> dict[str, Any]:
    """The CronJob's job template, one pod, to completion; its JSON summary."""
    pod = run.pod(cron, overrides)
    deadline = float(cron["spec"]["jobTemplate"]["spec"].get("activeDeadlineSeconds", 60))
    output = run.run_to_completion(pod, deadline)
    # The summary is stdout's last line; podman interleaves stdout and stderr by time, and
    # may join a stdout line and a stderr line into one: read every JSON object in the text.
    summaries = [record for record in json_objects(output) if "found" in record]
    if not summaries:
        raise RuntimeError(f"the sweep printed no JSON summary:\n{output}")
    summary: dict[str, Any] = summaries[-1]
    return summary


def sigterm_everything(run: Run) -> None:
    """SIGTERM each container; it must end on its own within the pod's grace period."""
    for name, pod in list(run.pods.items()):
        grace = int(pod.spec.get("terminationGracePeriodSeconds", 30))
        for container in pod.spec["containers"]:
            podman_name = pod.container_name(container)
            took, code = stop(podman_name, grace)
            if code != 0 or took >= grace:
                raise RuntimeError(
                    f"{name}: SIGTERM → exit {code} after {took:.1f}s "
                    f"(grace {grace}s)\n{logs(podman_name)}"
                )
            say(f"{name}: SIGTERM → exit 0 in {took:.1f}s (grace {grace}s)")


def logs_are_json(run: Run) -> None:
    """Every line every container logged (run-once pods too) is a JSON object."""
    for name in run.containers:
        lines = [line for line in logs(name).splitlines() if line.strip()]
        bad = [line for line in lines if not _is_json_objects(line)]
        if bad:
            raise RuntimeError(
                f"{name}: {len(bad)} of {len(lines)} log lines are not JSON, e.g. {bad[0]!r}"
            )
    say(f"{len(run.containers)} containers' logs: every line a JSON object")


def json_objects(text: str) -> list[dict[str, Any]]:
    """Every JSON object in ``text``, including objects written one after another on a line."""
    decoder = json.JSONDecoder()
    found: list[dict[str, Any]] = []
    index = text.find("{")
    while index != -1:
        try:
            value, end = decoder.raw_decode(text, index)
        except json.JSONDecodeError:
            index = text.find("{", index + 1)
            continue
        if isinstance(value, dict):
            found.append(value)
        index = text.find("{", end)
    return found


def _is_json_objects(line: str) -> bool:
    """Whether ``line`` is JSON objects and nothing else (podman may join two log lines)."""
    decoder = json.JSONDecoder()
    index, count = 0, 0
    while index < len(line):
        try:
            value, index = decoder.raw_decode(line, index)
        except json.JSONDecodeError:
            return False
        if not isinstance(value, dict):
            return False
        count += 1
        while index < len(line) and line[index].isspace():
            index += 1
    return count > 0


def job(run: Run, job_id: str) -> dict[str, Any]:
    """`assay jobs get --json`."""
    found: dict[str, Any] = json.loads(run.cli("jobs", "get", job_id, "--json"))
    one: dict[str, Any] = found.get("job", found)
    return one


def balance(run: Run, user: str) -> int:
    """A user's token balance."""
    return int(json.loads(run.cli("tokens", "balance", "--json"))["balance"])


def wait_for(condition: Any, what: str, timeout: float) -> None:
    """Look at condition every POLL seconds until it holds; RuntimeError after timeout."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(POLL)
