# syntax=docker/dockerfile:1
# onlinestudy image: one image for the API (gunicorn), the relay, the Celery workers, Flower and
# the migration job; docker-compose.yml and deploy/k8s/ choose the command.
#
#   docker build -t onlinestudy .
#   docker run --rm --env-file .env -p 8088:8088 onlinestudy

ARG PYTHON_IMAGE=python:3.11-slim

# --- builder: install the project and its dependencies into a self-contained venv ----------------
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
COPY . .
RUN pip install --no-cache-dir . \
    # Files read from the working directory at run time (Alembic's migrations, the Celery and
    # gunicorn settings) may not be part of the wheel: keep them beside the runtime's WORKDIR.
    && mkdir -p /runtime \
    && for f in alembic.ini celeryconfig.py gunicorn.conf.py migrations; do \
         if [ -e "$f" ]; then cp -r "$f" /runtime/; fi; \
       done \
    && find /opt/venv /runtime -name '__pycache__' -prune -exec rm -rf {} +

# --- runtime: the venv, a signal-forwarding init and an unprivileged user -------------------------
FROM ${PYTHON_IMAGE} AS runtime

# tini as PID 1 forwards SIGTERM to the process (gunicorn, celery worker, relay) so that it shuts
# down gracefully, and reaps zombies. Kubernetes manifests set only `args`, keeping this entrypoint.
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 onlinestudy \
    && useradd --system --uid 10001 --gid onlinestudy --home-dir /app --no-create-home \
         --shell /usr/sbin/nologin onlinestudy \
    # Writable state (ONLINESTUDY_VAR_DIR); Kubernetes mounts an emptyDir here.
    && install -d -o 10001 -g 10001 /app /app/var

COPY --from=builder /opt/venv /opt/venv
COPY --from=builder --chown=10001:10001 /runtime /app

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    ONLINESTUDY_VAR_DIR=/app/var \
    PROMETHEUS_MULTIPROC_DIR=/app/var/metrics \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /app
USER 10001:10001
EXPOSE 8088
# SIGTERM is a warm shutdown for Celery (finish running tasks) and a graceful one for gunicorn.
STOPSIGNAL SIGTERM

ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["gunicorn", "--bind", "0.0.0.0:8088", "--workers", "2", "--access-logfile", "-", "app:create_app()"]
