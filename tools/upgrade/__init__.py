"""The upgrade machinery: the last release (CHANGELOG.md) built from git history and run beside
the working tree — compatibility checks and `make test-upgrade`'s rolling update."""

import os

# This process forks service processes from a thread while its own gRPC channels are busy
# (the load): gRPC's fork handlers then leave the child's copy of its poller broken before
# exec. The children are new interpreters, so gRPC needs no fork support here.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
