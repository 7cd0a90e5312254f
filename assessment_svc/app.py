"""Wiring of the assessment process: the archive client, the domain and the gRPC server."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import grpc
import grpc.aio
from grpc_health.v1.health import HealthServicer

from assay.assessment.v1 import assessment_service_pb2_grpc as pb_grpc
from assaylib.config import Settings
from assaylib.server import create_server, shutdown
from assessment_svc.archive_client import ArchiveClient
from assessment_svc.server import SERVICE_NAME, AssessmentServicer
from assessment_svc.submissions import Assessments

__all__ = ["AssessmentApp"]

log = logging.getLogger(__name__)


@dataclass
class AssessmentApp:
    """A running assessment service: serves RPCs until stopped."""

    server: grpc.aio.Server
    port: int
    health: HealthServicer
    archive: ArchiveClient

    @classmethod
    async def start(cls, settings: Settings, bind: str) -> AssessmentApp:
        """Open the archive channel and serve on ``bind`` (port 0 picks a free one).

        The channel connects lazily: the service starts (and says why it fails) even while
        the archive is down.
        """
        archive = ArchiveClient.connect(settings)
        servicer = AssessmentServicer(
            Assessments(archive=archive, max_inflight=settings.max_inflight_per_user)
        )
        try:
            server, port, health = await create_server(
                bind,
                settings=settings,
                register=[lambda s: pb_grpc.add_AssessmentServiceServicer_to_server(servicer, s)],
                service_names=[SERVICE_NAME],
            )
        except BaseException:
            await archive.close()
            raise
        log.info("assessment service on port %d, archive at %s", port, settings.archive_addr)
        return cls(server, port, health, archive)

    async def stop(self, grace: float) -> None:
        """Stop serving (in-flight calls get ``grace`` seconds), then close the channel."""
        await shutdown(self.server, self.health, grace=grace, on_stop=[self.archive.close])
