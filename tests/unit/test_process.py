"""What a long-running process does once it has started: its start-up heap leaves the garbage
collector's full passes, which paused a gunicorn worker or a Celery child in mid-request."""

from __future__ import annotations

import gc
import sys
import weakref
from pathlib import Path

import pytest
from gunicorn.app.base import Application
from gunicorn.config import Config, get_default_config_file

from app.process import freeze_startup_heap

pytestmark = pytest.mark.speed

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def unfrozen():
    yield
    gc.unfreeze()  # the test process keeps collecting its own garbage


def test_freezing_collects_the_garbage_first(unfrozen):
    class Cycle:
        pass

    garbage = Cycle()
    garbage.self = garbage  # only a collection frees a cycle
    gone = weakref.ref(garbage)
    del garbage

    freeze_startup_heap()

    assert gc.get_freeze_count() > 0
    assert gone() is None  # not kept for ever


def test_gunicorn_started_in_the_project_directory_freezes_each_worker(monkeypatch, unfrozen):
    monkeypatch.chdir(REPO)  # where `make run` and the image (WORKDIR /app) start gunicorn
    monkeypatch.setitem(sys.modules, "__config__", None)  # gunicorn loads the file under this
    settings = Application.get_config_from_filename(None, get_default_config_file())
    config = Config()
    config.set("post_worker_init", settings["post_worker_init"])

    config.post_worker_init(None)

    assert gc.get_freeze_count() > 0
