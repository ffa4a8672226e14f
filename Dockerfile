# syntax=docker/dockerfile:1
# huimin-worker image: `docker build -t huimin-worker:0.1.0 .` (see docs/deployment.md).
#
# Stage 1 builds the project's wheel and the wheels of every runtime dependency (with the
# `postgres` extra); stage 2 installs them offline into a clean slim image that carries no
# build tooling, no pip cache and no source tree, and runs as a fixed non-root UID.

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY worker ./worker
# One wheel per distribution (the project and its locked-by-range dependencies) in /wheels.
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[postgres]"


FROM ${PYTHON_IMAGE} AS runtime
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="huimin-worker" \
      org.opencontainers.image.description="HIS <-> Qingyuan medical-insurance platform integration worker" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="LicenseRef-Proprietary" \
      org.opencontainers.image.vendor="huimin" \
      org.opencontainers.image.base.name="${PYTHON_IMAGE}"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Fixed UID/GID 10001 so the Helm chart's runAsUser/fsGroup and volume ownership line up.
RUN groupadd --system --gid 10001 huimin \
 && useradd --system --uid 10001 --gid huimin --home-dir /var/lib/huimin \
            --shell /usr/sbin/nologin huimin \
 && install -d -o huimin -g huimin -m 0750 /var/lib/huimin

# Install from the builder's wheels only (--no-index): nothing is fetched or compiled here,
# and /wheels holds exactly one version of each distribution, so the versions are pinned by
# stage 1 (DL3013 "pin versions in pip" does not apply to an offline wheelhouse).
# hadolint ignore=DL3013
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels "huimin-worker[postgres]" \
 && huimin-worker --help > /dev/null

# The default SQLite ledger (sqlite:///huimin-ledger.db) lands in the working directory.
WORKDIR /var/lib/huimin
USER 10001:10001

EXPOSE 9464
# Liveness of `huimin-worker run` (the metrics server's /healthz, HUIMIN_METRICS_PORT or the
# settings' default 9464). Kubernetes ignores it and uses the chart's probes; a container
# running `simulate` should be started with --no-healthcheck.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('HUIMIN_METRICS_PORT', '9464'), timeout=4)"]

ENTRYPOINT ["huimin-worker"]
CMD ["run"]
