"""gunicorn's settings file, read from the working directory (as Celery reads celeryconfig.py).
The command line keeps the bind address and the number of workers; this file adds the hooks
and the graceful stop."""

import os
import signal
import threading

from app.config import Settings
from app.process import begin_shutdown, freeze_startup_heap, shutting_down

_settings = Settings.from_env()

# A worker told to stop finishes its request first. The longest one is a final score, which
# waits up to SCORE_SYNC_TIMEOUT_S; room for one more queued behind it, and a margin.
graceful_timeout = int(2 * _settings.score_sync_timeout_s) + 10

# The access log, where `--access-logfile -` turns it on (every command in the README and the
# manifests): with the request id, so `grep <id>` finds the request beside the tasks it caused.
access_log_format = '%(h)s %(t)s "%(r)s" %(s)s %(b)s %(M)sms request_id=%({x-request-id}o)s'
# The access and error logs mask phone numbers (GET /sms?phone=..., GET /mypage/<phone>).
logger_class = "app.logging.MaskingGunicornLogger"


def when_ready(server) -> None:
    """SIGTERM begins a drain: readiness answers 503 at once, so the load balancer (a
    Kubernetes Service, whose endpoints follow readiness) stops sending new requests, while
    the server goes on serving what is in flight or already routed for SHUTDOWN_DRAIN_S.
    Then the usual graceful stop. A second SIGTERM, or SIGINT/SIGQUIT, stops at once."""
    stop = server.handle_term

    def handle_term() -> None:
        if shutting_down() or _settings.shutdown_drain_s <= 0:
            stop()
            return
        begin_shutdown()
        server.log.info("SIGTERM: not ready, draining for %.1fs", _settings.shutdown_drain_s)
        timer = threading.Timer(_settings.shutdown_drain_s, os.kill, (os.getpid(), signal.SIGTERM))
        timer.daemon = True
        timer.start()

    server.handle_term = handle_term


def post_worker_init(worker) -> None:
    # The app is loaded: its start-up heap stays out of the collector's full passes.
    freeze_startup_heap()
