"""Where the services are and who the CLI is: endpoints, bearer token, channels.

Endpoints come from ASSAY_ASSESSMENT_ADDR / ASSAY_ARCHIVE_ADDR / ASSAY_NOTIFIER_ADDR, else
from the stack recorded by ``assay dev up`` in the state directory, else the defaults.
The token comes from ``--token``, else ASSAY_TOKEN, else the stack's dev operator token.
Every channel is checked before its first call, so an unreachable service is one clear
sentence rather than a gRPC error.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import grpc.aio

from assay.archive.v1 import archive_service_pb2_grpc as archive_grpc
from assay.assessment.v1 import assessment_service_pb2_grpc as assessment_grpc
from assay.notifier.v1 import notifier_service_pb2_grpc as notifier_grpc
from assay_cli.stack import ADDR_VARS, StackInfo, read_state
from assaylib.channels import open_channel
from assaylib.config import ConfigError, Settings

if TYPE_CHECKING:
    from assay.archive.v1.archive_service_pb2_grpc import ArchiveServiceAsyncStub
    from assay.assessment.v1.assessment_service_pb2_grpc import AssessmentServiceAsyncStub
    from assay.notifier.v1.notifier_service_pb2_grpc import NotifierServiceAsyncStub

DEFAULT_STATE_DIR = ".assay"
CONNECT_TIMEOUT = 5.0  # seconds to wait for a channel before saying the service is down
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
    """Channels to the services, opened on first use and checked before the first call."""

    target: Target
    channels: dict[str, grpc.aio.Channel] = field(default_factory=dict)

    async def __aenter__(self) -> Connection:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close every channel opened."""
        channels, self.channels = list(self.channels.values()), {}
        for channel in channels:
            await channel.close()

    async def channel(self, service: str) -> grpc.aio.Channel:
        """The channel to service, once it is connected."""
        if service in self.channels:
            return self.channels[service]
        if not self.target.token:
            raise CliError(
                "no token: pass --token, set ASSAY_TOKEN, or start a local stack (assay dev up)",
                exit_code=2,
            )
        addr = self.target.addrs[service]
        channel = open_channel(addr, self.target.settings, token=self.target.token)
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                connected = await _connect(channel)
        except TimeoutError:
            connected = False
        if not connected:
            await channel.close()
            raise CliError(unreachable(service, addr))
        self.channels[service] = channel
        return channel

    async def assessment(self) -> AssessmentServiceAsyncStub:
        """The AssessmentService."""
        return assessment_grpc.AssessmentServiceStub(await self.channel("assessment"))

    async def archive(self) -> ArchiveServiceAsyncStub:
        """The ArchiveService (operator commands)."""
        return archive_grpc.ArchiveServiceStub(await self.channel("archive"))

    async def notifier(self) -> NotifierServiceAsyncStub:
        """The NotifierService."""
        return notifier_grpc.NotifierServiceStub(await self.channel("notifier"))

    def service_of(self, err: grpc.aio.AioRpcError) -> str:
        """Which opened service a failed call most likely went to (for messages)."""
        text = f"{err.details()} {err.debug_error_string()}"
        for name, addr in self.target.addrs.items():
            if name in self.channels and addr in text:
                return name
        return next(iter(self.channels), "assessment")


async def _connect(channel: grpc.aio.Channel) -> bool:
    """Connect; False as soon as the first attempt fails (nothing listens there)."""
    state = channel.get_state(try_to_connect=True)
    while state != grpc.ChannelConnectivity.READY:
        if state == grpc.ChannelConnectivity.TRANSIENT_FAILURE:
            return False
        await channel.wait_for_state_change(state)
        state = channel.get_state(try_to_connect=True)
    return True


def unreachable(service: str, addr: str) -> str:
    """The sentence for a service that does not answer."""
    return f"cannot reach the {service} service at {addr}; is the stack up? (assay dev up)"
