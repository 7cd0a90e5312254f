"""Policy checks on the rendered manifests: probes, resources, security, the sweep CronJob."""

from __future__ import annotations

import pytest

from assaylib.config import Settings, parse_duration
from tests.deploy.conftest import (
    MODULES,
    SERVICES,
    TREES,
    Manifest,
    containers,
    of_kind,
    pod_labels,
    pod_spec,
    workloads,
)

SWEEP_PERIOD_SECONDS = 60


def _long_running(manifests: list[Manifest]) -> list[Manifest]:
    return [m for m in manifests if m["kind"] in ("Deployment", "StatefulSet")]


def _config(manifests: list[Manifest]) -> dict[str, str]:
    configs = [
        m
        for m in of_kind(manifests, "ConfigMap").values()
        if "assay-config" in m["metadata"]["name"]
    ]
    assert len(configs) == 1
    return dict(configs[0]["data"])


@pytest.mark.parametrize("tree", sorted(TREES))
def test_every_long_running_container_has_probes(rendered, tree):
    for workload in _long_running(rendered[tree]):
        for container in containers(workload, init=False):
            who = f"{workload['metadata']['name']}/{container['name']}"
            assert "livenessProbe" in container, who
            assert "readinessProbe" in container, who


@pytest.mark.parametrize("tree", sorted(TREES))
def test_the_four_services_probe_grpc_health_on_their_port(rendered, tree):
    """On the service's own port; with TLS on (prod), on the plaintext health-only port
    ASSAY_HEALTH_ADDR names, since the kubelet's gRPC probes speak no TLS."""
    deployments = of_kind(rendered[tree], "Deployment")
    config = next(
        m["data"] for m in rendered[tree] if m["metadata"]["name"].startswith("assay-config")
    )
    health = config.get("ASSAY_HEALTH_ADDR", "")
    for name, port in SERVICES.items():
        (container,) = containers(deployments[name], init=False)
        assert container["command"] == ["python", "-m", MODULES[name]]
        probed = int(health.rpartition(":")[2]) if health else port
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert container[probe]["grpc"] == {"port": probed}, f"{name} {probe}"
        assert {"name": "grpc", "containerPort": port} in container["ports"]
        if health:
            assert {"name": "health", "containerPort": probed} in container["ports"]
            assert config.get("ASSAY_TLS_CERT"), "a health-only port is for TLS pods"


@pytest.mark.parametrize("tree", sorted(TREES))
def test_every_container_has_requests_and_limits(rendered, tree):
    for workload in workloads(rendered[tree]):
        for container in containers(workload):
            resources = container.get("resources", {})
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources.get(bound, {})), (
                    f"{workload['metadata']['name']}/{container['name']} {bound}"
                )


@pytest.mark.parametrize("tree", sorted(TREES))
def test_every_container_runs_restricted(rendered, tree):
    """Non-root, read-only root, no privilege escalation, no capabilities, RuntimeDefault."""
    for workload in workloads(rendered[tree]):
        spec = pod_spec(workload)
        pod = spec.get("securityContext", {})
        assert spec.get("automountServiceAccountToken") is False, workload["metadata"]["name"]
        for container in containers(workload):
            who = f"{workload['metadata']['name']}/{container['name']}"
            security = {**pod, **container.get("securityContext", {})}
            assert security.get("runAsNonRoot") is True, who
            assert security.get("runAsUser", 0) > 0, who
            assert security.get("readOnlyRootFilesystem") is True, who
            assert security.get("allowPrivilegeEscalation") is False, who
            assert container["securityContext"]["capabilities"]["drop"] == ["ALL"], who
            assert security.get("seccompProfile") == {"type": "RuntimeDefault"}, who


@pytest.mark.parametrize("tree", sorted(TREES))
def test_assay_containers_run_as_the_image_user_with_a_writable_tmp(rendered, tree):
    for workload in workloads(rendered[tree]):
        spec = pod_spec(workload)
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for container in containers(workload):
            if not container["image"].split(":")[0].endswith("assay"):
                continue
            assert container["securityContext"]["runAsUser"] == 10001
            (tmp,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
            assert "emptyDir" in volumes[tmp["name"]]


@pytest.mark.parametrize("tree", sorted(TREES))
def test_pods_get_longer_to_stop_than_the_shutdown_grace(rendered, tree):
    configured = _config(rendered[tree]).get("ASSAY_SHUTDOWN_GRACE")
    grace = Settings().shutdown_grace if configured is None else parse_duration(configured)
    for name in SERVICES:
        deployment = of_kind(rendered[tree], "Deployment")[name]
        assert pod_spec(deployment)["terminationGracePeriodSeconds"] > grace + 5, name


@pytest.mark.parametrize("tree", sorted(TREES))
def test_every_service_has_a_disruption_budget_and_a_grpc_service(rendered, tree):
    budgets = of_kind(rendered[tree], "PodDisruptionBudget")
    services = of_kind(rendered[tree], "Service")
    for name, port in SERVICES.items():
        labels = pod_labels(of_kind(rendered[tree], "Deployment")[name])
        selector = budgets[name]["spec"]["selector"]["matchLabels"]
        assert selector.items() <= labels.items()
        assert budgets[name]["spec"].get("maxUnavailable") == 1  # drains work at 1 replica
        service = services[name]["spec"]
        assert service["type"] == "ClusterIP"
        assert service["selector"].items() <= labels.items()
        assert {"name": "grpc", "port": port, "targetPort": "grpc", "appProtocol": "grpc"} in (
            service["ports"]
        )


@pytest.mark.parametrize("tree", sorted(TREES))
def test_services_are_scraped_for_metrics(rendered, tree):
    port = _config(rendered[tree])["ASSAY_METRICS_ADDR"].rpartition(":")[2]
    for name in SERVICES:
        template = of_kind(rendered[tree], "Deployment")[name]["spec"]["template"]
        annotations = template["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/port"] == port
        (container,) = containers(of_kind(rendered[tree], "Deployment")[name], init=False)
        assert {"name": "metrics", "containerPort": int(port)} in container["ports"]


@pytest.mark.parametrize("tree", sorted(TREES))
def test_the_sweep_cronjob_runs_every_minute_never_overlapping(rendered, tree):
    cronjob = of_kind(rendered[tree], "CronJob")["assay-sweep"]
    spec = cronjob["spec"]
    assert spec["schedule"] == "* * * * *"
    assert spec["concurrencyPolicy"] == "Forbid"
    assert 0 < spec["startingDeadlineSeconds"] < SWEEP_PERIOD_SECONDS
    assert spec["successfulJobsHistoryLimit"] >= 1
    assert spec["failedJobsHistoryLimit"] >= 1
    job = spec["jobTemplate"]["spec"]
    assert 0 < job["activeDeadlineSeconds"] < SWEEP_PERIOD_SECONDS
    assert job["backoffLimit"] <= 2
    # Retrying a held-back sweep (exit 3) or a bad configuration (exit 2) cannot help.
    (rule,) = job["podFailurePolicy"]["rules"]
    assert rule["action"] == "FailJob"
    assert set(rule["onExitCodes"]["values"]) == {2, 3}
    pod = pod_spec(cronjob)
    assert pod["restartPolicy"] == "Never"
    (container,) = pod["containers"]
    assert container["command"] == ["python", "-m", "assessment_svc.sweep"]


@pytest.mark.parametrize("tree", sorted(TREES))
def test_the_archive_waits_for_migrations(rendered, tree):
    migrate = ["python", "-m", "archive_svc", "migrate"]
    archive = of_kind(rendered[tree], "Deployment")["archive"]
    (init,) = pod_spec(archive)["initContainers"]
    assert init["command"] == migrate
    job = of_kind(rendered[tree], "Job")["assay-migrate"]
    (container,) = pod_spec(job)["containers"]
    assert container["command"] == migrate
    assert container["image"] == init["image"] == pod_spec(archive)["containers"][0]["image"]
    assert job["spec"]["backoffLimit"] >= 1


def test_dev_runs_one_of_everything_with_nats_and_postgres_inside(rendered):
    sets = of_kind(rendered["dev"], "StatefulSet")
    assert set(sets) == {"nats", "postgres"}
    for workload in [*sets.values(), *of_kind(rendered["dev"], "Deployment").values()]:
        assert workload["spec"]["replicas"] == 1, workload["metadata"]["name"]
    (nats,) = pod_spec(sets["nats"])["containers"]
    assert "--jetstream" in nats["args"]
    assert sets["postgres"]["spec"]["volumeClaimTemplates"]
    assert sets["nats"]["spec"]["volumeClaimTemplates"]


def test_prod_runs_a_three_node_jetstream_cluster_and_no_postgres(rendered):
    sets = of_kind(rendered["prod"], "StatefulSet")
    assert set(sets) == {"nats"}
    nats = sets["nats"]
    assert nats["spec"]["replicas"] == 3
    headless = of_kind(rendered["prod"], "Service")[nats["spec"]["serviceName"]]
    assert headless["spec"]["clusterIP"] == "None"
    config = of_kind(rendered["prod"], "ConfigMap")["nats-config"]["data"]["nats.conf"]
    assert "jetstream" in config
    for ordinal in range(3):
        assert f"nats://nats-{ordinal}.{headless['metadata']['name']}:6222" in config


def test_prod_replicas(rendered):
    deployments = of_kind(rendered["prod"], "Deployment")
    assert deployments["assessment"]["spec"]["replicas"] == 3
    assert deployments["archive"]["spec"]["replicas"] == 2
    assert deployments["notifier"]["spec"]["replicas"] == 2
    # The HPA owns the worker count; a replicas field would reset it on every apply.
    assert "replicas" not in deployments["worker"]["spec"]


def test_prod_scales_workers_on_cpu(rendered):
    (hpa,) = of_kind(rendered["prod"], "HorizontalPodAutoscaler").values()
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "worker",
    }
    assert hpa["spec"]["minReplicas"] == 3 < hpa["spec"]["maxReplicas"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    (worker,) = containers(of_kind(rendered["prod"], "Deployment")["worker"], init=False)
    assert "cpu" in worker["resources"]["requests"]  # utilisation is relative to the request
