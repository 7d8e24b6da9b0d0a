"""The Celery app, the `-A` target: `celery -A workers.celery_app worker -Q learning`."""

from __future__ import annotations

from pathlib import Path

from celery import Celery
from celery.signals import worker_process_init

from app.bootstrap import container


def create_celery() -> Celery:
    celery = Celery("onlinestudy", include=["workers.consumers", "workers.score_chain"])
    celery.config_from_object("celeryconfig")
    options = celery.conf.broker_transport_options or {}
    for key in ("data_folder_in", "data_folder_out", "control_folder"):
        if key in options:
            Path(options[key]).mkdir(parents=True, exist_ok=True)
    return celery


app = create_celery()


@worker_process_init.connect
def _fresh_connections(**_kwargs) -> None:
    # Pooled connections opened before the fork belong to the parent.
    container().db.dispose()
