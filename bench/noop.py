"""The Celery no-op baseline: one task that does nothing, on the system's own Celery settings
(`celeryconfig`: broker, serializer, acks_late, prefetch 1, task events...).

    celery -A bench.noop worker -Q bench_noop -c N -O fair ...
"""

from __future__ import annotations

from celery import Celery
from kombu import Queue

QUEUE = "bench_noop"
TASK = "bench.noop"

app = Celery("onlinestudy-bench-noop")
app.config_from_object("celeryconfig")
app.conf.task_queues = [Queue(QUEUE, routing_key=QUEUE)]
app.conf.task_default_queue = QUEUE
app.conf.task_routes = {TASK: {"queue": QUEUE}}


@app.task(name=TASK, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def noop(*_args, **_kwargs) -> None:
    return None


def publish(count: int) -> None:
    """Queue `count` no-op tasks, through one producer (as the relay publishes)."""
    with app.producer_or_acquire() as producer:
        for _ in range(count):
            app.send_task(TASK, queue=QUEUE, producer=producer)


if __name__ == "__main__":  # python -m bench.noop COUNT
    import sys

    publish(int(sys.argv[1]))
