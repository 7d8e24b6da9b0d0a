"""What a long-running process (a gunicorn worker, a Celery worker, the relay) does once it has
started, before it serves."""

from __future__ import annotations

import ctypes
import gc
import multiprocessing


def freeze_startup_heap() -> None:
    """Keep the garbage collector's full passes off what start-up built.

    The imports and the app leave a great many objects that live as long as the process. A full
    collection walked all of them, pausing the process in the middle of its work for longer than
    a final score takes. Frozen, they are never walked again; later collections see only what
    came after. Garbage is collected first, so none of it is kept for ever.
    """
    gc.collect()
    gc.freeze()


# Set by the gunicorn master when SIGTERM comes (gunicorn.conf.py) and read by its workers'
# readiness view: shared memory made before the workers are forked, so they all see it.
_shutting_down = multiprocessing.RawValue(ctypes.c_bool, False)


def begin_shutdown() -> None:
    """From now on this server is not ready: a load balancer sends it nothing new."""
    _shutting_down.value = True


def shutting_down() -> bool:
    return bool(_shutting_down.value)
