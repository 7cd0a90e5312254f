"""`make test-prod-shape`: the prod overlay's topology, run on one host, under load and faults.

Runs, with the runner of `make test-deploy` (the rendered pod specs, in podman) extended
for replicas (replicas.py says how every replica gets its own address and ports, proxy.py
is the kube-proxy stand-in, natscluster.py runs the overlay's NATS cluster):

  1. the migrate Job's pod; then each Deployment's replicas (the HPA's minimum for the
     worker), each pod started in its slot and probed as the kubelet would;
  2. the streams, as the services created them, at the replica count the overlay asks;
  3. steady load (callers and watchers on assay-client through the Services), then, each
     followed by recovery, with the seconds until submissions and events flow again:
     kill -9 of the NATS node leading ASSAY_JOBS, then of the one leading ASSAY_EVENTS;
     kill -9 of the archive pod holding the relay lock; a node drain (SIGTERM to one pod of
     each Deployment, one at a time per PodDisruptionBudget, replacements started first);
     a rolling restart of each Deployment (maxSurge 1, maxUnavailable 0); two sweep pods at
     once (as an overlapping CronJob run would be);
  4. the verification (faults.py and verify.py say what each check reads).

Cannot honour here, and says so in its output: scheduling (nodes, anti-affinity, topology
spread — a "node" is one pod of each Deployment, by slot), a real kube-proxy and cluster DNS
(proxy.py, replicas.py), NetworkPolicies (one host network), the HPA (the worker count is
its minimum), liveness-driven restarts (a killed pod is replaced by the runner, as its
ReplicaSet would), the NATS containers' resource limits (host processes), and the CronJob's
schedule (its pod is run when the scenario says).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tools.podkube import faults, verify
from tools.podkube.load import Load
from tools.podkube.prodrun import DEPLOYMENTS, IMAGE, TREE, ProdRun, SlotPod, host_servers
from tools.podkube.run import say

USERS = [f"prodshape-user-{i}" for i in range(int(os.environ.get("PRODSHAPE_USERS", "16")))]
RATE = float(os.environ.get("PRODSHAPE_RATE", "20"))
"""Submissions a second in all: the run's processes then use about a third of this two-core
machine (the verification prints the share measured)."""
GRANT = 100_000
CANNOT = (
    "cannot honour here: scheduling (a 'node' is one pod of each Deployment; no "
    "anti-affinity or topology spread), a real kube-proxy and cluster DNS (proxy.py, "
    "replicas.py), NetworkPolicies (one host network), the HPA (workers at its minimum), "
    "liveness restarts (the runner replaces killed pods as a ReplicaSet would), the NATS "
    "containers' limits (host processes), the CronJob's schedule"
)


def bring_up(run: ProdRun) -> None:
    """The migrate Job, then every Deployment's replicas, each probed; the streams."""
    job = run.cluster.named("Job", "assay-migrate")
    run.run_to_completion(run.pod(job), float(job["spec"].get("activeDeadlineSeconds", 600)))
    say("migrate Job: completed")
    # The archive first (the others turn ready only once it answers), then the rest; each
    # Deployment's replicas together, as a ReplicaSet creates them.
    for group in (DEPLOYMENTS[:1], DEPLOYMENTS[1:]):
        together(
            lambda name: say(f"{name}: pod {_where(run.start_pod(name))} ready"),
            [name for name in group for _ in range(run.cluster.replicas(name))],
        )
    say("every Deployment is ready: " + ", ".join(f"{n} ×{len(run.pods[n])}" for n in DEPLOYMENTS))


def together(action: Callable[[str], object], items: list[str]) -> None:
    """``action`` on every item at once (threads); the first failure raised."""
    with ThreadPoolExecutor(len(items)) as pool:
        for future in [pool.submit(action, item) for item in items]:
            future.result()


def _where(pod: SlotPod) -> str:
    assert pod.slot is not None
    return f"{pod.slot.pod} at {pod.slot.ip} {pod.slot.ports}"


def start_load(run: ProdRun) -> Load:
    """Grant every user tokens, then open the watches and start submitting."""
    # The first through the CLI (its TLS settings included), the others in one process.
    run.cli("tokens", "grant", "--user", USERS[0], "--amount", str(GRANT), "--reason", "prodshape")
    run.grant(USERS[1:], GRANT)
    load = Load(
        run.service_address("assessment"),
        run.service_address("notifier"),
        lambda user: run.issuer.caller_token(user, ["user"]),
        USERS,
        RATE,
        credentials=run.client_credentials,
    )
    load.start()
    say(f"load: {len(USERS)} users, {RATE:g} submissions/s in all, each watching its jobs")
    return load


def main() -> int:
    """Run every step; 0 when all passed."""
    workdir = Path(tempfile.mkdtemp(prefix="prodshape-"))
    os.chmod(workdir, 0o755)
    run = ProdRun(workdir)
    say(f"rendered {TREE}: {len(run.cluster.objects)} objects; image {IMAGE}")
    say(CANNOT)
    if run.tls:
        say(
            f"TLS on: {len(run.serials)} Certificates issued by this run's CA; the headless "
            "archive Service is reached through the kube-proxy stand-in (balanced per "
            "connection, not per call: replicas.py says why)"
        )
    load: Load | None = None
    try:
        with host_servers(run):
            bring_up(run)
            verify.stream_replicas(run)
            load = start_load(run)
            monitor = verify.Monitor(run)
            monitor.start()
            results = faults.all_faults(run, load)
            verify.everything(run, load, results, monitor)
    except Exception as err:
        say(f"FAILED: {err}")
        return 1
    finally:
        if load is not None:
            load.stop()
        run.cleanup()
        if not os.environ.get("PODKUBE_KEEP"):
            shutil.rmtree(workdir, ignore_errors=True)
    say("all steps passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
