"""The Celery app: configured from celeryconfig, with no task of its own. Workers register
theirs on it (workers/celery_app.py); the API and the relay send tasks by name."""

from __future__ import annotations

from pathlib import Path

from celery import Celery


def create_celery() -> Celery:
    celery = Celery("onlinestudy")
    celery.config_from_object("celeryconfig")
    options = celery.conf.broker_transport_options or {}
    for key in ("data_folder_in", "data_folder_out", "control_folder"):
        if key in options:
            Path(options[key]).mkdir(parents=True, exist_ok=True)
    return celery
