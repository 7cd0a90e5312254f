# syntax=docker/dockerfile:1
# One image for every Assay process (ARCHITECTURE §1). The Deployment picks the module:
#   python -m assessment_svc | archive_svc [migrate] | notifier | worker | assessment_svc.sweep
# Build: docker build -t assay:dev .   (or `make image`: podman, from a local Debian base image)

ARG PYTHON_IMAGE=python:3.11-slim

# --- builder: a virtualenv with the project and its runtime dependencies ----------------------
FROM ${PYTHON_IMAGE} AS builder
# Set only where PyPI is reached through a TLS-inspecting proxy (`make image` passes the
# machine's CA bundle as a build-time mount); unset, pip trusts its own bundle. Builder only.
ARG PIP_CERT
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
# python3, not python: Debian's interpreter (a debootstrapped base, `make image`) is
# /usr/bin/python3 with no `python`; the official image has both. The venv then has python.
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# The context is an allowlist (.dockerignore): pyproject, README, gen/, the packages and the
# client's sources (clients/python/src: the CLI calls Assay through it; the one distribution
# carries it).
COPY . .
# Every runtime dependency ships manylinux wheels for CPython 3.11, so no compiler is needed
# here either; pip compiles the .pyc files now, so the read-only image never writes them.
RUN pip install .

# --- runtime: the virtualenv only, as an unprivileged user --------------------------------------
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="assay" \
      org.opencontainers.image.description="Assay: psychometric assessment analyses as durable jobs on a gRPC mesh"
RUN groupadd --system --gid 10001 assay \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin assay
COPY --from=builder /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /tmp
# Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
# gRPC: assessment, archive, notifier, worker (health); Prometheus /metrics.
EXPOSE 50051 50052 50053 50054 9090
ENTRYPOINT ["python", "-m"]
CMD ["assessment_svc"]
