"""Least privilege in the manifests (ARCHITECTURE §6): a ServiceAccount per component, a
projected audience-``assay`` token for each caller, the public JWKS for each server, and no
signing key mounted, referenced or shipped in any tree."""

from __future__ import annotations

import json

import pytest
import yaml  # type: ignore[import-untyped]

from assaylib.issuer import Issuer
from tests.deploy.conftest import TREES, Manifest, containers, of_kind, pod_spec, workloads

TOKEN_DIR = "/var/run/secrets/assay/serviceaccount"
JWKS_DIR = "/etc/assay/jwks"
CALLERS = {"assessment", "notifier", "worker", "sweep"}
"""Components that call another service, so present a token."""
SERVERS = {"assessment", "archive", "notifier", "worker"}
"""Components that serve gRPC, so verify tokens."""
DEV_KEY = TREES["dev"] / "dev-signing-key.pem"


def component(workload: Manifest) -> str:
    """The component a workload runs (the migration Job runs the archive's code)."""
    name = str(workload["metadata"]["name"]).removeprefix("assay-")
    return "archive" if name.startswith("migrate") else name


def _mounts(workload: Manifest) -> dict[str, dict[str, object]]:
    main = next(iter(containers(workload, init=False)))
    return {m["name"]: m for m in main.get("volumeMounts", [])}


def _env(workload: Manifest) -> dict[str, str]:
    main = next(iter(containers(workload, init=False)))
    return {e["name"]: e.get("value", "") for e in main.get("env", [])}


@pytest.mark.parametrize("tree", sorted(TREES))
def test_each_component_runs_under_its_own_service_account(rendered, tree):
    accounts = of_kind(rendered[tree], "ServiceAccount")
    assert set(accounts) >= {f"assay-{name}" for name in CALLERS | SERVERS}
    for account in accounts.values():
        assert account.get("automountServiceAccountToken") is False
    seen = set()
    for workload in workloads(rendered[tree]):
        if workload["metadata"]["name"] in ("nats", "postgres"):
            continue
        spec = pod_spec(workload)
        name = component(workload)
        seen.add(name)
        assert spec["serviceAccountName"] == f"assay-{name}", workload["metadata"]["name"]
        assert spec["automountServiceAccountToken"] is False
    assert seen == CALLERS | SERVERS


@pytest.mark.parametrize("tree", sorted(TREES))
def test_callers_present_a_projected_token_and_servers_verify_with_the_jwks(rendered, tree):
    config = next(m for m in rendered[tree] if m["metadata"]["name"].startswith("assay-config"))
    assert config["data"]["ASSAY_JWKS_FILE"] == f"{JWKS_DIR}/jwks.json"
    assert config["data"]["ASSAY_JWT_AUDIENCE"] == "assay"
    for workload in workloads(rendered[tree]):
        name = component(workload)
        if name not in CALLERS | SERVERS or workload["kind"] == "Job":
            continue
        volumes = {v["name"]: v for v in pod_spec(workload).get("volumes", [])}
        mounts, env = _mounts(workload), _env(workload)
        if name in CALLERS:
            (source,) = volumes["service-token"]["projected"]["sources"]
            projected = source["serviceAccountToken"]
            assert projected["audience"] == "assay" and projected["path"] == "token"
            assert 600 <= projected["expirationSeconds"] <= 3600
            assert mounts["service-token"]["mountPath"] == TOKEN_DIR
            assert mounts["service-token"]["readOnly"] is True
            assert env["ASSAY_SERVICE_TOKEN_FILE"] == f"{TOKEN_DIR}/token"
        else:
            assert "service-token" not in volumes and "ASSAY_SERVICE_TOKEN_FILE" not in env
        if name in SERVERS:
            assert volumes["jwks"]["configMap"]["name"] == "assay-jwks"
            assert mounts["jwks"]["mountPath"] == JWKS_DIR and mounts["jwks"]["readOnly"]


@pytest.mark.parametrize("tree", sorted(TREES))
def test_no_signing_key_anywhere(rendered, tree):
    text = yaml.safe_dump_all(rendered[tree])
    assert "PRIVATE KEY" not in text
    assert "jwt-secret" not in text and "ASSAY_JWT_SECRET" not in text
    assert "ASSAY_SIGNING_KEY_FILE" not in text and "dev-signing-key" not in text
    # The only Secrets a pod mounts are its TLS certificate's, which cert-manager writes.
    certificates = {
        c["spec"]["secretName"] for c in of_kind(rendered[tree], "Certificate").values()
    }
    for workload in workloads(rendered[tree]):
        for volume in pod_spec(workload).get("volumes", []):
            if "secret" in volume:
                mounted = volume["secret"]["secretName"]
                assert mounted in certificates, (workload["metadata"]["name"], volume["name"])


def test_the_dev_overlay_publishes_only_the_dev_issuers_public_key(rendered):
    jwks = of_kind(rendered["dev"], "ConfigMap")["assay-jwks"]
    keys = json.loads(jwks["data"]["jwks.json"])["keys"]
    assert all("d" not in key for key in keys)
    assert [key["kid"] for key in keys] == [Issuer.load(DEV_KEY).kid]
    issuers = next(m for m in rendered["dev"] if m["metadata"]["name"].startswith("assay-config"))[
        "data"
    ]["ASSAY_JWT_ISSUER"]
    assert "assay" in issuers.split(",")
    assert "assay-jwks" not in of_kind(rendered["prod"], "ConfigMap")  # created out of band
