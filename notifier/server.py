"""The NotifierService servicer: thin; the rules live in scope and watch."""

from __future__ import annotations

from typing import Any

import grpc

from assay.notifier.v1 import notifier_service_pb2 as pb
from assay.notifier.v1 import notifier_service_pb2_grpc as pb_grpc
from assaylib.auth import current_principal
from notifier.hub import WatchHub
from notifier.scope import watch_scope

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["NotifierService"].full_name

Context = grpc.aio.ServicerContext[Any, Any]


class NotifierServicer(pb_grpc.NotifierServiceServicer):
    """gRPC front of the notifier."""

    def __init__(self, hub: WatchHub) -> None:
        self.hub = hub

    async def WatchJobs(  # type: ignore[override]
        self, request: pb.WatchJobsRequest, context: Context
    ) -> None:
        """Stream the caller's job events (operators: any user's, or all), optionally after
        a snapshot of the current jobs, resuming after ``resume_after`` when set."""
        scope = watch_scope(current_principal(), request)
        await self.hub.watch(request, scope, context.write)
