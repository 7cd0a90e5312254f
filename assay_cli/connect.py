"""Where the services are and who the CLI is: endpoints, bearer token, channels.

Endpoints come from ASSAY_ASSESSMENT_ADDR / ASSAY_ARCHIVE_ADDR / ASSAY_NOTIFIER_ADDR, else
from the stack recorded by ``assay dev up`` in the state directory, else the defaults.
The token comes from ``--token``, else ASSAY_TOKEN, else the stack's dev operator token.
The assessment service and the notifier are called through ``assay_client`` (the client
library's retries, paging and watches); the archive's operator RPCs through one channel of
their own. Every service is checked before its first call, so an unreachable service is one
clear sentence rather than a gRPC error.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import grpc.aio
from assay_client import AssayClient, AssayError, channel_ready, tls_credentials
from assay_client.client import Service

from assay.archive.v1 import archive_service_pb2_grpc as archive_grpc
from assay_cli.stack import ADDR_VARS, StackInfo, read_state
from assaylib import tracing
from assaylib.channels import channel_target, open_channel
from assaylib.config import ConfigError, Settings

if TYPE_CHECKING:
    from assay.archive.v1.archive_service_pb2_grpc import ArchiveServiceAsyncStub

DEFAULT_STATE_DIR = ".assay"
CONNECT_TIMEOUT = 5.0  # seconds to wait for a channel before saying the service is down
RPC_TIMEOUT = 30.0  # seconds for each call
CLIENT_ADDRS = {name: ADDR_VARS[name] for name in ("assessment", "archive", "notifier")}
"""The services the CLI calls, with the variable naming each one's address."""


class CliError(Exception):
    """A failure the CLI reports in one sentence (exit_code says how to exit)."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


def state_dir(explicit: str | None, env: Mapping[str, str] | None = None) -> Path:
    """The state directory: --state-dir, else ASSAY_STATE_DIR, else ./.assay."""
    source = os.environ if env is None else env
    return Path(explicit or source.get("ASSAY_STATE_DIR") or DEFAULT_STATE_DIR)


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Settings from the environment (a client needs no JWKS)."""
    try:
        return Settings.from_env(env, allow_missing_keys=True)
    except ConfigError as err:
        raise CliError(str(err), exit_code=2) from None


@dataclass
class Target:
    """Endpoints, token and signing key (for `token mint`) for this invocation."""

    settings: Settings
    addrs: dict[str, str]
    token: str
    signing_key_file: str
    stack: StackInfo | None = None


def resolve(token: str | None, state: Path, env: Mapping[str, str] | None = None) -> Target:
    """Work out where the services are and which token to send."""
    source = os.environ if env is None else env
    settings = load_settings(source)
    try:
        stack = read_state(state)
    except (OSError, ValueError, TypeError) as err:
        raise CliError(f"cannot read the stack recorded in {state}: {err}") from None
    defaults = {
        "assessment": settings.assessment_addr,
        "archive": settings.archive_addr,
        "notifier": settings.notifier_addr,
    }
    addrs = {}
    for name, var in CLIENT_ADDRS.items():
        recorded = getattr(stack, name) if stack is not None else ""
        addrs[name] = source.get(var) or recorded or defaults[name]
    return Target(
        settings=settings,
        addrs=addrs,
        token=token or source.get("ASSAY_TOKEN") or (stack.token if stack else ""),
        signing_key_file=settings.signing_key_file or (stack.signing_key_file if stack else ""),
        stack=stack,
    )


@dataclass
class Connection:
    """How the CLI reaches Assay: an ``AssayClient`` for the public services (the
    assessment service and the notifier), and, for the operator commands, a channel to the
    archive. Each service is checked once, before its first call."""

    target: Target
    checked: list[str] = field(default_factory=list)
    """The services checked so far, in order (for messages about a failed call)."""
    _client: AssayClient | None = None
    _archive: grpc.aio.Channel | None = None

    async def __aenter__(self) -> Connection:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the client and the archive channel."""
        client, self._client = self._client, None
        archive, self._archive = self._archive, None
        if client is not None:
            await client.close()
        if archive is not None:
            await archive.close()

    async def client(self, *services: Service) -> AssayClient:
        """The client, once ``services`` (default: the assessment service) answer."""
        token = self._token()
        if self._client is None:
            settings, addrs = self.target.settings, self.target.addrs
            self._client = AssayClient(
                channel_target(addrs["assessment"]),
                notifier_addr=channel_target(addrs["notifier"]),
                token=token,
                credentials=tls(settings),
                interceptors=tracing.client_interceptors(),
                timeout=RPC_TIMEOUT,
            )
        for service in services or ("assessment",):
            if service not in self.checked:
                if not await self._client.reachable(service, within=CONNECT_TIMEOUT):
                    raise CliError(unreachable(service, self.target.addrs[service]))
                self.checked.append(service)
        return self._client

    async def archive(self) -> ArchiveServiceAsyncStub:
        """The ArchiveService, for the operator commands (tokens grant, stuck, sweep,
        status): the client library serves callers and subscribers of the public services,
        not operators."""
        if self._archive is None:
            addr = self.target.addrs["archive"]
            channel = open_channel(addr, self.target.settings, token=self._token())
            if not await channel_ready(channel, CONNECT_TIMEOUT):
                await channel.close()
                raise CliError(unreachable("archive", addr))
            self._archive = channel
            self.checked.append("archive")
        return archive_grpc.ArchiveServiceStub(self._archive)

    def _token(self) -> str:
        if not self.target.token:
            raise CliError(
                "no token: pass --token, set ASSAY_TOKEN, or start a local stack (assay dev up)",
                exit_code=2,
            )
        return self.target.token

    def service_of(self, error: AssayError) -> str:
        """Which checked service a failed call most likely went to (for messages)."""
        for name in self.checked:
            if self.target.addrs[name] in error.message:
                return name
        return self.checked[0] if self.checked else "assessment"


def tls(settings: Settings) -> grpc.ChannelCredentials | None:
    """The client's TLS credentials from ASSAY_TLS_CA (plus ASSAY_TLS_CERT / ASSAY_TLS_KEY for
    mutual TLS), or None for plain text."""
    if not settings.tls_ca:
        return None
    return tls_credentials(settings.tls_ca, settings.tls_cert, settings.tls_key)


def unreachable(service: str, addr: str) -> str:
    """The sentence for a service that does not answer."""
    return f"cannot reach the {service} service at {addr}; is the stack up? (assay dev up)"
