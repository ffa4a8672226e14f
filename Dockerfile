# syntax=docker/dockerfile:1
# huimin-worker image: `docker build -t huimin-worker:0.1.0 .` (see docs/deployment.md).
#
# Reproducible: the base image is pinned to an exact version and digest, and every Python
# distribution comes from requirements.lock (`make lock`) with its sha256 hashes checked
# (--require-hashes): the same source tree builds the same dependency set, or fails.
# Stage 1 installs the locked dependencies and the project into a virtual environment; stage 2
# copies that environment into a clean slim image that carries no build tooling, no pip cache
# and no source tree, and runs as a fixed non-root UID.

# python:3.11.13-slim-bookworm, by digest (a tag can be rebuilt under the same name). Update
# both together; override with --build-arg PYTHON_IMAGE=<your mirror>@sha256:...
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm@sha256:86adf8dbadc3d6e82ee5dd2c74bec2e1c2467cdad47886280501df722372d2e1

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# The locked distributions first (their layer survives source changes), hashes required; the
# lock also pins the build backend (setuptools, wheel) that builds the project below.
COPY requirements.lock ./
RUN python -m venv /opt/huimin \
 && /opt/huimin/bin/pip install --no-cache-dir --require-hashes --no-deps -r requirements.lock
COPY pyproject.toml README.md ./
COPY worker ./worker
# The project itself from this tree, with the locked backend and no dependency resolution:
# `pip check` fails the build when the lock misses something pyproject.toml asks for.
RUN /opt/huimin/bin/pip install --no-cache-dir --no-deps --no-build-isolation /src \
 && /opt/huimin/bin/pip check


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

# The builder's virtual environment, as is (same base image, same interpreter path).
COPY --from=builder /opt/huimin /opt/huimin
ENV PATH=/opt/huimin/bin:$PATH
RUN huimin-worker --help > /dev/null

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
