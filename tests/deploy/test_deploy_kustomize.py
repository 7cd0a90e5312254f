"""deploy/k8s builds with kustomize and every object is valid Kubernetes (offline)."""

from __future__ import annotations

import dataclasses
import re

import kubernetes_validate
import pytest

from assaylib.config import Settings, env_var
from tests.deploy.conftest import SERVICES, TREES, Manifest, containers, of_kind, workloads

KUBERNETES_VERSION = "1.37.0"
"""Schemas shipped by kubernetes-validate; strict mode also rejects unknown fields."""

ASSAY_NAME = re.compile(r"\bASSAY_[A-Z0-9_]+\b")
CUSTOM_RESOURCE_APIS = frozenset({"monitoring.coreos.com/v1", "cert-manager.io/v1"})
"""Prometheus Operator and cert-manager kinds: no schema ships with kubernetes-validate
(test_deploy_monitoring and test_deploy_tls check their shape)."""


@pytest.mark.parametrize("tree", sorted(TREES))
def test_every_tree_builds(rendered, tree):
    kinds = {m["kind"] for m in rendered[tree]}
    assert {"Namespace", "ConfigMap", "Deployment", "Service", "CronJob", "Job"} <= kinds
    assert set(of_kind(rendered[tree], "Deployment")) >= set(SERVICES)


@pytest.mark.parametrize("tree", sorted(TREES))
def test_every_object_validates_against_the_kubernetes_schemas(rendered, tree):
    problems = []
    for manifest in rendered[tree]:
        if manifest["apiVersion"] in CUSTOM_RESOURCE_APIS:
            continue
        try:
            kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as err:
            where = "/".join(str(part) for part in err.path)
            name = f"{manifest['kind']}/{manifest['metadata']['name']}"
            problems.append(f"{name} {where}: {err.message}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("tree", sorted(TREES))
def test_everything_lives_in_the_assay_namespace(rendered, tree):
    for manifest in rendered[tree]:
        if manifest["kind"] != "Namespace":
            assert manifest["metadata"].get("namespace") == "assay", manifest["metadata"]["name"]


@pytest.mark.parametrize("tree", sorted(TREES))
def test_every_assay_variable_is_a_real_setting(rendered, tree):
    known = {env_var(field.name) for field in dataclasses.fields(Settings)}
    used = set()
    for manifest in rendered[tree]:
        if manifest["kind"] == "ConfigMap":
            used |= {key for key in manifest.get("data", {}) if key.startswith("ASSAY_")}
        for manifest_container in _all_containers(manifest):
            used |= {env["name"] for env in manifest_container.get("env", [])}
            used |= set(ASSAY_NAME.findall(" ".join(manifest_container.get("command", []))))
    used = {name for name in used if name.startswith("ASSAY_")}
    assert used, "no ASSAY_* variable found: the test reads the wrong place"
    assert not used - known, f"not Settings fields: {sorted(used - known)}"


def _all_containers(manifest: Manifest) -> list[Manifest]:
    if manifest["kind"] not in ("Deployment", "StatefulSet", "Job", "CronJob"):
        return []
    return list(containers(manifest))


def test_the_config_addresses_name_the_services(rendered):
    config = next(iter(of_kind(rendered["base"], "ConfigMap").values()))["data"]
    services = of_kind(rendered["base"], "Service")
    for name, port in SERVICES.items():
        host, _, addr_port = config[env_var(f"{name}_addr")].rpartition(":")
        assert host == name and int(addr_port) == port
        grpc = {p["name"]: p["port"] for p in services[name]["spec"]["ports"]}
        assert grpc["grpc"] == port


def test_secrets_only_reach_the_processes_that_need_them(rendered):
    """The database URL goes to the archive and migrations only; there is no other secret."""
    for workload in workloads(rendered["base"]):
        for container in containers(workload):
            secret_keys = {
                env["valueFrom"]["secretKeyRef"]["key"]
                for env in container.get("env", [])
                if "secretKeyRef" in env.get("valueFrom", {})
            }
            migrates = container["command"][-1] == "migrate"
            wants_db = container["name"] == "archive" or migrates
            assert secret_keys == ({"database-url"} if wants_db else set()), container["name"]


def test_the_base_secret_is_referenced_not_committed(rendered):
    assert not of_kind(rendered["base"], "Secret")
    assert not of_kind(rendered["prod"], "Secret")
    dev_secret = next(iter(of_kind(rendered["dev"], "Secret").values()))
    assert dev_secret["metadata"]["name"].startswith("assay-secrets")
    assert set(dev_secret["data"]) == {"database-url", "postgres-password"}


@pytest.mark.parametrize(
    ("tree", "image"),
    [
        ("base", "assay:latest"),
        ("dev", "assay:dev"),
        ("prod", "registry.example.com/assay:0.1.0"),
    ],
)
def test_overlays_override_the_image(rendered, tree, image):
    for workload in workloads(rendered[tree]):
        for container in containers(workload):
            if container["image"].split(":")[0].endswith("assay"):
                assert container["image"] == image
