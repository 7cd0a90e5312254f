"""The faults `make test-prod-shape` causes under load, each followed by recovery.

For each: the seconds until submissions and events flow again, from the load's record —
the end of the longest pause in accepted submissions (and in events the watchers got) that
began at or after the fault, measured from the fault; a pause no longer than the load's own
spacing shows as the first one after the fault.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import os
import socket
import ssl
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

from assay_client import AssayClient
from cryptography import x509

from tools.podkube.load import Load
from tools.podkube.pods import logs
from tools.podkube.prodrun import DEPLOYMENTS, ProdRun, SlotPod
from tools.podkube.run import say
from tools.podkube.steps import json_objects

FLOWING = 5
"""Accepted submissions and events after a fault's recovery that show both flow again."""
RECOVER_WITHIN = 120.0
PAUSE = 1.5
"""A longer gap between accepted submissions (or between events) is a pause in the flow:
under the steady load both come several times a second."""
STREAMS = ("ASSAY_JOBS", "ASSAY_EVENTS")


@dataclass
class Recovery:
    """One fault and how long the load took to flow again."""

    fault: str
    submissions: float
    events: float
    longest_submit_pause: float
    longest_event_pause: float
    held_back: int
    """Submissions the load skipped meanwhile (users at their in-flight limit)."""

    def line(self) -> str:
        """One line of the summary."""
        return (
            f"{self.fault}: submissions {_flow(self.submissions, self.longest_submit_pause)}, "
            f"events {_flow(self.events, self.longest_event_pause)}"
            + (f"; {self.held_back} submissions held back by the load" if self.held_back else "")
        )


def _flow(resumed: float, pause: float) -> str:
    if resumed == 0.0:
        return f"never paused (longest gap {pause:.1f}s)"
    return f"paused at most {pause:.1f}s, flowing again {resumed:.1f}s after the fault began"


def all_faults(run: ProdRun, load: Load) -> list[Recovery]:
    """Every fault in turn (PRODSHAPE_FAULTS, comma-separated, picks some by name)."""
    chosen = os.environ.get("PRODSHAPE_FAULTS", "")
    faults: dict[str, Callable[[ProdRun, Load], Recovery]] = {
        "nats-jobs-leader": lambda r, ld: nats_leader(r, ld, "ASSAY_JOBS"),
        "nats-events-leader": lambda r, ld: nats_leader(r, ld, "ASSAY_EVENTS"),
        "nats-quorum": nats_quorum,
        "relay-holder": relay_holder,
        "node-drain": node_drain,
        "rolling-restart": rolling_restart,
        "sweeps": two_sweeps,
        "certificate-renewal": renew_certificate,
    }
    picked = [f for f in faults if not chosen or f in chosen.split(",")]
    if not run.tls and "certificate-renewal" in picked:
        say("certificate renewal: skipped — the overlay asks for no TLS (no Certificate)")
        picked.remove("certificate-renewal")
    wait_flowing(load, time.monotonic() - 0.001, "the steady load")
    results = []
    for name in picked:
        result = faults[name](run, load)
        say(result.line())
        results.append(result)
    return results


def wait_flowing(load: Load, since: float, what: str) -> float:
    """Wait until FLOWING submissions were accepted and FLOWING events seen after ``since``."""
    deadline = time.monotonic() + RECOVER_WITHIN
    record = load.record
    while True:
        subs = sum(1 for t in list(record.accepted_at) if t > since)
        events = sum(1 for t in list(record.event_at) if t > since)
        if subs >= FLOWING and events >= FLOWING:
            return time.monotonic()
        if load.error is not None:
            raise RuntimeError(f"the load stopped: {load.error!r}")
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"{what}: not flowing {RECOVER_WITHIN:.0f}s on ({subs} accepted, {events} events)"
            )
        time.sleep(0.2)


def measure(load: Load, fault: str, started: float, recovered: float) -> Recovery:
    """Recovery times of one fault, from the record between its start and FLOWING after."""
    end = wait_flowing(load, recovered, fault)
    subs, sub_pause = _resumed(load.record.accepted_at, started, end)
    events, event_pause = _resumed(load.record.event_at, started, end)
    held = sum(1 for t in list(load.record.held_back) if started < t <= end)
    return Recovery(fault, subs, events, sub_pause, event_pause, held)


def _resumed(stamps: list[float], started: float, end: float) -> tuple[float, float]:
    """(seconds from ``started`` to the end of the longest pause after it — 0 when no pause
    was longer than PAUSE, i.e. the flow never stopped — and that pause)."""
    times = [started, *sorted(t for t in list(stamps) if started < t <= end)]
    best_end, best_gap = started, 0.0
    for before, after in itertools.pairwise(times):
        if after - before > best_gap:
            best_gap, best_end = after - before, after
    return (best_end - started if best_gap > PAUSE else 0.0), best_gap


def nats_leader(run: ProdRun, load: Load, stream: str) -> Recovery:
    """kill -9 of the node leading ``stream``; it comes back (its store kept, as a PVC)."""
    leader = run.nats.leader(stream)
    if not leader:
        raise RuntimeError(f"{stream}: no leader reported by /jsz")
    node = run.nats.named(leader)
    started = time.monotonic()
    run.nats.kill(node)
    run.publish_endpoints()
    elected = _wait(lambda: run.nats.leader(stream) not in ("", leader), f"{stream} new leader")
    say(f"kill -9 {leader} (led {stream}): {run.nats.leader(stream)} leads after {elected:.1f}s")
    run.nats.start(node)
    took = run.nats.wait_ready(node, RECOVER_WITHIN)
    _wait(lambda: node.healthy(""), f"{leader} current again")
    run.publish_endpoints()
    say(f"{leader} restarted with its store: ready after {took:.1f}s, streams current")
    return measure(load, f"kill -9 NATS {leader}, leader of {stream}", started, time.monotonic())


QUORUM_LOST_FOR = 10.0
"""Seconds two of the three NATS nodes stay down in the quorum fault."""


def nats_quorum(run: ProdRun, load: Load) -> Recovery:
    """kill -9 of two of the three NATS nodes (quorum lost) for QUORUM_LOST_FOR seconds:
    submissions must still be accepted (the outbox holds their messages); once both nodes
    are back, the backlog flows, in order, with nothing lost (the verification)."""
    down = run.nats.nodes[:2]
    started = time.monotonic()
    for node in down:
        run.nats.kill(node)
    run.publish_endpoints()
    accepted_before = len(load.record.accepted_at)
    time.sleep(QUORUM_LOST_FOR)  # the outage itself, not a wait for a condition
    accepted = len(load.record.accepted_at) - accepted_before
    for node in down:
        run.nats.start(node)
    for node in down:
        run.nats.wait_ready(node, RECOVER_WITHIN)
    run.publish_endpoints()
    say(
        f"kill -9 {', '.join(n.name for n in down)} (quorum lost) for {QUORUM_LOST_FOR:.0f}s: "
        f"{accepted} submissions accepted meanwhile; both nodes back"
    )
    return measure(load, "NATS quorum lost (2 of 3 nodes)", started, time.monotonic())


def relay_holder(run: ProdRun, load: Load) -> Recovery:
    """kill -9 of the archive pod whose relay publishes; the other takes the lock over."""
    holder = _publishing(run)
    name = holder.slot.pod if holder.slot else ""
    started = time.monotonic()
    run.stop_pod("archive", holder, kill=True)
    took = _wait(lambda: relay_publisher(run, wait=1.0) is not None, "another relay publishing")
    say(f"kill -9 archive pod {name} (the relay): another archive pod relays after {took:.1f}s")
    run.start_pod("archive")  # its ReplicaSet replaces it
    return measure(load, "kill -9 archive pod holding the relay lock", started, time.monotonic())


def _publishing(run: ProdRun) -> SlotPod:
    """The archive pod that relays, waited for: right after a broker fault its relay may
    still be retrying a page or backing off (seen once: nothing published in the 3 s after
    the quorum fault's recovery), and a relay that never publishes again fails the run."""
    found: list[SlotPod] = []
    looks = 0

    def publishing() -> bool:
        nonlocal looks
        looks += 1
        holder = relay_publisher(run, wait=1.0)
        found[:] = [holder] if holder is not None else []
        return bool(found)

    took = _wait(publishing, "an archive pod publishing (a relay running)")
    if looks > 1:
        say(f"no archive pod published for {took - 1.0:.1f}s; then one did")
    return found[0]


def relay_publisher(run: ProdRun, wait: float = 3.0) -> SlotPod | None:
    """The archive pod whose assay_outbox_published_total grows (only the relay's does)."""
    before = {id(p): published(p) for p in run.pods["archive"]}
    time.sleep(wait)
    growing = [p for p in run.pods["archive"] if published(p) > before.get(id(p), 0.0)]
    if len(growing) > 1:
        raise RuntimeError(f"{len(growing)} archive pods published at once: two relays")
    return growing[0] if growing else None


def published(pod: SlotPod) -> float:
    """An archive pod's assay_outbox_published_total (0 when it cannot be read)."""
    assert pod.slot is not None
    url = f"http://{pod.slot.address(9090)}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=2) as reply:
            text = reply.read().decode()
    except OSError:
        return 0.0
    for line in text.splitlines():
        if line.startswith("assay_outbox_published_total "):
            return float(line.split()[1])
    return 0.0


def node_drain(run: ProdRun, load: Load) -> Recovery:
    """`kubectl drain` of a "node" holding one pod of each Deployment: each pod evicted
    (SIGTERM, within its PodDisruptionBudget: one of its Deployment at a time) while its
    ReplicaSet starts a replacement; each must exit 0 within its grace period."""
    started = time.monotonic()
    outcome: dict[str, str] = {}

    def evict(deployment: str) -> None:
        old = run.pods[deployment][0]
        stopper = threading.Thread(
            target=lambda: outcome.update({deployment: _stopped(run, deployment, old)})
        )
        stopper.start()
        run.start_pod(deployment)
        stopper.join()

    threads = [threading.Thread(target=evict, args=(d,)) for d in DEPLOYMENTS]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    bad = {d: o for d, o in outcome.items() if not o.startswith("exit 0")}
    if bad or len(outcome) != len(DEPLOYMENTS):
        raise RuntimeError(f"drain: pods did not stop cleanly: {outcome}")
    say("drain: " + "; ".join(f"{d} {o}" for d, o in outcome.items()))
    return measure(load, "drain of a node (one pod of each Deployment)", started, time.monotonic())


def _stopped(run: ProdRun, deployment: str, pod: SlotPod) -> str:
    grace = int(pod.spec.get("terminationGracePeriodSeconds", 30))
    took, code = run.stop_pod(deployment, pod)
    ok = code == 0 and took < grace
    return f"exit {code} in {took:.1f}s (grace {grace}s)" + ("" if ok else " — NOT clean")


def rolling_restart(run: ProdRun, load: Load) -> Recovery:
    """`kubectl rollout restart` of each Deployment: a new pod (maxSurge 1) ready before an
    old one stops (maxUnavailable 0), until every pod is new."""
    started = time.monotonic()
    for deployment in DEPLOYMENTS:
        old = list(run.pods[deployment])
        for pod in old:
            run.start_pod(deployment)
            result = _stopped(run, deployment, pod)
            if not result.startswith("exit 0") or "NOT" in result:
                raise RuntimeError(f"rollout {deployment}: old pod {result}")
        say(f"rollout restart {deployment}: {len(old)} pods replaced one by one")
    return measure(load, "rolling restart of every Deployment", started, time.monotonic())


def two_sweeps(run: ProdRun, load: Load) -> Recovery:
    """Two sweep CronJob pods at once (as overlapping runs would be, were concurrencyPolicy
    not Forbid): the archive's advisory lock lets one sweep at a time."""
    cron = run.cluster.named("CronJob", "assay-sweep")
    deadline = float(cron["spec"]["jobTemplate"]["spec"].get("activeDeadlineSeconds", 60))
    started = time.monotonic()
    outputs: list[str] = []
    pods = [run.pod(cron), run.pod(cron)]
    threads = [
        threading.Thread(target=lambda p=p: outputs.append(run.run_to_completion(p, deadline)))
        for p in pods
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    summaries = [
        [r for r in json_objects(out) if "found" in r or "lock_busy" in r][-1] for out in outputs
    ]
    if len(summaries) != 2:
        raise RuntimeError(f"the sweeps printed {len(summaries)} summaries")
    busy = sum(1 for s in summaries if s.get("lock_busy"))
    say(
        f"two sweep pods at once: {2 - busy} swept, {busy} found the lock held "
        f"(summaries {summaries})"
    )
    return measure(load, "two sweep pods at once", started, time.monotonic())


def _wait(condition: Callable[[], bool], what: str) -> float:
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > RECOVER_WITHIN:
            raise RuntimeError(f"timed out after {RECOVER_WITHIN:.0f}s waiting for {what}")
        time.sleep(0.2)
    return time.monotonic() - start


RENEWED = "assay-assessment-tls"
"""The Secret renewed mid-run: the assessment pods serve callers with it and present it to
the archive, so both a server's and a client's reload are exercised."""


def renew_certificate(run: ProdRun, load: Load) -> Recovery:
    """cert-manager renews one service's certificate mid-run: every assessment pod serves
    new connections with the new certificate, and its channels to the archive present it,
    without a restart (and, the verification says, without a failed call)."""
    old = run.serials[RENEWED]
    started = time.monotonic()
    new = run.renew(RENEWED)
    pods = list(run.pods["assessment"])

    def serving_new() -> bool:
        return all(served_serial(run, p) == new for p in pods)

    took = _wait(serving_new, "every assessment pod serving the renewed certificate")

    def reopened() -> bool:
        waiting = [p for p in pods if not any("TLS files changed" in logs(n) for n in p.containers)]
        for pod in waiting:  # a channel reopens on its next call: make sure each pod has one
            call_through(load, pod)
        return not waiting

    reloaded = _wait(
        reopened, "every assessment pod's channels reopened with the renewed certificate"
    )
    say(
        f"renewed {RENEWED} (serial {old:x} → {new:x}): {len(pods)} assessment pods serve it "
        f"after {took:.1f}s, their channels to the archive use it after {took + reloaded:.1f}s, "
        "no restart"
    )
    return measure(load, f"renewal of {RENEWED}", started, time.monotonic())


def call_through(load: Load, pod: SlotPod) -> None:
    """One call through ``pod`` to the archive (a balance). The load's connections are
    balanced per connection, not per call, so after a rolling restart a pod may have none
    and make no call of its own; its channel to the archive reopens only at its next one."""
    assert pod.slot is not None
    address = pod.slot.address(_grpc_port(pod))
    user = load.users[0]

    async def balance() -> None:
        token = functools.partial(load.token, user)
        async with AssayClient(address, token=token, credentials=load.credentials()) as client:
            await client.balance()

    with contextlib.suppress(Exception):  # only the log says whether it reopened
        asyncio.run(balance())


def served_serial(run: ProdRun, pod: SlotPod) -> int:
    """The serial of the certificate a pod's gRPC port serves a new TLS connection."""
    assert pod.slot is not None
    context = ssl.create_default_context(cafile=str(run.tls_dir / "ca.crt"))
    context.load_cert_chain(run.tls_dir / "caller.crt", run.tls_dir / "caller.key")
    context.set_alpn_protocols(["h2"])
    host, _, port = pod.slot.address(_grpc_port(pod)).rpartition(":")
    with (
        socket.create_connection((host, int(port)), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    return x509.load_der_x509_certificate(der or b"").serial_number


def _grpc_port(pod: SlotPod) -> int:
    (container,) = pod.spec["containers"]
    return int(next(p["containerPort"] for p in container["ports"] if p["name"] == "grpc"))
