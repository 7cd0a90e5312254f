"""`make test-deploy`: the dev overlay's own pod specs, run in podman containers, end to end.

Shows, in order (each step prints progress; any failure exits 1 with the container's logs):
  1. the migrate Job's pod runs to completion (exit 0);
  2. each Deployment's pod starts (init containers first) and its startup and readiness
     probes — gRPC health on the probe's port, as the kubelet makes them — pass;
     then each serves /metrics where its prometheus.io annotations say;
  3. `assay submit --watch` through the containers completes a Talent Mapping job (and each
     container's memory use against its limit is printed);
  4. after `podman kill` of the worker mid-job, the sweep CronJob's pod, run once, fails the
     job (STUCK) and refunds it; a second run changes nothing (exactly once);
  5. SIGTERM to the worker mid-job: exit 0 within terminationGracePeriodSeconds, and the job
     completes, charged once; then SIGTERM ends every service within its grace period;
  6. every line every container logged (run-once pods too) is a JSON object.

Runs on the host: PostgreSQL and NATS from the embedded wheels on free ports (never 5432 or
4222), standing in for the overlay's postgres and nats Services (their StatefulSets, which
use registry images, are not run). The address book is in tools/podkube/render.py.
Scenario-only settings (a slow analyzer, a short stuck threshold) are passed as extra
environment and printed; the pod specs are otherwise run as rendered.

Cannot check here: NetworkPolicies (all containers share the host network), HPA and
autoscaling, scheduling (affinity, topology spread, PodDisruptionBudgets), Service load
balancing and DNS, liveness-driven restarts, the CronJob's schedule/concurrencyPolicy, and
the Job's backoff/podFailurePolicy (each pod runs once); PostgreSQL trusts local logins, so
the Secret's password is carried but not checked.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

from tools.podkube import steps
from tools.podkube.run import TREE, Run, host_servers, say


def main() -> int:
    """Run every step; 0 when all passed."""
    workdir = Path(tempfile.mkdtemp(prefix="podkube-"))
    os.chmod(workdir, 0o755)
    run = Run(workdir)
    say(
        f"rendered {TREE}: {len(run.cluster.objects)} objects; "
        f"address book {run.cluster.address_book()}"
    )
    try:
        with host_servers(run.cluster, run.database_url, workdir):
            steps.all_steps(run)
    except Exception as err:
        say(f"FAILED: {err}")
        return 1
    finally:
        run.cleanup()
        if not os.environ.get("PODKUBE_KEEP"):
            shutil.rmtree(workdir, ignore_errors=True)
    say("all steps passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
