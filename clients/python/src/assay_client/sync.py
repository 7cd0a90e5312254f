"""``SyncAssayClient``: the same calls for code without an event loop (scripts, threads of a
WSGI app). It drives an ``AssayClient`` on an event loop of its own, in the calling thread;
each method blocks until its call is done. Inside a running event loop, use ``AssayClient``.

    with SyncAssayClient("assay-assessment:50051", notifier_addr=..., token=...) as assay:
        job, result = assay.wait(assay.submit(data).job.job_id)
"""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import Coroutine, Generator
from typing import Any, TypeVar

from assay.assessment.v1 import assessment_service_pb2 as pb
from assay.common.v1 import job_pb2
from assay_client.client import AssayClient
from assay_client.watch import WatchItem

__all__ = ["SyncAssayClient"]

Result = TypeVar("Result")


class SyncAssayClient:
    """``AssayClient``'s calls, blocking. Arguments are ``AssayClient``'s; ``list`` returns
    a list and ``watch`` an ordinary iterator. One thread at a time."""

    def __init__(self, assessment_addr: str, **options: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._client = self._run(_open(assessment_addr, options))

    def _run(self, call: Coroutine[Any, Any, Result]) -> Result:
        return self._loop.run_until_complete(call)

    def __enter__(self) -> SyncAssayClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the client and its event loop."""
        if not self._loop.is_closed():
            self._run(self._client.close())
            self._loop.close()

    def submit(self, *args: Any, **kwargs: Any) -> pb.SubmitAssessmentResponse:
        """``AssayClient.submit``."""
        return self._run(self._client.submit(*args, **kwargs))

    def submit_many(self, *args: Any, **kwargs: Any) -> list[pb.SubmitAssessmentResponse]:
        """``AssayClient.submit_many``."""
        return self._run(self._client.submit_many(*args, **kwargs))

    def get(self, job_id: str, **kwargs: Any) -> job_pb2.Job:
        """``AssayClient.get``."""
        return self._run(self._client.get(job_id, **kwargs))

    def list(self, **kwargs: Any) -> builtins.list[job_pb2.Job]:
        """``AssayClient.list``, every job it names (mind ``limit=``)."""
        return self._run(_collect(self._client, kwargs))

    def cancel(self, job_id: str, **kwargs: Any) -> job_pb2.Job:
        """``AssayClient.cancel``."""
        return self._run(self._client.cancel(job_id, **kwargs))

    def retry(self, job_id: str, **kwargs: Any) -> pb.RetryJobResponse:
        """``AssayClient.retry``."""
        return self._run(self._client.retry(job_id, **kwargs))

    def balance(self, user_id: str = "", **kwargs: Any) -> pb.GetTokenBalanceResponse:
        """``AssayClient.balance``."""
        return self._run(self._client.balance(user_id, **kwargs))

    def result(self, job_id: str = "", **kwargs: Any) -> job_pb2.AnalysisResult:
        """``AssayClient.result``."""
        return self._run(self._client.result(job_id, **kwargs))

    def wait(self, job_id: str) -> tuple[job_pb2.Job, job_pb2.AnalysisResult | None]:
        """``AssayClient.wait``."""
        return self._run(self._client.wait(job_id))

    def watch(self, **kwargs: Any) -> Generator[WatchItem, None, None]:
        """``AssayClient.watch``: an iterator that blocks for each item (close it, or leave
        the ``for`` loop, to end the watch)."""
        items = self._client.watch(**kwargs)
        try:
            while True:
                try:
                    yield self._run(anext(items))
                except StopAsyncIteration:
                    return
        finally:
            self._run(items.aclose())


async def _open(assessment_addr: str, options: dict[str, Any]) -> AssayClient:
    return AssayClient(assessment_addr, **options)  # its channels belong to this loop


async def _collect(client: AssayClient, options: dict[str, Any]) -> list[job_pb2.Job]:
    return [job async for job in client.list(**options)]
