# syntax=docker/dockerfile:1
# The genapi gateway as a container image (README: "Deploying: container and systemd").
#
#   docker build -t genapi .
#   docker run --rm -p 4000:4000 --shm-size=256m \
#     -v "$PWD/gateway.toml:/etc/genapi/gateway.toml:ro" -e JWT_SECRET genapi
#
# The config is mounted, not baked in: it must listen on all addresses ([gateway] host = "0.0.0.0",
# or `-e GENAPI_HOST=0.0.0.0`) and port 4000 (what EXPOSE and the HEALTHCHECK below use). Secrets
# come from the environment: ${JWT_SECRET} in the file (as above), GENAPI_JWT_SECRET, or
# GENAPI_JWT_SECRET_FILE=/run/secrets/... (README: "Secrets and the environment").
#
# /dev/shm: the workers share memory through files in /dev/shm/genapi-<uid>/: the registry
# snapshot (about 0.5 KB per function, twice while a new generation is written) and, when
# [rate_limiter] has limits, the rate-limit table of table_slots x ring x 8 bytes, ring being the
# largest max_requests (at least max_requests_cap): 13 MiB by default, 125 MiB for a limit of 1000
# requests per window. Docker gives a container 64 MiB of /dev/shm; a table that does not fit is
# refused at start, naming its size. --shm-size=256m covers the default table_slots with limits
# up to 2000 requests per window; size it from the formula for more.
#
# Stopping: SIGTERM drains (in-flight calls finish for --drain-timeout, default 10 s, then clients
# are closed in batches); give it more than Docker's default 10 s: `docker stop -t 30`
# (compose: stop_grace_period: 30s).
#
# tests/test_recipes.py runs this file's RUN and CMD lines in a clean virtualenv: keep each RUN a
# chain of commands joined by &&, and teach that test any new command.

ARG PYTHON_VERSION=3.11

# --- build: compile the Cython extensions into a wheel (and collect the dependencies' wheels) ---
FROM python:${PYTHON_VERSION}-slim AS build
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md LICENSE ./
COPY src ./src
RUN python -m pip wheel --no-cache-dir --wheel-dir /wheels .

# --- run: the wheels only; no compiler, no sources, not root ---
FROM python:${PYTHON_VERSION}-slim AS run
COPY --from=build /wheels /wheels
RUN python -m pip install --no-cache-dir --no-index --find-links /wheels genapi-gateway && rm -rf /wheels && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin genapi && mkdir -p /etc/genapi
USER genapi
EXPOSE 4000
# 4001, the control port where service nodes push, stays on loopback inside the container unless
# [cluster] secret and [gateway] control_host = "0.0.0.0" are set: only then publish it (-p 4001:4001).
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=5s --start-period=15s --retries=3 CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:4000/health', timeout=4).status != 200)"]
CMD ["genapi", "serve", "--config", "/etc/genapi/gateway.toml", "--workers", "auto"]
