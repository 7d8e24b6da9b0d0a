"""A worker's own /metrics (`onlinestudy worker --metrics-port N`), for per-pod scraping."""

from __future__ import annotations

import os

from celery.signals import worker_ready
from prometheus_client import CollectorRegistry, multiprocess, start_http_server


def register() -> None:
    """Serve the pool's summed metrics once the worker is ready, where a port is given."""
    worker_ready.connect(_serve_metrics, weak=False)


def _serve_metrics(**_kwargs) -> None:
    port = os.environ.get("ONLINESTUDY_WORKER_METRICS_PORT")
    if port and os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        start_http_server(int(port), registry=registry)
