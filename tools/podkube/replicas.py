"""The prod overlay's replicas on one host: a slot (own loopback address, own ports) per pod.

ADDRESS BOOK OF THE PROD SHAPE (extends render.py's, which the dev run keeps using):

* Each Deployment gets ``replicas + maxSurge`` slots (the HPA's minReplicas for the worker,
  whose replicas the overlay leaves to the HPA). Slot ``i`` of Deployment number ``d`` is the
  address ``127.0.<d>.<i+1>``, and every containerPort of the pod gets a host port of its
  own: the services bind ``[::]:<port>`` (assaylib.config.listen_addr), which on a shared
  host network covers every loopback address, so the port — not only the address — must
  differ between replicas. A pod's own ``0.0.0.0:<containerPort>`` (the metrics) binds
  ``<slot address>:<port>``.
* A headless Service (the archive's): ``<name>:<port>`` in a pod's environment becomes the
  list of every slot's address, ``127.0.1.1:p1,127.0.1.2:p2,127.0.1.3:p3`` — what its DNS
  name resolves to; the services' channels balance over it round robin (assaylib.channels),
  skipping a slot where nothing listens (a surge slot between rollouts, a killed pod).
  With TLS on, a list has no name to check the certificate against (gRPC takes the whole
  list for the authority), where the cluster's ``archive`` has one: the headless Service is
  then reached like a ClusterIP one, so calls are balanced per connection, not per call.
* A ClusterIP Service (assessment, notifier, worker, nats): ``127.0.0.1:<host port>``, where
  the kube-proxy stand-in (proxy.py) forwards each connection to one ready endpoint.
* The pod's own Service (an archive pod's ``ASSAY_ARCHIVE_ADDR``, which it binds): its own
  slot's address, as ``archive:50052`` means port 50052 inside the pod's own namespace.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from assaylib.embedded import free_port
from tools.podkube.render import LOOPBACK, Cluster, Manifest, RenderError, pod_template

NUMBERS = {"archive": 1, "assessment": 2, "notifier": 3, "worker": 4}
"""Each Deployment's second octet (127.0.<d>.<slot+1>); the NATS nodes use 127.0.5.x."""
NATS_NET = 5


@dataclass
class Slot:
    """Where one pod of a Deployment runs: its address and its ports."""

    deployment: str
    index: int
    ip: str
    ports: dict[int, int]
    """containerPort → host port."""
    pod: str = ""
    """The name of the pod in it now ("" while it is empty)."""
    terminating: bool = False
    """Its pod was told to stop: no longer an endpoint, its ports not yet free."""

    def address(self, container_port: int) -> str:
        """``ip:port`` of one of this slot's container ports."""
        return f"{self.ip}:{self.ports[container_port]}"


@dataclass
class ProdCluster(Cluster):
    """The rendered prod overlay, with a slot per replica and per surge pod."""

    slots: dict[str, list[Slot]] = field(default_factory=dict)
    secret_dirs: dict[str, set[tuple[Path, int | None]]] = field(default_factory=dict)
    """Secret name → the volume directories showing it (and their fsGroup), for renewals."""
    headless_lists: bool = True
    """A headless Service as the list of its pods' addresses (False: through the proxy)."""
    taken: set[int] = field(default_factory=set)
    """Every host port handed out: free_port() may hand out a port again until it is bound."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.taken.update(self.addresses.values())
        for name, deployment in self.of_kind("Deployment").items():
            count = self.replicas(name) + _surge(deployment)
            ports = [
                int(p["containerPort"])
                for c in pod_template(deployment)["spec"]["containers"]
                for p in c.get("ports", [])
            ]
            d = NUMBERS[name]
            self.slots[name] = [
                Slot(name, i, f"127.0.{d}.{i + 1}", {p: self.port() for p in ports})
                for i in range(count)
            ]

    def port(self) -> int:
        """A free host port not handed out before in this run."""
        while (port := free_port()) in self.taken:
            pass
        self.taken.add(port)
        return port

    def replicas(self, deployment: str) -> int:
        """The replica count the overlay asks for (the HPA's minimum where the HPA owns it)."""
        spec = self.named("Deployment", deployment)["spec"]
        if "replicas" in spec:
            return int(spec["replicas"])
        for hpa in self.of_kind("HorizontalPodAutoscaler").values():
            if hpa["spec"]["scaleTargetRef"]["name"] == deployment:
                return int(hpa["spec"].get("minReplicas", 1))
        return 1

    def own_service(self, template: Manifest) -> set[str]:
        """The Services that select a pod of this template."""
        labels = template["metadata"].get("labels", {})
        own = set()
        for name, service in self.of_kind("Service").items():
            selector = service["spec"].get("selector", {})
            if selector and all(labels.get(k) == v for k, v in selector.items()):
                own.add(name)
        return own

    def headless(self, service: str) -> bool:
        """Whether a Service is headless (its name resolves to every pod)."""
        return bool(self.named("Service", service)["spec"].get("clusterIP") == "None")

    def target_port(self, service: str, port: int) -> int:
        """The containerPort a Service's port targets (named ports resolved)."""
        spec = self.named("Service", service)["spec"]
        (entry,) = [p for p in spec["ports"] if int(p["port"]) == port]
        target = entry.get("targetPort", port)
        if isinstance(target, int):
            return target
        for deployment in self.of_kind("Deployment").values():
            template = pod_template(deployment)
            if service in self.own_service(template):
                for container in template["spec"]["containers"]:
                    for p in container.get("ports", []):
                        if p.get("name") == target:
                            return int(p["containerPort"])
        raise RenderError(f"Service {service}: no pod has a port named {target!r}")

    def service_slots(self, service: str) -> list[Slot]:
        """The slots of the Deployment a Service selects."""
        for name, deployment in self.of_kind("Deployment").items():
            if service in self.own_service(pod_template(deployment)):
                return self.slots[name]
        return []

    def slot_environment(
        self, container: Manifest, template: Manifest, slot: Slot | None
    ) -> dict[str, str]:
        """A container's environment (Cluster.environment), addresses rewritten for a slot."""
        env = super().environment(container, {})
        own = self.own_service(template)
        return {name: self.slot_rewrite(value, own, slot) for name, value in env.items()}

    def rewrite(self, value: str, own_ports: dict[int, int]) -> str:
        """Unchanged: a prod-shape pod's addresses depend on its slot (``slot_rewrite``)."""
        return value

    def slot_rewrite(self, value: str, own: set[str], slot: Slot | None) -> str:
        """``service:port`` and ``0.0.0.0:port`` in a value, for a pod in ``slot``."""
        names = "|".join(re.escape(name) for name, _ in self.addresses)
        suffix = rf"(?:\.{re.escape(self.namespace)}(?:\.svc(?:\.cluster\.local)?)?)?"
        pattern = re.compile(rf"\b({names}){suffix}:(\d+)\b")

        def to_host(match: re.Match[str]) -> str:
            service, port = match.group(1), int(match.group(2))
            if (service, port) not in self.addresses:
                raise RenderError(f"{match.group(0)!r}: the Service has no such port")
            if slot is not None and service in own:
                return slot.address(self.target_port(service, port))
            if self.headless_lists and self.headless(service) and self.service_slots(service):
                target = self.target_port(service, port)
                return ",".join(s.address(target) for s in self.service_slots(service))
            return f"{LOOPBACK}:{self.addresses[(service, port)]}"

        value = pattern.sub(to_host, value)
        if slot is None:
            return value

        def to_own(match: re.Match[str]) -> str:
            port = int(match.group(2))
            return slot.address(port) if port in slot.ports else match.group(0)

        return re.sub(r"^(0\.0\.0\.0|\[::\]|):(\d+)$", to_own, value)

    def endpoints(self) -> dict[str, list[str]]:
        """Each Service address → its ready endpoints (the slots holding a pod)."""
        table: dict[str, list[str]] = {}
        for (service, port), host_port in self.addresses.items():
            slots = self.service_slots(service)
            if not slots:
                continue
            target = self.target_port(service, port)
            ready = [s.address(target) for s in slots if s.pod and not s.terminating]
            table[f"{LOOPBACK}:{host_port}"] = ready
        return table


def _surge(deployment: Manifest) -> int:
    strategy = deployment["spec"].get("strategy", {}).get("rollingUpdate", {})
    surge = strategy.get("maxSurge", 1)
    return int(surge) if not str(surge).endswith("%") else 1
