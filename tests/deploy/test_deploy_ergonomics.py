"""What a Kubernetes operator expects around the workloads (offline): the recommended labels,
disruption budgets and spread for the replicated services, pinned images in prod, and the
optional KEDA component that scales workers on the JetStream backlog."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml  # type: ignore[import-untyped]

from tests.deploy.conftest import (
    K8S,
    TREES,
    Manifest,
    build,
    containers,
    of_kind,
    pod_labels,
    workloads,
)

RECOMMENDED = ("part-of", "instance", "managed-by")
"""On every object and every pod (app.kubernetes.io/…)."""
NAMED_KINDS = frozenset(
    {
        "Deployment",
        "StatefulSet",
        "Job",
        "CronJob",
        "Service",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
    }
)
"""Kinds that also say what they are (name) and their role (component)."""
REPLICATED = ("archive", "assessment", "notifier")
KEDA = K8S / "components" / "keda-worker"


def _missing(labels: dict[str, str], keys: tuple[str, ...]) -> list[str]:
    return [key for key in keys if f"app.kubernetes.io/{key}" not in labels]


@pytest.mark.parametrize("tree", sorted(TREES))
def test_every_object_and_pod_carries_the_recommended_labels(rendered, tree):
    problems = []
    versioned = ("version",) if tree != "base" else ()
    for manifest in rendered[tree]:
        keys = RECOMMENDED + versioned
        if manifest["kind"] in NAMED_KINDS:
            keys += ("name", "component")
        where = f"{manifest['kind']}/{manifest['metadata']['name']}"
        if missing := _missing(manifest["metadata"].get("labels", {}), keys):
            problems.append(f"{where}: {missing}")
    for workload in workloads(rendered[tree]):
        keys = (*RECOMMENDED, *versioned, "name", "component")
        if missing := _missing(pod_labels(workload), keys):
            problems.append(f"pods of {workload['metadata']['name']}: {missing}")
    assert not problems, "\n".join(problems)


def test_the_prod_version_label_is_the_release_deployed(rendered):
    kustomization = yaml.safe_load((TREES["prod"] / "kustomization.yaml").read_text())
    (assay,) = [image for image in kustomization["images"] if image["name"] == "assay"]
    for manifest in rendered["prod"]:
        assert manifest["metadata"]["labels"]["app.kubernetes.io/version"] == assay["newTag"]


@pytest.mark.parametrize("tree", sorted(TREES))
def test_the_replicated_services_have_budgets_and_spread(rendered, tree):
    budgets = of_kind(rendered[tree], "PodDisruptionBudget")
    deployments = of_kind(rendered[tree], "Deployment")
    for name in REPLICATED:
        selector = budgets[name]["spec"]["selector"]["matchLabels"]
        assert selector == deployments[name]["spec"]["selector"]["matchLabels"]
        (spread,) = deployments[name]["spec"]["template"]["spec"]["topologySpreadConstraints"]
        assert spread["topologyKey"] == "kubernetes.io/hostname"
        assert spread["labelSelector"]["matchLabels"] == selector


def test_no_prod_image_floats_on_latest(rendered):
    for workload in workloads(rendered["prod"]):
        for container in containers(workload):
            image = container["image"]
            if "@sha256:" in image:
                continue  # pinned by digest
            tag = image.rpartition(":")[2]
            assert ":" in image and "/" not in tag and tag != "latest", image


def test_the_prod_overlay_says_how_to_pin_by_digest():
    text = (TREES["prod"] / "kustomization.yaml").read_text()
    assert "digest: sha256:" in text
    assert "digest" in (K8S.parents[1] / "docs" / "operations.md").read_text()


@pytest.fixture(scope="module")
def prod_with_keda(tmp_path_factory) -> list[Manifest]:
    """The prod overlay with the KEDA component, as an operator would include it."""
    root = tmp_path_factory.mktemp("keda")
    (root / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "namespace": "assay",
                "resources": [os.path.relpath(TREES["prod"], root)],
                "components": [os.path.relpath(KEDA, root)],
            }
        )
    )
    return build(Path(root))


def test_the_keda_component_scales_workers_on_the_jobs_backlog_and_cpu(prod_with_keda):
    (scaled,) = [m for m in prod_with_keda if m["kind"] == "ScaledObject"]
    spec = scaled["spec"]
    assert spec["scaleTargetRef"]["name"] == "worker"
    hpa = yaml.safe_load((TREES["prod"] / "worker-hpa.yaml").read_text())["spec"]
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (
        hpa["minReplicas"],
        hpa["maxReplicas"],
    )
    assert spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"] == hpa["behavior"]
    triggers = {trigger["type"]: trigger for trigger in spec["triggers"]}
    jetstream = triggers["nats-jetstream"]["metadata"]
    assert (jetstream["stream"], jetstream["consumer"]) == ("ASSAY_JOBS", "analysis-workers")
    host, _, port = jetstream["natsServerMonitoringEndpoint"].rpartition(":")
    assert host.split(".")[0] in of_kind(prod_with_keda, "Service") and port == "8222"
    cpu = hpa["metrics"][0]["resource"]["target"]["averageUtilization"]
    assert triggers["cpu"]["metadata"]["value"] == str(cpu)


def test_the_keda_component_replaces_the_cpu_hpa_and_opens_nats_monitoring(prod_with_keda):
    assert not of_kind(prod_with_keda, "HorizontalPodAutoscaler")  # KEDA owns the HPA
    policy = of_kind(prod_with_keda, "NetworkPolicy")["nats-from-keda"]["spec"]
    (rule,) = policy["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": 8222}]
    namespace = rule["from"][0]["namespaceSelector"]["matchLabels"]
    assert namespace == {"kubernetes.io/metadata.name": "keda"}
