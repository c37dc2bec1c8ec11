# The driftline image (docker-compose.yml builds it for the worker, the producer and the labeller).
#
# Two stages. "builder" makes wheels: first the dependencies', from pyproject.toml alone (that
# layer is rebuilt only when pyproject.toml changes), then driftline's own from the sources.
# "runtime" installs them into a slim image, dependencies first (cached while only driftline's
# code changes), without build tools or pip caches, and runs as an unprivileged user. Parquet
# files need the optional extra: build with --build-arg EXTRAS=parquet.

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS builder
ARG EXTRAS=""
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml ./
# requirements.txt: [project] dependencies plus those of the EXTRAS (comma-separated)
RUN python -c "import sys, tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
extras = [e for e in sys.argv[1].split(',') if e]; \
deps = p['dependencies'] + [d for e in extras for d in p['optional-dependencies'][e]]; \
open('requirements.txt', 'w').write(''.join(d + chr(10) for d in deps))" "${EXTRAS}" \
 && pip wheel --wheel-dir /wheels/deps -r requirements.txt \
 && cp requirements.txt /wheels/deps/requirements.txt
COPY README.md LICENSE ./
COPY schemas ./schemas
COPY driftline ./driftline
COPY streams ./streams
COPY agents ./agents
RUN pip wheel --no-deps --wheel-dir /wheels/app .

FROM ${PYTHON_IMAGE} AS runtime
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 DRIFTLINE_HEALTH_URL=http://127.0.0.1:6066/healthz
RUN groupadd --system --gid 10001 driftline \
 && useradd --system --uid 10001 --gid driftline --create-home --home-dir /home/driftline \
    --shell /usr/sbin/nologin driftline
# dependencies first: this layer stays cached while only driftline's code changes
COPY --from=builder /wheels/deps /tmp/wheels/deps
RUN pip install --no-index --find-links /tmp/wheels/deps -r /tmp/wheels/deps/requirements.txt \
 && rm -rf /tmp/wheels/deps
COPY --from=builder /wheels/app /tmp/wheels/app
RUN pip install --no-index --no-deps /tmp/wheels/app/*.whl && rm -rf /tmp/wheels
COPY deploy/pipeline.toml /etc/driftline/pipeline.toml
USER driftline
WORKDIR /home/driftline
EXPOSE 6066
# /healthz answers 200 only while the worker's loop runs with partitions and keeps up (503 and
# the reason otherwise); a refused connection fails too. A worker on another web port: set
# DRIFTLINE_HEALTH_URL. Other commands (produce-synthetic, label-synthetic) serve no /healthz:
# docker-compose.yml turns the check off for them.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ['DRIFTLINE_HEALTH_URL'], timeout=4)"]
ENTRYPOINT ["driftline"]
CMD ["worker", "-c", "/etc/driftline/pipeline.toml", "--web-host", "0.0.0.0"]
