"""Exponential backoff and in-place retries of archive calls that failed transiently."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from worker.archive_client import is_transient

T = TypeVar("T")

log = logging.getLogger(__name__)


class ShuttingDown(Exception):
    """The worker is stopping; the message should go back to JetStream now."""


def backoff(failures: int, *, base: float, cap: float) -> float:
    """``base · 2^(failures-1)`` capped at ``cap``, with up to 10 % jitter so that the
    workers that saw the same outage do not retry in lock step."""
    delay = min(cap, base * 2 ** max(0, failures - 1))
    return float(delay * (1 + random.random() / 10))


async def retry_transient(
    call: Callable[[], Awaitable[T]],
    *,
    deadline: float,
    stop: asyncio.Event,
    log_extra: dict[str, Any],
    base: float = 0.25,
    cap: float = 5.0,
) -> T:
    """Await ``call()``; retry transient archive errors with backoff until it succeeds, it is
    refused (the refusal is raised), ``deadline`` (monotonic) passes (the last error is raised)
    or it fails while ``stop`` is set (ShuttingDown is raised); it is always tried once."""
    failures = 0
    while True:
        try:
            return await call()
        except Exception as err:
            failures += 1
            delay = backoff(failures, base=base, cap=cap)
            if not is_transient(err) or time.monotonic() + delay > deadline:
                raise
            if stop.is_set():
                raise ShuttingDown from err
            log.warning("archive call failed (%s), retrying in %.2fs", err, delay, extra=log_extra)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=delay)
