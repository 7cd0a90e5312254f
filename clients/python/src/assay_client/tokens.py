"""Where the bearer token comes from: a string, a file re-read whenever it changes (a projected
service-account token the kubelet rotates), or any callable; and the interceptors that send it
on every call."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeAlias

import grpc
import grpc.aio

__all__ = ["FileToken", "TokenSource", "bearer_interceptors", "token_getter"]

TokenSource: TypeAlias = "str | os.PathLike[str] | Callable[[], str]"
"""A token itself, a path to a file holding one, or a callable returning one."""


class FileToken:
    """A token read from a file, read again whenever the file changes (by mtime and size)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._seen: tuple[int, int] | None = None
        self._token = ""

    def __call__(self) -> str:
        stat = self.path.stat()
        key = (stat.st_mtime_ns, stat.st_size)
        with self._lock:
            if key != self._seen:
                self._token, self._seen = self.path.read_text().strip(), key
            return self._token


def token_getter(source: TokenSource) -> Callable[[], str]:
    """A callable for any token source."""
    if isinstance(source, str):
        return lambda: source
    if isinstance(source, os.PathLike):
        return FileToken(source)
    return source


class _Bearer:
    def __init__(self, token: Callable[[], str]) -> None:
        self._token = token

    def _with_token(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        metadata = grpc.aio.Metadata(*(details.metadata or ()))
        metadata["authorization"] = f"Bearer {self._token()}"
        return grpc.aio.ClientCallDetails(
            details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
        )


class _UnaryUnary(_Bearer, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(
        self, continuation: Callable[..., Any], details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        return await continuation(self._with_token(details), request)


class _UnaryStream(_Bearer, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(
        self, continuation: Callable[..., Any], details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        return await continuation(self._with_token(details), request)


def bearer_interceptors(source: TokenSource) -> list[grpc.aio.ClientInterceptor]:
    """Interceptors that send ``authorization: Bearer <token>`` on every call."""
    token = token_getter(source)
    return [_UnaryUnary(token), _UnaryStream(token)]
