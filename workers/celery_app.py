"""The workers' Celery app, the `-A` target: `celery -A workers.celery_app worker -Q learning`.

The worker process's composition root: it builds the container once and registers every task
on the container's Celery app, each task closing over that container.
"""

from __future__ import annotations

import time

from celery.signals import (
    setup_logging,
    task_failure,
    task_postrun,
    task_prerun,
    task_retry,
    worker_init,
    worker_process_init,
    worker_process_shutdown,
)

from app.bootstrap import bootstrap
from app.logging import configure_logging
from app.observability import record_task
from app.process import freeze_startup_heap
from app.tracing import install as install_tracing
from app.tracing import shutdown as shutdown_tracing
from workers import consumers, heartbeat, metrics, score_chain

container = bootstrap()
app = container.celery
consumers.register(app, container)
score_chain.register(app, container)
heartbeat.register(app, container.settings)
metrics.register(container.settings)


@worker_init.connect
def _load_database_drivers(**_kwargs) -> None:
    # In the main process, before the pool forks: creating the engines (no connection yet)
    # imports the database driver once for every child. Otherwise each new child imported it
    # in its first task, and that task (a final score, perhaps) waited for the import.
    db = container.db
    for bind in ("main", "notification"):
        db.engine(bind)
    freeze_startup_heap()  # before the fork: the children inherit it frozen


@worker_process_init.connect
def _fresh_connections(**_kwargs) -> None:
    # Pooled connections opened before the fork belong to the parent.
    container.db.dispose()
    # In each pool process, after the fork: the exporter's thread would not survive it. The
    # engines are made again after this, traced.
    install_tracing("worker", container.settings)
    freeze_startup_heap()


@worker_process_shutdown.connect
def _flush_traces(**_kwargs) -> None:
    # A pool process leaves without running atexit: send the spans it still holds.
    shutdown_tracing()


@setup_logging.connect
def _json_logs(**_kwargs) -> None:
    # Connecting here keeps Celery from configuring the root logger its own way.
    configure_logging(container.settings.log_level)


_started: dict[str, float] = {}


@task_prerun.connect
def _task_started(task_id=None, **_kwargs) -> None:
    _started[task_id] = time.perf_counter()


@task_postrun.connect
def _task_finished(task_id=None, task=None, state=None, **_kwargs) -> None:
    began = _started.pop(task_id, None)
    record_task(
        task.name,
        _queue_of(task),
        (state or "UNKNOWN").lower(),
        time.perf_counter() - began if began else None,
    )


@task_retry.connect
def _task_retried(sender=None, **_kwargs) -> None:
    record_task(sender.name, _queue_of(sender), "retry", None)


@task_failure.connect
def _task_failed(sender=None, **_kwargs) -> None:
    record_task(sender.name, _queue_of(sender), "failure_raised", None)


def _queue_of(task) -> str:
    info = getattr(task.request, "delivery_info", None) or {}
    return info.get("routing_key") or getattr(task, "queue", None) or "unknown"
