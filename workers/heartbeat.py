"""Worker liveness that proves consumption: the worker sends itself a canary task on its own
direct queue and the canary, once consumed, touches a heartbeat file. A worker whose consumer
has stalled (say, after a broker reconnect) stops touching it; `onlinestudy health worker`
then fails and the orchestrator restarts the worker. `celery inspect ping` would still answer.
"""

from __future__ import annotations

import contextlib
import threading

from celery import Celery
from celery.signals import worker_ready, worker_shutdown, worker_shutting_down
from celery.utils.nodenames import worker_direct

from app.config import Settings


def register(celery: Celery, settings: Settings) -> None:
    """The canary task, and its loop started when the worker is ready."""
    stop = threading.Event()

    @celery.task(name="health.canary", ignore_result=True, acks_late=False, expires=60)
    def canary(hostname: str) -> None:
        path = settings.heartbeats_dir / f"worker-{hostname}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()

    @worker_ready.connect(weak=False)
    def _start_canaries(sender=None, **_kwargs) -> None:
        hostname = sender.hostname
        queue = worker_direct(hostname)

        def loop():
            while not stop.is_set():
                # A canary that cannot be sent shows as a stale heartbeat: nothing else to do.
                with contextlib.suppress(Exception):
                    celery.send_task("health.canary", args=[hostname], queue=queue)
                stop.wait(settings.worker_heartbeat_s)

        threading.Thread(target=loop, name="canary", daemon=True).start()

    @worker_shutdown.connect(weak=False)
    def _stop_canaries(**_kwargs) -> None:
        stop.set()

    @worker_shutting_down.connect(weak=False)
    def _not_ready_once_stopping(sender=None, **_kwargs) -> None:
        # A warm shutdown (SIGTERM) takes no new task: the health check fails from its start,
        # not a heartbeat period later, and a restarted worker is healthy only once it consumes.
        stop.set()
        with contextlib.suppress(OSError):
            (settings.heartbeats_dir / f"worker-{sender}").unlink()
