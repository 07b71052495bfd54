# The API image: docker build -t stores-api .   (see docs/deploying.md)

# --- build: wheels for every pinned dependency, compiled here if PyPI has none for
# this platform; the compilers stay in this stage.
FROM python:3.11-slim-bookworm AS build

# The base image's tag pins the distribution; Debian's point releases only fix bugs.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*

# The package index to use, if not PyPI's (a mirror): `--build-arg PIP_INDEX_URL=...`.
ARG PIP_INDEX_URL

# requirements.txt alone first: this layer is rebuilt only when it changes.
# The virtualenv gets no pip or setuptools of its own (25 MB the service never runs):
# the base image's pip installs into it (--python).
COPY requirements.txt /tmp/requirements.txt
RUN pip wheel --no-cache-dir --wheel-dir /wheels -r /tmp/requirements.txt \
    && python -m venv --without-pip /opt/venv \
    && pip --python /opt/venv/bin/python install --no-cache-dir --no-index \
        --find-links /wheels -r /tmp/requirements.txt

# --- runtime: the interpreter, the virtualenv and the code; no compilers.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH \
    APP_ENV=production \
    FLASK_APP=app \
    PORT=8000

RUN groupadd --gid 10001 app \
    && useradd --uid 10001 --gid app --no-create-home --shell /usr/sbin/nologin app

COPY --from=build /opt/venv /opt/venv
WORKDIR /app
# Owned by root and read-only to the app user: the process cannot rewrite its code.
COPY . .
# The app's folder of files (INSTANCE_PATH), the only one it may write: without
# REDIS_URL the Celery broker is a folder there (core/jobs/worker.py), which only a
# worker in the same container reads. Set REDIS_URL in production.
RUN mkdir -p /var/lib/stores && chown 10001:10001 /var/lib/stores
ENV INSTANCE_PATH=/var/lib/stores

# A numeric user, so an orchestrator can verify "not root" without reading /etc/passwd.
USER 10001:10001

EXPOSE 8000
# /health does not touch the database: a database outage is not a reason to restart
# every replica (/ready is for load balancers). python, because slim has no curl.
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PORT', '8000'), timeout=2)"]

ENTRYPOINT ["/app/docker-entrypoint.sh"]
