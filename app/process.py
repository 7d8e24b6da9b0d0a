"""What a long-running process (a gunicorn worker, a Celery worker, the relay) does once it has
started, before it serves."""

from __future__ import annotations

import gc


def freeze_startup_heap() -> None:
    """Keep the garbage collector's full passes off what start-up built.

    The imports and the app leave a great many objects that live as long as the process. A full
    collection walked all of them, pausing the process in the middle of its work for longer than
    a final score takes. Frozen, they are never walked again; later collections see only what
    came after. Garbage is collected first, so none of it is kept for ever.
    """
    gc.collect()
    gc.freeze()
