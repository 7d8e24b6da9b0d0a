"""gunicorn's settings file, read from the working directory (as Celery reads celeryconfig.py).
The command line keeps the bind address and the number of workers; this file adds the hooks."""

from app.process import freeze_startup_heap


def post_worker_init(worker) -> None:
    # The app is loaded: its start-up heap stays out of the collector's full passes.
    freeze_startup_heap()
