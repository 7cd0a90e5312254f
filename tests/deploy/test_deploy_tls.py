"""The prod overlay's shape for `make test-prod-shape`: TLS on every gRPC hop (a cert-manager
Certificate per Service, mounted where the settings point), streams at three replicas; and
the runner's address book and kube-proxy stand-in (offline, or on loopback only)."""

from __future__ import annotations

import asyncio
import base64
import copy
import json
from pathlib import Path

import pytest

from assaylib.embedded import free_port
from tests.deploy.conftest import SERVICES, Manifest, containers, of_kind, pod_spec
from tools.podkube.certs import Authority, serial_of, write_atomically
from tools.podkube.proxy import Proxy
from tools.podkube.render import pod_template
from tools.podkube.replicas import ProdCluster


def _config(manifests: list[Manifest]) -> dict[str, str]:
    return next(m["data"] for m in manifests if m["metadata"]["name"].startswith("assay-config"))


def test_prod_streams_are_replicated_on_every_nats_node(rendered):
    nodes = of_kind(rendered["prod"], "StatefulSet")["nats"]["spec"]["replicas"]
    assert int(_config(rendered["prod"])["ASSAY_STREAM_REPLICAS"]) == nodes == 3


def test_every_grpc_service_has_a_certificate_its_pods_mount(rendered):
    prod = rendered["prod"]
    config = _config(prod)
    certificates = {c["spec"]["secretName"]: c for c in of_kind(prod, "Certificate").values()}
    workloads = {**of_kind(prod, "Deployment"), **of_kind(prod, "CronJob")}
    for name in [*SERVICES, "assay-sweep"]:
        workload = workloads[name]
        (volume,) = [v for v in pod_spec(workload)["volumes"] if v["name"] == "tls"]
        certificate = certificates[volume["secret"]["secretName"]]
        spec = certificate["spec"]
        assert spec["issuerRef"]["name"] and spec["privateKey"]["rotationPolicy"] == "Always"
        assert "client auth" in spec["usages"]  # mutual TLS: every service is a client too
        if name in SERVICES:
            assert "server auth" in spec["usages"]
            assert {name, f"{name}.assay.svc.cluster.local"} <= set(spec["dnsNames"])
        (container,) = containers(workload, init=False)
        (mount,) = [m for m in container["volumeMounts"] if m["name"] == "tls"]
        for key, file in (("CERT", "tls.crt"), ("KEY", "tls.key"), ("CA", "ca.crt")):
            assert config[f"ASSAY_TLS_{key}"] == f"{mount['mountPath']}/{file}"
    assert "ASSAY_TLS_CA" not in _config(rendered["dev"])  # dev stays plaintext


def test_every_replica_gets_its_own_address_and_the_archive_list_names_them(rendered):
    cluster = ProdCluster(copy.deepcopy(rendered["prod"]))
    archive = cluster.slots["archive"]
    assert len(archive) == 2 + 1  # replicas + maxSurge
    assert len({s.ip for slots in cluster.slots.values() for s in slots}) == sum(
        len(slots) for slots in cluster.slots.values()
    )
    ports = [p for slots in cluster.slots.values() for s in slots for p in s.ports.values()]
    assert len(ports) == len(set(ports)) and not set(ports) & set(cluster.addresses.values())
    assert len(cluster.slots["worker"]) == 3 + 1  # the HPA's minimum + maxSurge
    deployment = cluster.named("Deployment", "assessment")
    (container,) = pod_template(deployment)["spec"]["containers"]
    slot = cluster.slots["assessment"][1]
    env = cluster.slot_environment(container, pod_template(deployment), slot)
    assert env["ASSAY_ARCHIVE_ADDR"] == ",".join(s.address(50052) for s in archive)
    assert env["ASSAY_ASSESSMENT_ADDR"] == slot.address(50051)  # its own: what it binds
    assert env["ASSAY_METRICS_ADDR"] == slot.address(9090)
    assert env["ASSAY_NATS_URL"] == f"nats://127.0.0.1:{cluster.host_port('nats', 4222)}"


def test_the_ca_issues_what_the_certificate_asks_and_a_renewal_swaps_atomically(
    rendered, tmp_path: Path
):
    certificate = of_kind(rendered["prod"], "Certificate")["assay-archive-tls"]
    authority = Authority()
    secret, serial = authority.secret(certificate, ["127.0.0.1"])
    assert secret["metadata"]["name"] == "assay-archive-tls"
    files = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    write_atomically(tmp_path, files, None)
    assert serial_of((tmp_path / "tls.crt").read_bytes()) == serial
    renewed, new_serial = authority.secret(certificate, ["127.0.0.1"])
    files = {k: base64.b64decode(v).decode() for k, v in renewed["data"].items()}
    write_atomically(tmp_path, files, None)
    assert serial_of((tmp_path / "tls.crt").read_bytes()) == new_serial != serial
    assert (tmp_path / "tls.crt").is_symlink() and len(list(tmp_path.glob("..2*"))) == 1


async def test_the_proxy_sends_each_connection_to_the_next_ready_endpoint(tmp_path: Path):
    async def backend(reply: bytes) -> tuple[asyncio.Server, int]:
        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read(1)
            writer.write(reply)
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(answer, "127.0.0.1", 0)
        return server, server.sockets[0].getsockname()[1]

    (one, p1), (two, p2) = await backend(b"1"), await backend(b"2")
    front = f"127.0.0.1:{free_port()}"
    endpoints = tmp_path / "endpoints.json"
    endpoints.write_text(json.dumps({front: [f"127.0.0.1:{p1}", f"127.0.0.1:{p2}"]}))
    proxy = Proxy(endpoints)
    await proxy.reload()

    async def ask() -> bytes:
        host, _, port = front.rpartition(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"?")
        await writer.drain()
        got = await reader.read(1)
        writer.close()
        return got

    assert sorted([await ask(), await ask()]) == [b"1", b"2"]
    endpoints.write_text(json.dumps({front: [f"127.0.0.1:{p2}"]}))  # one endpoint removed
    proxy.mtime = 0.0
    await proxy.reload()
    assert [await ask(), await ask()] == [b"2", b"2"]
    for server in (one, two, *proxy.servers.values()):
        server.close()


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_probes_reach_the_health_port_the_settings_open(rendered, service):
    deployment = of_kind(rendered["prod"], "Deployment")[service]
    (container,) = containers(deployment, init=False)
    health = int(_config(rendered["prod"])["ASSAY_HEALTH_ADDR"].rpartition(":")[2])
    assert container["readinessProbe"]["grpc"]["port"] == health
