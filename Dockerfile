# syntax=docker/dockerfile:1
#
# ometria-worker image: a venv built from the hashed lock, copied onto a clean base.
#   docker build -t ometria-worker .
# The base is pinned by its full patch tag. Pin it by digest as well where the build can
# resolve one (see docs/deploy.md, "Base image"):
#   docker build --build-arg PYTHON_IMAGE=python:3.12.15-slim-bookworm@sha256:<index digest> .
# Both stages must use the same base: the venv's interpreter link and its .pyc files
# belong to that exact Python.
ARG PYTHON_IMAGE=python:3.12.15-slim-bookworm

FROM ${PYTHON_IMAGE} AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_NO_INPUT=1

WORKDIR /src
RUN python -m venv /opt/venv

# Dependencies first (their own layer, reused while the lock is unchanged). Every file is
# checked against the lock's hashes, and --only-binary keeps the build compiler-free:
# confluent-kafka's wheels bundle librdkafka. The lock also pins the build backend
# (setuptools, wheel) so that the project's own build below fetches nothing unhashed.
COPY requirements.lock ./
RUN /opt/venv/bin/pip install --no-cache-dir --require-hashes --only-binary=:all: \
        -r requirements.lock

# The project itself, without dependencies and without build isolation (the backend is
# already in the venv from the lock). The backend is then removed: nothing needs it at
# run time, and `pip check` proves the locked set satisfies the project's requirements.
# schemas/ goes into the package (worker/builtin_schemas), where the worker finds it. The
# development tools (ometria_dev/: the demo, the Ometria stand-in) are not copied, and the
# build would leave them out anyway (docs/design.md, "Development tools apart").
COPY pyproject.toml README.md ./
COPY worker/ ./worker/
COPY schemas/ ./schemas/
RUN /opt/venv/bin/pip install --no-cache-dir --no-deps --no-build-isolation . \
    && /opt/venv/bin/pip uninstall --yes setuptools wheel packaging \
    && /opt/venv/bin/pip check


FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="ometria-worker" \
      org.opencontainers.image.description="Kafka commerce events to Ometria's headless tracking API" \
      org.opencontainers.image.licenses="Apache-2.0"

# PYTHONDONTWRITEBYTECODE: the root filesystem is read-only in the pod; pip already
# compiled the venv's .pyc files in the build stage. HOME points at the /tmp emptyDir so
# that nothing ever tries to write to `/` for a user that has no passwd entry.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    WORKER_HTTP_PORT=8080

COPY --from=build /opt/venv /opt/venv
WORKDIR /app

# A fixed numeric UID/GID (no passwd entry needed) so that Kubernetes' runAsNonRoot can
# verify it and the chart's runAsUser/fsGroup match. Files stay root-owned: read-only.
USER 10001:10001
EXPOSE 8080

# No HEALTHCHECK on purpose: Kubernetes ignores it and probes /livez and /readyz itself.
ENTRYPOINT ["ometria-worker"]
CMD ["run"]
