"""One pod spec → ``podman run`` per container, as a kubelet would start it; gRPC probes.

Honoured: image, command/args, the resolved environment, the pod's and container's
securityContext (runAsUser/Group, runAsNonRoot, fsGroup, readOnlyRootFilesystem,
allowPrivilegeEscalation, capabilities), volumes (emptyDir as tmpfs with its sizeLimit,
configMap/secret as read-only files, projected serviceAccountToken and configMap sources as
files), resource limits (memory, cpu) and gRPC probes. Anything else a pod spec asks for
that this cannot provide (another volume type, an exec probe) is an error, not a skip.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tools.podkube.render import LOOPBACK, Cluster, Manifest, RenderError
from tools.podkube.tokens import Issuer

PODMAN = ["podman"]
RUN_LABEL = "assay.podkube.run"
ROOT_UID = 0
CONTAINER_FIELDS = frozenset(
    {
        "name",
        "image",
        "imagePullPolicy",
        "command",
        "args",
        "env",
        "envFrom",
        "ports",
        "startupProbe",
        "readinessProbe",
        "livenessProbe",
        "resources",
        "securityContext",
        "volumeMounts",
        "terminationMessagePolicy",
    }
)
"""The container fields this runner acts on (or, for the last, may ignore); any other field
(workingDir, lifecycle hooks, …) is refused rather than silently skipped."""


def _image_user(image: str) -> str:
    """The user an image runs as (its uid, without a group)."""
    return podman("image", "inspect", image, "--format", "{{.User}}").partition(":")[0]


def podman(*args: str, check: bool = True, timeout: float = 120) -> str:
    """Run podman (CONTAINERS_CONF is the caller's: deploy/podman/containers.conf)."""
    done = subprocess.run(
        [*PODMAN, *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and done.returncode != 0:
        raise RuntimeError(f"podman {' '.join(args[:2])} failed: {done.stderr.strip()}")
    return done.stdout.strip()


def logs(name: str) -> str:
    """A container's log, stdout and stderr together (as ``kubectl logs`` shows them)."""
    done = subprocess.run(
        [*PODMAN, "logs", name],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=60,
        check=False,
    )
    return done.stdout


@dataclass
class Pod:
    """A pod template of one workload, made ready to run on this host."""

    name: str
    template: Manifest
    cluster: Cluster
    issuer: Issuer
    workdir: Path
    run_id: str
    overrides: dict[str, str] = field(default_factory=dict)
    """Extra environment for a scenario (printed when used); empty for the plain run."""
    ports: dict[int, int] = field(default_factory=dict)
    instance: str = field(default_factory=lambda: uuid.uuid4().hex[:4])
    """Like a pod name's random suffix: a Job's second pod is another pod."""

    def __post_init__(self) -> None:
        self.ports = self.cluster.pod_ports(self.template)
        self.spec: Manifest = self.template["spec"]

    def container_name(self, container: Manifest) -> str:
        """The podman name of one of this pod's containers."""
        return f"podkube-{self.run_id}-{self.name}-{self.instance}-{container['name']}"

    def run_args(self, container: Manifest) -> list[str]:
        """``podman run`` arguments for a container of this pod (detached)."""
        unknown = set(container) - CONTAINER_FIELDS
        if unknown:
            raise RenderError(f"{container['name']}: {sorted(unknown)} not supported here")
        args = ["run", "--detach", "--network", "host", "--name", self.container_name(container)]
        args += ["--label", f"{RUN_LABEL}={self.run_id}", "--pull", "never"]
        args += ["--hostname", f"{self.name}-{self.instance}"]  # a pod's hostname: its name
        args += self._security(container) + self._resources(container)
        args += self._volumes(container)
        env = self.environment(container)
        env.update(self.overrides)
        for name, value in sorted(env.items()):
            args += ["--env", f"{name}={value}"]
        command = container.get("command")
        if command:
            args += ["--entrypoint", json.dumps(command)]
        args.append(container["image"])
        args += container.get("args", [])
        return args

    def environment(self, container: Manifest) -> dict[str, str]:
        """The container's environment, addresses resolved (render.py's address book)."""
        return self.cluster.environment(container, self.ports)

    def _security(self, container: Manifest) -> list[str]:
        pod_ctx = self.spec.get("securityContext", {})
        ctx = {**pod_ctx, **container.get("securityContext", {})}
        args: list[str] = []
        uid, gid = ctx.get("runAsUser"), ctx.get("runAsGroup")
        if uid is not None:
            args += ["--user", f"{uid}:{gid}" if gid is not None else str(uid)]
        if ctx.get("runAsNonRoot"):
            # the image's user only when the spec names none (no podman needed otherwise)
            effective = str(uid) if uid is not None else _image_user(container["image"])
            if not effective.isdigit() or int(effective) == ROOT_UID:
                # The kubelet refuses a non-numeric image user it cannot verify, and root.
                raise RenderError(
                    f"{container['name']}: runAsNonRoot, but the user is {effective!r}"
                )
        if "fsGroup" in pod_ctx:
            args += ["--group-add", str(pod_ctx["fsGroup"])]
        # Podman's --read-only adds tmpfs on /tmp, /run, /var/tmp by default: a kubelet does
        # not, so neither does this (a missing emptyDir on /tmp must fail here as in a cluster).
        args += [f"--read-only={'true' if ctx.get('readOnlyRootFilesystem') else 'false'}"]
        args += ["--read-only-tmpfs=false"]
        if ctx.get("allowPrivilegeEscalation") is False:
            args += ["--security-opt", "no-new-privileges"]
        caps = ctx.get("capabilities", {})
        args += [f"--cap-drop={cap}" for cap in caps.get("drop", [])]
        args += [f"--cap-add={cap}" for cap in caps.get("add", [])]
        return args

    def _resources(self, container: Manifest) -> list[str]:
        limits = container.get("resources", {}).get("limits", {})
        args: list[str] = []
        if "memory" in limits:
            args += ["--memory", _bytes(str(limits["memory"]))]
        if "cpu" in limits:
            args += ["--cpus", _cpus(str(limits["cpu"]))]
        return args

    def _volumes(self, container: Manifest) -> list[str]:
        volumes = {v["name"]: v for v in self.spec.get("volumes", [])}
        args: list[str] = []
        for mount in container.get("volumeMounts", []):
            volume = volumes.get(mount["name"])
            if volume is None:
                raise RenderError(
                    f"{container['name']}: mounts undeclared volume {mount['name']!r}"
                )
            path = mount["mountPath"]
            if "emptyDir" in volume:
                size = volume["emptyDir"].get("sizeLimit")
                options = "rw,mode=1777" + (f",size={_bytes(str(size))}" if size else "")
                args += ["--tmpfs", f"{path}:{options}"]
                continue
            source = self._files(volume, container)
            args += ["--volume", f"{source}:{path}:ro"]
        return args

    def _files(self, volume: Manifest, container: Manifest) -> Path:
        """A host directory holding what a configMap, secret or projected volume shows."""
        directory: Path = self.workdir / "volumes" / self.name / str(volume["name"])
        directory.mkdir(parents=True, exist_ok=True)
        files: dict[str, str] = {}
        if "configMap" in volume:
            files = self.cluster.data("ConfigMap", volume["configMap"]["name"])
        elif "secret" in volume:
            files = self.cluster.data("Secret", volume["secret"]["secretName"])
        elif "projected" in volume:
            for source in volume["projected"]["sources"]:
                files.update(self._projected(source))
        else:
            raise RenderError(f"{container['name']}: volume type {sorted(volume)} is not supported")
        owner = self.spec.get("securityContext", {}).get("fsGroup")
        for name, text in files.items():
            target = directory / name
            target.write_text(text)
            target.chmod(0o644)
            if owner is not None and os.geteuid() == 0:
                os.chown(target, 0, int(owner))  # as the kubelet does: group fsGroup, 0640
                target.chmod(0o640)
        directory.chmod(0o755)
        return directory

    def _projected(self, source: Manifest) -> dict[str, str]:
        if "serviceAccountToken" in source:
            token = source["serviceAccountToken"]
            account = self.spec.get("serviceAccountName", "default")
            return {
                token["path"]: self.issuer.service_account_token(
                    self.cluster.namespace,
                    account,
                    token.get("audience", "https://kubernetes.default.svc"),
                    int(token.get("expirationSeconds", 3600)),
                )
            }
        if "configMap" in source:
            return self.cluster.data("ConfigMap", source["configMap"]["name"])
        if "secret" in source:
            return self.cluster.data("Secret", source["secret"]["name"])
        raise RenderError(f"projected source {sorted(source)} is not supported")

    def start(self, container: Manifest) -> str:
        """Start one container; its podman name."""
        podman(*self.run_args(container))
        return self.container_name(container)

    def probe_port(self, probe: Manifest) -> int:
        """The host port a gRPC probe of this pod reaches."""
        port = int(probe["grpc"]["port"])
        if port not in self.ports:
            raise RenderError(f"{self.name}: the probe's port {port} is no containerPort")
        return self.ports[port]


def run_to_completion(pod: Pod, deadline: float, started: list[str]) -> str:
    """A run-once pod (a Job's, the CronJob's): each container in turn, waited for; the last
    one's logs. Every container started is added to ``started`` (for the run's cleanup)."""
    output = ""
    for container in [*pod.spec.get("initContainers", []), *pod.spec["containers"]]:
        name = pod.start(container)
        started.append(name)
        code = podman("wait", name, timeout=deadline)
        output = logs(name)
        if code != "0":
            raise RuntimeError(f"{name} exited {code}:\n{output}")
    return output


def grpc_probe(port: int, service: str, timeout: float) -> bool:
    """One gRPC health check, as the kubelet's grpc probe makes it."""
    with grpc.insecure_channel(f"{LOOPBACK}:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def wait_probe(
    pod: Pod, probe: Manifest, alive: Callable[[], bool], say: Callable[[str], None]
) -> float:
    """Run a probe every periodSeconds until it succeeds; seconds it took. RuntimeError when
    failureThreshold attempts fail (a startup probe) or the container exits."""
    if "grpc" not in probe:
        raise RenderError(f"{pod.name}: only gRPC probes are run here, not {sorted(probe)}")
    port = pod.probe_port(probe)
    period = float(probe.get("periodSeconds", 10))
    attempts = int(probe.get("failureThreshold", 3))
    timeout = float(probe.get("timeoutSeconds", 1))
    start = time.monotonic()
    for attempt in range(1, attempts + 1):
        if grpc_probe(port, probe["grpc"].get("service", ""), timeout):
            return time.monotonic() - start
        if not alive():
            raise RuntimeError(f"{pod.name}: the container exited before its probe passed")
        where = f":{probe['grpc']['port']} (host :{port})"
        say(f"{pod.name}: probe on {where} not yet, {attempt}/{attempts}")
        time.sleep(period)  # the probe's own period, as the kubelet waits
    raise RuntimeError(f"{pod.name}: probe failed {attempts} times")


def _bytes(quantity: str) -> str:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "K": 10**3, "M": 10**6, "G": 10**9}
    for unit, factor in units.items():
        if quantity.endswith(unit):
            return str(int(float(quantity[: -len(unit)]) * factor))
    return str(int(float(quantity)))


def _cpus(quantity: str) -> str:
    return str(int(quantity[:-1]) / 1000) if quantity.endswith("m") else quantity


def inspect(name: str) -> dict[str, Any]:
    """``podman inspect`` of one container."""
    found: list[dict[str, Any]] = json.loads(podman("inspect", name))
    return found[0]
