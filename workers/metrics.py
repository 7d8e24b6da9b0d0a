"""A worker's own /metrics (`onlinestudy worker --metrics-port N`), for per-pod scraping."""

from __future__ import annotations

import os

from celery.signals import worker_ready
from prometheus_client import CollectorRegistry, multiprocess, start_http_server

from app.config import Settings
from app.observability import HeartbeatCollector


def register(settings: Settings) -> None:
    """Serve the pool's summed metrics and this worker's heartbeat age once the worker is
    ready, where a port is given."""

    def serve(**_kwargs) -> None:
        port = os.environ.get("ONLINESTUDY_WORKER_METRICS_PORT")
        if port and os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            registry.register(HeartbeatCollector(settings.heartbeat_files))
            start_http_server(int(port), registry=registry)

    worker_ready.connect(serve, weak=False)
