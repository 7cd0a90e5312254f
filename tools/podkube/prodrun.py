"""One prod-shape run: the rendered prod overlay, its pods in slots, the host servers.

The objects a platform team creates out of band before the first apply (the prod overlay's
kustomization says which) are made here: the Secret ``assay-secrets`` (the host
PostgreSQL's URL) and the ConfigMap ``assay-jwks`` (this run's issuer key, tokens.py).
The overlay's image (a registry name) is replaced by the locally built one.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from assay_client import tls_credentials

from assay.archive.v1 import archive_service_pb2 as archive_pb
from assay.archive.v1 import archive_service_pb2_grpc as archive_grpc
from assaylib.embedded import EmbeddedPostgres
from tools.podkube.certs import Authority, write_atomically
from tools.podkube.natscluster import NatsCluster
from tools.podkube.pods import Pod, inspect, logs, podman, run_to_completion, wait_probe
from tools.podkube.render import LOOPBACK, Manifest, kustomize, pod_template
from tools.podkube.replicas import ProdCluster, Slot
from tools.podkube.run import ROOT, _create_database, say
from tools.podkube.tokens import Issuer

TREE = Path(os.environ.get("PODKUBE_TREE", ROOT / "deploy" / "k8s" / "overlays" / "prod"))
IMAGE = os.environ.get("PODKUBE_IMAGE", "localhost/assay:dev")  # `make image`
DEPLOYMENTS = ("archive", "assessment", "notifier", "worker")
WAIT = 120.0
DB_PASSWORD = "prodshape-" + uuid.uuid4().hex[:8]


@dataclass
class SlotPod(Pod):
    """A pod of the prod shape: in a Deployment's slot (or none, for Job and CronJob pods)."""

    slot: Slot | None = None
    containers: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.spec: Manifest = self.template["spec"]
        self.ports = dict(self.slot.ports) if self.slot is not None else {}

    def environment(self, container: Manifest) -> dict[str, str]:
        """The container's environment for this pod's slot (replicas.py's address book)."""
        assert isinstance(self.cluster, ProdCluster)
        env = self.cluster.slot_environment(container, self.template, self.slot)
        return env

    def run_args(self, container: Manifest) -> list[str]:
        """``podman run`` for a container, with the local image in the overlay's place."""
        args = super().run_args(container)
        args[args.index(container["image"])] = IMAGE
        return args

    def _files(self, volume: Manifest, container: Manifest) -> Path:
        """A Secret volume written as the kubelet writes it (certs.write_atomically), so a
        renewal later swaps every file at once; other volumes as Pod writes them."""
        if "secret" not in volume:
            return super()._files(volume, container)
        name = volume["secret"]["secretName"]
        directory: Path = self.workdir / "volumes" / self.name / str(volume["name"])
        owner = self.spec.get("securityContext", {}).get("fsGroup")
        write_atomically(directory, self.cluster.data("Secret", name), owner)
        assert isinstance(self.cluster, ProdCluster)
        self.cluster.secret_dirs.setdefault(name, set()).add((directory, owner))
        return directory

    def container_name(self, container: Manifest) -> str:
        """The podman name: run, workload, slot, instance, container."""
        where = f"s{self.slot.index}-" if self.slot is not None else ""
        return f"podkube-{self.run_id}-{self.name}-{where}{self.instance}-{container['name']}"


class ProdRun:
    """The cluster, the NATS nodes, the kube-proxy stand-in and every container started."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.run_id = uuid.uuid4().hex[:6]
        self.cluster = ProdCluster(kustomize(TREE))
        self.pg_port = self.cluster.port()
        self.database_url = (
            f"postgresql+asyncpg://assay:{DB_PASSWORD}@{LOOPBACK}:{self.pg_port}/assay"
        )
        self.issuer = Issuer(issuer=self._issuer_name())
        self._out_of_band_objects()
        self.ca = Authority()
        self.serials: dict[str, int] = {}
        """Secret name → the serial of the certificate it holds now."""
        for certificate in self.cluster.of_kind("Certificate").values():
            self.issue(certificate)
        self.tls_dir = workdir / "tls"
        self._caller_certificate()
        # A list of addresses has no name to verify a certificate against (replicas.py).
        self.cluster.headless_lists = not self.tls
        self.nats = NatsCluster(self.cluster, workdir, say)
        self.containers: list[str] = []
        self.pods: dict[str, list[SlotPod]] = {name: [] for name in DEPLOYMENTS}
        self.endpoints_file = workdir / "endpoints.json"
        self.proxy: subprocess.Popen[bytes] | None = None
        self.lock = threading.RLock()
        """Held while slots and endpoints change (a drain starts pods in threads)."""

    def _issuer_name(self) -> str:
        config = next(
            self.cluster.data("ConfigMap", n)
            for n in self.cluster.of_kind("ConfigMap")
            if n.startswith("assay-config")
        )
        return config.get("ASSAY_JWT_ISSUER", "assay").split(",")[0].strip()

    def _out_of_band_objects(self) -> None:
        """What the overlay's kustomization tells the operator to create before applying."""
        secret = base64.b64encode(self.database_url.encode()).decode()
        self.cluster.objects += [
            {
                "kind": "Secret",
                "metadata": {"name": "assay-secrets"},
                "data": {"database-url": secret},
            },
            {
                "kind": "ConfigMap",
                "metadata": {"name": "assay-jwks"},
                "data": {"jwks.json": self.issuer.jwks()},
            },
        ]

    @property
    def tls(self) -> bool:
        """Whether the overlay turns TLS on (it has Certificate objects)."""
        return bool(self.serials)

    def issue(self, certificate: Manifest) -> int:
        """Issue (or renew) a Certificate into its Secret, as cert-manager's CA Issuer
        would; the new serial. IP SANs: 127.0.0.1 and the slots of its workload."""
        workload = certificate["metadata"].get("labels", {}).get("app.kubernetes.io/name", "")
        ips = [LOOPBACK, *(s.ip for s in self.cluster.slots.get(workload, []))]
        secret, serial = self.ca.secret(certificate, ips)
        name = secret["metadata"]["name"]
        self.cluster.objects = [
            o
            for o in self.cluster.objects
            if not (o["kind"] == "Secret" and o["metadata"]["name"] == name)
        ]
        self.cluster.objects.append(secret)
        self.serials[name] = serial
        return serial

    def renew(self, secret_name: str) -> int:
        """cert-manager's renewal: a new key and certificate in the Secret, and the kubelet's
        update of every volume showing it (one atomic swap each); the new serial."""
        (certificate,) = [
            c
            for c in self.cluster.of_kind("Certificate").values()
            if c["spec"]["secretName"] == secret_name
        ]
        serial = self.issue(certificate)
        data = self.cluster.data("Secret", secret_name)
        for directory, owner in self.cluster.secret_dirs.get(secret_name, set()):
            write_atomically(directory, data, owner)
        return serial

    def _caller_certificate(self) -> None:
        """The callers' (load, CLI) client certificate: mutual TLS asks every caller for one."""
        self.tls_dir.mkdir(parents=True, exist_ok=True)
        cert, key, _serial = self.ca.issue("prodshape-caller", [], [], ["client auth"])
        (self.tls_dir / "ca.crt").write_bytes(self.ca.pem)
        (self.tls_dir / "caller.crt").write_bytes(cert)
        (self.tls_dir / "caller.key").write_bytes(key)

    def pod(self, workload: Manifest, slot: Slot | None = None, **env: str) -> SlotPod:
        """A workload's pod template as a pod of this run, in ``slot``."""
        return SlotPod(
            workload["metadata"]["name"],
            pod_template(workload),
            self.cluster,
            self.issuer,
            self.workdir,
            self.run_id,
            dict(env),
            slot=slot,
        )

    # --- Deployments -------------------------------------------------------------------

    def free_slot(self, deployment: str) -> Slot:
        """The first slot of a Deployment with no pod in it."""
        for slot in self.cluster.slots[deployment]:
            if not slot.pod:
                return slot
        raise RuntimeError(f"{deployment}: every slot is taken (replicas + maxSurge)")

    def start_pod(self, deployment: str, slot: Slot | None = None) -> SlotPod:
        """One pod of a Deployment in a free slot: init containers, containers, probes;
        then it is an endpoint of its Services (as the EndpointSlice controller adds a
        ready pod)."""
        with self.lock:
            slot = slot or self.free_slot(deployment)
            pod = self.pod(self.cluster.named("Deployment", deployment), slot)
            slot.pod = f"{pod.name}-s{slot.index}-{pod.instance}"
        for init in pod.spec.get("initContainers", []):
            name = pod.start(init)
            self.containers.append(name)
            code = podman("wait", name, timeout=WAIT)
            if code != "0":
                raise RuntimeError(f"{name} exited {code}:\n{logs(name)}")
        for container in pod.spec["containers"]:
            name = pod.start(container)
            self.containers.append(name)
            pod.containers.append(name)
            alive = lambda n=name: inspect(n)["State"]["Running"]  # noqa: E731
            for kind in ("startupProbe", "readinessProbe"):
                if kind in container:
                    try:
                        wait_probe(pod, container[kind], alive, lambda _m: None)
                    except RuntimeError as err:
                        raise RuntimeError(f"{err}:\n{logs(name)[-3000:]}") from None
        with self.lock:
            self.pods[deployment].append(pod)
            self.publish_endpoints()
        return pod

    def stop_pod(self, deployment: str, pod: SlotPod, *, kill: bool = False) -> tuple[float, int]:
        """Take a pod out of its Services' endpoints, then SIGTERM it and wait up to its
        grace period (SIGKILL after), or ``kill -9`` it; seconds taken and exit code."""
        assert pod.slot is not None
        with self.lock:
            pod.slot.terminating = True  # the EndpointSlice drops it as the kubelet stops it
            self.pods[deployment].remove(pod)
            self.publish_endpoints()
        grace = int(pod.spec.get("terminationGracePeriodSeconds", 30))
        start = time.monotonic()
        code = 0
        for name in pod.containers:
            if kill:
                podman("kill", "--signal", "KILL", name)
                podman("wait", name, timeout=30)
            else:
                podman("stop", "--time", str(grace), name, timeout=grace + 30)
            code = max(code, int(inspect(name)["State"]["ExitCode"]))
        with self.lock:
            pod.slot.pod, pod.slot.terminating = "", False  # its ports are free again
        return time.monotonic() - start, code

    def publish_endpoints(self) -> None:
        """The ready endpoints of every Service, for the kube-proxy stand-in (atomically)."""
        with self.lock:
            self._publish()

    def _publish(self) -> None:
        table = self.cluster.endpoints()
        nats_port = self.cluster.host_port("nats", 4222)
        table[f"{LOOPBACK}:{nats_port}"] = [n.client_address for n in self.nats.nodes if n.alive()]
        staged = self.endpoints_file.with_suffix(".tmp")
        staged.write_text(json.dumps(table))
        os.replace(staged, self.endpoints_file)

    def run_to_completion(self, pod: SlotPod, deadline: float) -> str:
        """A run-once pod (a Job's, the CronJob's): each container in turn; its logs."""
        return run_to_completion(pod, deadline, self.containers)

    def service_address(self, service: str) -> str:
        """Where a caller outside the pods reaches a Service (its kube-proxy address)."""
        ports = self.cluster.named("Service", service)["spec"]["ports"]
        port = int(next(p["port"] for p in ports if p["name"] == "grpc"))
        return f"{LOOPBACK}:{self.cluster.host_port(service, port)}"

    def cli(self, *args: str, role: str = "operator") -> str:
        """`assay ARGS` against the Services, as an operator."""
        env = {
            **os.environ,
            "ASSAY_TOKEN": self.issuer.caller_token("prodshape-ops", [role]),
            "ASSAY_STATE_DIR": str(self.workdir / "cli"),
        }
        for service in ("assessment", "archive", "notifier"):
            env[f"ASSAY_{service.upper()}_ADDR"] = self.service_address(service)
        env.update(self.client_tls_env())
        assay = Path(sys.executable).parent / "assay"
        done = subprocess.run(
            [str(assay), *args], env=env, capture_output=True, text=True, timeout=60, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"assay {' '.join(args)} exited {done.returncode}:\n{done.stderr}")
        return done.stdout

    def grant(self, users: list[str], amount: int) -> None:
        """GrantTokens to each user, as an operator, through the archive Service (the CLI's
        call, made here once per user instead of one CLI process each)."""
        token = self.issuer.caller_token("prodshape-ops", ["operator"])
        address = self.service_address("archive")
        credentials = self.client_credentials()
        channel = (
            grpc.secure_channel(address, credentials)
            if credentials is not None
            else grpc.insecure_channel(address)
        )
        with channel:
            stub = archive_grpc.ArchiveServiceStub(channel)
            for user in users:
                request = archive_pb.GrantTokensRequest(
                    user_id=user, amount=amount, reason="prodshape"
                )
                stub.GrantTokens(
                    request,
                    metadata=(("authorization", f"Bearer {token}"),),
                    timeout=WAIT,
                    wait_for_ready=True,
                )

    def client_credentials(self) -> grpc.ChannelCredentials | None:
        """The load's channel credentials: the CA, and the caller's certificate."""
        if not self.tls:
            return None
        return tls_credentials(
            self.tls_dir / "ca.crt", self.tls_dir / "caller.crt", self.tls_dir / "caller.key"
        )

    def client_tls_env(self) -> dict[str, str]:
        """The CLI's TLS settings."""
        if not self.tls:
            return {}
        return {
            "ASSAY_TLS_CA": str(self.tls_dir / "ca.crt"),
            "ASSAY_TLS_CERT": str(self.tls_dir / "caller.crt"),
            "ASSAY_TLS_KEY": str(self.tls_dir / "caller.key"),
        }

    def cleanup(self) -> None:
        """Remove the containers (PODKUBE_KEEP=1 keeps them), stop the proxy."""
        if self.proxy is not None:
            self.proxy.terminate()
        if os.environ.get("PODKUBE_KEEP"):
            say(f"kept containers: {' '.join(self.containers)}")
            return
        for name in self.containers:
            podman("rm", "--force", "--time", "0", name, check=False)


@contextmanager
def host_servers(run: ProdRun) -> Iterator[None]:
    """PostgreSQL (the overlay's external database), the NATS cluster, the kube-proxy."""
    postgres = EmbeddedPostgres(run.workdir / "pg", run.pg_port, die_with_parent=True)
    postgres.start()
    try:
        _create_database(postgres, run.database_url)
        run.nats.start_all(WAIT)
        run.publish_endpoints()
        run.proxy = subprocess.Popen(
            [sys.executable, "-m", "tools.podkube.proxy", str(run.endpoints_file)],
            cwd=ROOT,
            start_new_session=True,
        )
        say(
            f"PostgreSQL on {LOOPBACK}:{postgres.port} (the external database); "
            f"kube-proxy stand-in (tools/podkube/proxy.py) on the Services' addresses"
        )
        yield
    finally:
        run.nats.stop_all()
        postgres.stop()
