"""tools/podkube turns the rendered pod specs into podman runs faithfully (offline: no
container is started here; `make test-deploy` starts them)."""

from __future__ import annotations

import copy
import json

import jwt
import pytest

from tests.deploy.conftest import Manifest, of_kind
from tools.podkube.pods import Pod
from tools.podkube.render import Cluster, RenderError, pod_template
from tools.podkube.steps import (
    _is_json_objects,
    first_sweep_wrong,
    json_objects,
    second_sweep_wrong,
)
from tools.podkube.tokens import Issuer

MiB = 2**20


@pytest.fixture
def cluster(rendered) -> Cluster:
    return Cluster(copy.deepcopy(rendered["dev"]))


def _pod(cluster: Cluster, kind: str, name: str, tmp_path, template: Manifest | None = None):
    workload = cluster.named(kind, name)
    return Pod(name, template or pod_template(workload), cluster, Issuer(), tmp_path, "test")


def _options(args: list[str]) -> dict[str, list[str]]:
    """``--flag value`` and ``--flag=value`` pairs of a podman command line."""
    found: dict[str, list[str]] = {}
    for index, arg in enumerate(args):
        if arg.startswith("--"):
            flag, sep, value = arg.partition("=")
            found.setdefault(flag, []).append(value if sep else args[index + 1])
    return found


def test_the_archive_container_runs_as_its_pod_spec_says(cluster, tmp_path):
    pod = _pod(cluster, "Deployment", "archive", tmp_path)
    (container,) = pod.spec["containers"]
    options = _options(pod.run_args(container))
    assert options["--user"] == ["10001:10001"]
    assert options["--read-only"] == ["true"] and options["--read-only-tmpfs"] == ["false"]
    assert options["--cap-drop"] == ["ALL"]
    assert "no-new-privileges" in options["--security-opt"]
    assert options["--tmpfs"] == [f"/tmp:rw,mode=1777,size={64 * MiB}"]
    assert options["--memory"] == [str(512 * MiB)] and options["--cpus"] == ["1"]
    assert json.loads(options["--entrypoint"][0]) == ["python", "-m", "archive_svc"]
    env = dict(value.split("=", 1) for value in options["--env"])
    postgres = cluster.host_port("postgres", 5432)
    assert env["ASSAY_DATABASE_URL"].endswith(f"@127.0.0.1:{postgres}/assay")
    assert env["ASSAY_ARCHIVE_ADDR"] == f"127.0.0.1:{cluster.host_port('archive', 50052)}"
    assert env["ASSAY_METRICS_ADDR"] == f"0.0.0.0:{cluster.host_port('archive', 9090)}"
    assert env["ASSAY_LOG_LEVEL"] == "DEBUG"  # the dev overlay's merge wins


def test_the_probe_port_is_the_pods_service_port_on_the_host(cluster, tmp_path):
    pod = _pod(cluster, "Deployment", "worker", tmp_path)
    (container,) = pod.spec["containers"]
    assert pod.probe_port(container["readinessProbe"]) == cluster.host_port("worker", 50054)


@pytest.mark.parametrize(
    ("cluster_address", "service", "port"),
    [
        ("nats://nats:4222", "nats", 4222),
        ("archive.assay.svc.cluster.local:50052", "archive", 50052),
        ("postgresql+asyncpg://u:p@postgres.assay:5432/db", "postgres", 5432),
    ],
)
def test_the_address_book_maps_cluster_names_to_loopback(cluster, cluster_address, service, port):
    rewritten = cluster.rewrite(cluster_address, {})
    assert f"127.0.0.1:{cluster.host_port(service, port)}" in rewritten


def test_a_mount_of_an_undeclared_volume_is_an_error(cluster, tmp_path):
    template = copy.deepcopy(pod_template(cluster.named("Job", "assay-migrate")))
    template["spec"]["containers"][0]["volumeMounts"][0]["name"] = "tmpp"
    pod = _pod(cluster, "Job", "assay-migrate", tmp_path, template)
    with pytest.raises(RenderError, match="undeclared volume 'tmpp'"):
        pod.run_args(pod.spec["containers"][0])


def test_running_as_root_under_run_as_non_root_is_an_error(cluster, tmp_path):
    template = copy.deepcopy(pod_template(cluster.named("Job", "assay-migrate")))
    template["spec"]["containers"][0]["securityContext"]["runAsUser"] = 0
    pod = _pod(cluster, "Job", "assay-migrate", tmp_path, template)
    with pytest.raises(RenderError, match="runAsNonRoot"):
        pod.run_args(pod.spec["containers"][0])


def test_a_projected_service_account_token_is_a_jwt_for_the_pods_account(cluster, tmp_path):
    template = copy.deepcopy(pod_template(cluster.named("Deployment", "worker")))
    spec = template["spec"]
    assert spec["serviceAccountName"] == "assay-worker"  # the rendered manifest's own
    (mount,) = [m for m in spec["containers"][0]["volumeMounts"] if m["name"] == "service-token"]
    pod = _pod(cluster, "Deployment", "worker", tmp_path, template)
    options = _options(pod.run_args(spec["containers"][0]))
    (source,) = [v for v in options["--volume"] if v.endswith(":" + mount["mountPath"] + ":ro")]
    token = (tmp_path / "volumes" / "worker" / "service-token" / "token").read_text()
    assert source.startswith(str(tmp_path))
    keys = jwt.PyJWKSet.from_json(pod.issuer.jwks())
    claims = jwt.decode(token, keys.keys[0].key, algorithms=["ES256"], audience="assay")
    assert claims["sub"] == "system:serviceaccount:assay:assay-worker"


def test_every_workload_the_runner_starts_is_rendered(rendered):
    deployments = of_kind(rendered["dev"], "Deployment")
    assert {"archive", "assessment", "notifier", "worker"} <= set(deployments)
    assert "assay-migrate" in of_kind(rendered["dev"], "Job")
    assert "assay-sweep" in of_kind(rendered["dev"], "CronJob")


def test_a_container_field_the_runner_cannot_honour_is_refused(cluster, tmp_path):
    template = copy.deepcopy(pod_template(cluster.named("Job", "assay-migrate")))
    template["spec"]["containers"][0]["workingDir"] = "/srv"
    pod = _pod(cluster, "Job", "assay-migrate", tmp_path, template)
    with pytest.raises(RenderError, match="workingDir"):
        pod.run_args(pod.spec["containers"][0])


def test_json_lines_that_podman_joined_are_still_read() -> None:
    log = '{"time": "t", "level": "INFO"}\n{"found": 1, "failed": 1}{"time": "t", "message": "m"}\n'
    assert [r for r in json_objects(log) if "found" in r] == [{"found": 1, "failed": 1}]
    joined = '{"found": 1}{"time": "t"}'
    assert _is_json_objects(joined) and _is_json_objects('{"a": 1}')
    assert not _is_json_objects('{"a": 1} trailing text') and not _is_json_objects("[1]")
    assert not _is_json_objects("plain text")


def test_the_sweeps_after_the_kill_are_checked_whole() -> None:
    """The first sweep must have found the killed worker's job alone in flight and failed it;
    the second must have run and found nothing in flight (a sweep kept off by the lock, or
    one that saw no job in flight, is a failure, not a pass)."""
    swept = {"found": 1, "failed": 1, "refunded": 1, "in_flight": 1, "jobs": ["j1"]}
    assert first_sweep_wrong(swept, "j1") == ""
    assert "1 in flight" in first_sweep_wrong({**swept, "in_flight": 0}, "j1")
    assert "1 in flight" in first_sweep_wrong({**swept, "jobs": ["j2"]}, "j1")
    assert "did not run" in first_sweep_wrong({"lock_busy": True}, "j1")
    assert "did not run" in first_sweep_wrong({**swept, "held_back": True, "reason": "r"}, "j1")
    idle = {"found": 0, "failed": 0, "refunded": 0, "in_flight": 0, "jobs": []}
    assert second_sweep_wrong(idle) == ""
    assert "did not run" in second_sweep_wrong({**idle, "lock_busy": True})
    assert "nothing in flight" in second_sweep_wrong({**idle, "in_flight": 1})
    assert "nothing in flight" in second_sweep_wrong({**idle, "failed": 1})
