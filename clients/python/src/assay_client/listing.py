"""``JobList``: ListJobs a page at a time, as jobs or as pages, up to an optional limit."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import grpc.aio

from assay.assessment.v1 import assessment_service_pb2 as pb
from assay.common.v1 import job_pb2
from assay_client.errors import from_rpc_error

__all__ = ["MAX_PAGE_SIZE", "JobList"]

MAX_PAGE_SIZE = 100
"""The most jobs the service returns in one page."""

ListJobs = Callable[..., Awaitable[pb.ListJobsResponse]]


class JobList:
    """The jobs a ``list()`` call names, fetched one page (one ListJobs call) at a time.

    ``async for job in jobs`` yields the jobs; ``async for page in jobs.pages()`` yields the
    replies themselves. With ``limit``, no page asks for more jobs than are still wanted, so
    the listing stops exactly at ``limit`` and ``next_page_token`` (set once iteration
    ended) is where the jobs not listed start: "" when there are none. Each iteration lists
    afresh from the first page.
    """

    def __init__(
        self,
        list_jobs: ListJobs,
        request: pb.ListJobsRequest,
        *,
        page_size: int,
        limit: int,
        timeout: float,
    ) -> None:
        self._list_jobs = list_jobs
        self._request = request
        self._page_size = max(1, min(page_size, MAX_PAGE_SIZE))
        self.limit = limit
        """The most jobs to list (0: all)."""
        self.next_page_token = ""
        """After iterating: the token of the jobs not listed (with a ``limit``), else ""."""
        self._timeout = timeout

    def __aiter__(self) -> AsyncIterator[job_pb2.Job]:
        return self._jobs()

    async def _jobs(self) -> AsyncIterator[job_pb2.Job]:
        async for page in self.pages():
            for job in page.jobs:
                yield job

    async def pages(self) -> AsyncIterator[pb.ListJobsResponse]:
        """Each ListJobs reply in turn, until the last page or the ``limit``."""
        request = pb.ListJobsRequest()
        request.CopyFrom(self._request)
        listed = 0
        while True:
            wanted = self.limit - listed if self.limit else self._page_size
            request.page_size = min(wanted, self._page_size)
            try:
                page = await self._list_jobs(request, timeout=self._timeout)
            except grpc.aio.AioRpcError as err:
                raise from_rpc_error(err) from None
            listed += len(page.jobs)
            self.next_page_token = page.next_page_token
            yield page
            if not page.next_page_token or (self.limit and listed >= self.limit):
                return
            request.page_token = page.next_page_token
