"""Prod NetworkPolicies: each pod reaches only what it needs.

A small evaluator of the NetworkPolicy semantics the manifests use (pod and namespace label
selectors with matchLabels/matchExpressions, ipBlock, numeric ports) answers "may A open a
connection to B on port P", for the edges the services need and for ones they must not have.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

import pytest

from tests.deploy.conftest import Manifest, of_kind, pod_labels, workloads

NAMESPACE = "assay"


@dataclass(frozen=True)
class Endpoint:
    """A pod (namespace and labels) or an address outside the cluster (ip)."""

    namespace: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    ip: str = ""

    @property
    def namespace_labels(self) -> dict[str, str]:
        return {"kubernetes.io/metadata.name": self.namespace}


@dataclass(frozen=True)
class _LabelledNamespace(Endpoint):
    """A pod in a namespace labelled assay.io/client=true."""

    @property
    def namespace_labels(self) -> dict[str, str]:
        return {"kubernetes.io/metadata.name": self.namespace, "assay.io/client": "true"}


def _selects(selector: Manifest, labels: dict[str, str]) -> bool:
    if any(labels.get(key) != value for key, value in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        value = labels.get(expression["key"])
        operator = expression["operator"]
        if operator == "In" and value not in expression["values"]:
            return False
        if operator == "NotIn" and value in expression["values"]:
            return False
        if operator == "Exists" and value is None:
            return False
        if operator == "DoesNotExist" and value is not None:
            return False
    return True


def _peer_matches(peer: Manifest, policy_namespace: str, other: Endpoint) -> bool:
    if "ipBlock" in peer:
        if not other.ip:
            return False  # pod IPs are ignored by ipBlock in practice; keep the test strict
        address = ipaddress.ip_address(other.ip)
        block = peer["ipBlock"]
        excluded = any(address in ipaddress.ip_network(cidr) for cidr in block.get("except", []))
        return address in ipaddress.ip_network(block["cidr"]) and not excluded
    if other.ip:
        return False
    if "namespaceSelector" in peer:
        if not _selects(peer["namespaceSelector"], other.namespace_labels):
            return False
    elif other.namespace != policy_namespace:
        return False
    return _selects(peer.get("podSelector", {}), other.labels)


def _port_matches(ports: list[Manifest] | None, port: int, protocol: str) -> bool:
    if not ports:
        return True
    return any(p.get("protocol", "TCP") == protocol and p.get("port") == port for p in ports)


def _allows(
    policies: list[Manifest], pod: Endpoint, other: Endpoint, port: int, protocol: str, way: str
) -> bool:
    """Whether the policies on ``pod`` let ``way`` (Ingress/Egress) traffic with ``other``."""
    if not pod.namespace:
        return True  # outside the cluster: no NetworkPolicy applies
    selecting = [
        policy
        for policy in policies
        if policy["metadata"]["namespace"] == pod.namespace
        and way in policy["spec"].get("policyTypes", ["Ingress"])
        and _selects(policy["spec"]["podSelector"], pod.labels)
    ]
    if not selecting:
        return True  # not isolated
    peers_key = "from" if way == "Ingress" else "to"
    for policy in selecting:
        for rule in policy["spec"].get(way.lower(), []):
            peers = rule.get(peers_key)
            peer_ok = not peers or any(_peer_matches(peer, pod.namespace, other) for peer in peers)
            if peer_ok and _port_matches(rule.get("ports"), port, protocol):
                return True
    return False


def connects(
    policies: list[Manifest], source: Endpoint, target: Endpoint, port: int, protocol: str = "TCP"
) -> bool:
    """May ``source`` open a connection to ``target:port``? Egress and ingress must both allow."""
    return _allows(policies, source, target, port, protocol, "Egress") and _allows(
        policies, target, source, port, protocol, "Ingress"
    )


@pytest.fixture(scope="module")
def prod(rendered) -> tuple[list[Manifest], dict[str, Endpoint]]:
    manifests = rendered["prod"]
    policies = list(of_kind(manifests, "NetworkPolicy").values())
    pods = {
        pod_labels(w)["app.kubernetes.io/name"]: Endpoint(NAMESPACE, pod_labels(w))
        for w in workloads(manifests)
    }
    pods |= {
        "postgres": Endpoint(ip="10.20.30.40"),  # external, reached through the Secret's URL
        "dns": Endpoint("kube-system", {"k8s-app": "kube-dns"}),
        "prometheus": Endpoint("monitoring", {"app": "prometheus"}),
        "client": Endpoint("shop", {"app": "frontend"}),
        "stranger": Endpoint("elsewhere", {"app": "curious"}),
    }
    return policies, pods


ALLOWED = [
    ("assessment", "archive", 50052),
    ("worker", "archive", 50052),
    ("worker", "nats", 4222),
    ("notifier", "nats", 4222),
    ("notifier", "archive", 50052),
    ("archive", "nats", 4222),
    ("archive", "postgres", 5432),
    ("sweep", "archive", 50052),
    ("migrate", "postgres", 5432),
    ("nats", "nats", 6222),
    ("assessment", "assessment", 50051),  # the operator CLI, run in the assessment pod
    # Prometheus scrapes every Assay process (overlays/prod/monitors.yaml).
    ("prometheus", "assessment", 9090),
    ("prometheus", "archive", 9090),
    ("prometheus", "notifier", 9090),
    ("prometheus", "worker", 9090),
]

DENIED = [
    ("assessment", "nats", 4222),
    ("assessment", "postgres", 5432),
    ("worker", "postgres", 5432),
    ("notifier", "postgres", 5432),
    ("sweep", "nats", 4222),
    ("sweep", "postgres", 5432),
    ("migrate", "archive", 50052),
    ("worker", "assessment", 50051),
    ("assessment", "notifier", 50053),
    ("notifier", "assessment", 50051),
    ("archive", "assessment", 50051),
    ("archive", "worker", 50054),
    ("assessment", "archive", 5432),  # right peer, wrong port
    ("stranger", "archive", 50052),
    ("stranger", "assessment", 50051),
    ("client", "archive", 50052),
    ("client", "nats", 4222),
    ("nats", "archive", 50052),
    ("worker", "stranger", 443),
    ("stranger", "worker", 9090),  # metrics: Prometheus only
    ("client", "archive", 9090),
    ("prometheus", "archive", 50052),  # Prometheus: the metrics port only
]


@pytest.mark.parametrize(("source", "target", "port"), ALLOWED)
def test_prod_allows_what_each_service_needs(prod, source, target, port):
    policies, pods = prod
    assert connects(policies, pods[source], pods[target], port)


@pytest.mark.parametrize(("source", "target", "port"), DENIED)
def test_prod_denies_everything_else(prod, source, target, port):
    policies, pods = prod
    assert not connects(policies, pods[source], pods[target], port)


def test_clients_in_a_labelled_namespace_reach_assessment_and_notifier(prod):
    policies, pods = prod
    client = Endpoint("shop", {"app": "frontend"})
    labelled = _LabelledNamespace("shop", {"app": "frontend"})
    assert not connects(policies, client, pods["assessment"], 50051)
    assert connects(policies, labelled, pods["assessment"], 50051)
    assert connects(policies, labelled, pods["notifier"], 50053)


def test_every_pod_may_resolve_names(prod):
    policies, pods = prod
    for name, pod in pods.items():
        if pod.namespace == NAMESPACE:
            assert connects(policies, pod, pods["dns"], 53, "UDP"), name
            assert connects(policies, pod, pods["dns"], 53, "TCP"), name


def test_every_prod_pod_has_its_own_policy_over_a_default_deny(rendered):
    policies = list(of_kind(rendered["prod"], "NetworkPolicy").values())
    default_deny = [
        p
        for p in policies
        if p["spec"]["podSelector"] == {}
        and set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"}
        and not p["spec"].get("ingress")
        and not p["spec"].get("egress")
    ]
    assert default_deny
    for workload in workloads(rendered["prod"]):
        labels = pod_labels(workload)
        own = [
            p
            for p in policies
            if p["spec"]["podSelector"] and _selects(p["spec"]["podSelector"], labels)
        ]
        assert own, f"no NetworkPolicy selects {workload['kind']}/{workload['metadata']['name']}"
