"""The Celery app, the `-A` target: `celery -A workers.celery_app worker -Q learning`."""

from __future__ import annotations

import time
from pathlib import Path

from celery import Celery
from celery.signals import (
    setup_logging,
    task_failure,
    task_postrun,
    task_prerun,
    task_retry,
    worker_init,
    worker_process_init,
)

from app.bootstrap import container
from app.logging import configure_logging
from app.observability import record_task
from app.process import freeze_startup_heap


def create_celery() -> Celery:
    celery = Celery(
        "onlinestudy",
        include=[
            "workers.consumers",
            "workers.score_chain",
            "workers.heartbeat",
            "workers.metrics",
        ],
    )
    celery.config_from_object("celeryconfig")
    options = celery.conf.broker_transport_options or {}
    for key in ("data_folder_in", "data_folder_out", "control_folder"):
        if key in options:
            Path(options[key]).mkdir(parents=True, exist_ok=True)
    return celery


app = create_celery()


@worker_init.connect
def _load_database_drivers(**_kwargs) -> None:
    # In the main process, before the pool forks: creating the engines (no connection yet)
    # imports the database driver once for every child. Otherwise each new child imported it
    # in its first task, and that task (a final score, perhaps) waited for the import.
    db = container().db
    for bind in ("main", "notification"):
        db.engine(bind)
    freeze_startup_heap()  # before the fork: the children inherit it frozen


@worker_process_init.connect
def _fresh_connections(**_kwargs) -> None:
    # Pooled connections opened before the fork belong to the parent.
    container().db.dispose()
    freeze_startup_heap()


@setup_logging.connect
def _json_logs(**_kwargs) -> None:
    # Connecting here keeps Celery from configuring the root logger its own way.
    configure_logging(container().settings.log_level)


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
