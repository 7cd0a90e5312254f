"""One test-deploy run: the rendered cluster, the host servers, the containers it started."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

from assaylib.embedded import EmbeddedNats, EmbeddedPostgres, postgres_install_dir
from tools.podkube.pods import Pod, inspect, logs, podman, run_to_completion, wait_probe
from tools.podkube.render import LOOPBACK, Cluster, Manifest, kustomize, pod_template
from tools.podkube.tokens import Issuer

ROOT = Path(__file__).resolve().parents[2]
TREE = Path(os.environ.get("PODKUBE_TREE", ROOT / "deploy" / "k8s" / "overlays" / "dev"))
SAMPLE = ROOT / "examples" / "talent-mapping.json"
DEPLOYMENTS = ("archive", "assessment", "notifier", "worker")
"""In start order: the archive first (the others need it to turn ready)."""
USER = "podkube-user"
STUCK_AFTER = "3s"
WAIT = 120.0
STARTED = time.monotonic()


def say(message: str) -> None:
    """Progress, with the seconds since the start."""
    print(f"[podkube {time.monotonic() - STARTED:6.1f}s] {message}", flush=True)


class Run:
    """One test-deploy run: the rendered cluster, the host servers, the containers started."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.run_id = uuid.uuid4().hex[:6]
        self.cluster = Cluster(kustomize(TREE))
        secret = self._secret()
        self.issuer = Issuer(issuer=self._issuer_name())
        self._replace_jwks()
        self.database_url = secret["database-url"]
        self.containers: list[str] = []
        self.pods: dict[str, Pod] = {}

    def _secret(self) -> dict[str, str]:
        names = [n for n in self.cluster.of_kind("Secret") if n.startswith("assay-secrets")]
        return self.cluster.data("Secret", names[0])

    def _issuer_name(self) -> str:
        """The first issuer the services accept (ASSAY_JWT_ISSUER, #16), else ``assay``."""
        for name in self.cluster.of_kind("ConfigMap"):
            if name.startswith("assay-config"):
                issuers = self.cluster.data("ConfigMap", name).get("ASSAY_JWT_ISSUER", "")
                return issuers.split(",")[0].strip() or "assay"
        return "assay"

    def _replace_jwks(self) -> None:
        """The JWKS ConfigMap (#16) gets this run's public key (tokens.py says why)."""
        for name, config_map in self.cluster.of_kind("ConfigMap").items():
            if name.startswith("assay-jwks"):
                config_map["data"] = {"jwks.json": self.issuer.jwks()}

    def pod(self, workload: Manifest, overrides: dict[str, str] | None = None) -> Pod:
        """A workload's pod template as a Pod of this run."""
        name = workload["metadata"]["name"]
        return Pod(
            name,
            pod_template(workload),
            self.cluster,
            self.issuer,
            self.workdir,
            self.run_id,
            overrides or {},
        )

    def run_to_completion(self, pod: Pod, deadline: float) -> str:
        """Start each container of a run-once pod in turn, wait for it; its logs."""
        return run_to_completion(pod, deadline, self.containers)

    def start_deployment(self, name: str, overrides: dict[str, str] | None = None) -> Pod:
        """Init containers to completion, then the containers; wait for their probes."""
        workload = self.cluster.named("Deployment", name)
        pod = self.pod(workload, overrides)
        if overrides:
            say(f"{name}: scenario environment {overrides}")
        for init in pod.spec.get("initContainers", []):
            self.run_one(pod, init, deadline=WAIT)
        for container in pod.spec["containers"]:
            started = pod.start(container)
            self.containers.append(started)
            alive = lambda n=started: inspect(n)["State"]["Running"]  # noqa: E731
            for kind in ("startupProbe", "readinessProbe"):
                if kind in container:
                    took = wait_probe(pod, container[kind], alive, say)
                    say(f"{name}/{container['name']}: {kind} passed after {took:.1f}s")
        self.pods[name] = pod
        return pod

    def run_one(self, pod: Pod, container: Manifest, deadline: float) -> None:
        """One container run to completion (an init container)."""
        name = pod.start(container)
        self.containers.append(name)
        code = podman("wait", name, timeout=deadline)
        if code != "0":
            raise RuntimeError(f"{name} exited {code}:\n{logs(name)}")
        say(f"{pod.name}: init container {container['name']} completed")

    def cli(self, *args: str, role: str = "user") -> str:
        """`assay ARGS` against the containers, as USER (or an operator)."""
        env = {
            **os.environ,
            "ASSAY_TOKEN": self.issuer.caller_token(
                USER if role == "user" else "podkube-ops", [role]
            ),
            "ASSAY_STUCK_AFTER": STUCK_AFTER,
            "ASSAY_STATE_DIR": str(self.workdir / "cli"),
        }
        for service in ("assessment", "archive", "notifier"):
            port = self.cluster.host_port(service, self._service_port(service))
            env[f"ASSAY_{service.upper()}_ADDR"] = f"{LOOPBACK}:{port}"
        assay = Path(sys.executable).parent / "assay"
        done = subprocess.run(
            [str(assay), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=WAIT + 30,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"assay {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
            )
        return done.stdout

    def _service_port(self, service: str) -> int:
        ports = self.cluster.named("Service", service)["spec"]["ports"]
        return int(next(p["port"] for p in ports if p["name"] == "grpc"))

    def cleanup(self) -> None:
        """Remove the containers this run started (by name); PODKUBE_KEEP=1 keeps them."""
        if os.environ.get("PODKUBE_KEEP"):
            say(f"kept containers: {' '.join(self.containers)}")
            return
        for name in self.containers:
            podman("rm", "--force", "--time", "0", name, check=False)


@contextmanager
def host_servers(cluster: Cluster, database_url: str, workdir: Path) -> Iterator[None]:
    """PostgreSQL and NATS from the wheels, where the postgres and nats Services point."""
    postgres = EmbeddedPostgres(
        workdir / "pg", cluster.host_port("postgres", 5432), die_with_parent=True
    )
    nats = EmbeddedNats(workdir / "nats", cluster.host_port("nats", 4222), die_with_parent=True)
    postgres.start()
    nats.start()
    try:
        _create_database(postgres, database_url)
        say(f"PostgreSQL on :{postgres.port}, NATS on :{nats.port} (host, embedded wheels)")
        yield
    finally:
        nats.stop()
        postgres.stop()


def _create_database(postgres: EmbeddedPostgres, database_url: str) -> None:
    """The role and database the Secret's URL names, as the dev overlay's postgres makes them."""
    url = urlsplit(database_url.replace("+asyncpg", ""))
    user, password, database = url.username, url.password, url.path.lstrip("/")
    psql = [
        str(postgres_install_dir() / "bin" / "psql"),
        "-h",
        LOOPBACK,
        "-p",
        str(postgres.port),
        "-U",
        "postgres",
        "-v",
        "ON_ERROR_STOP=1",
        "-q",
    ]
    subprocess.run(
        [*psql, "-c", f"CREATE ROLE \"{user}\" LOGIN PASSWORD '{password}'"],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [*psql, "-c", f'CREATE DATABASE "{database}" OWNER "{user}"'],
        check=True,
        capture_output=True,
    )
