"""One thin Celery task per policy of app.policies: events in, consume(), done."""

from __future__ import annotations

from celery import Celery, Task

from app.consumer import announce_done, consume
from app.container import Container
from app.policies import POLICIES, Policy


def register(celery: Celery, container: Container) -> dict[str, Task]:
    """The consumer tasks, by name, registered on `celery`."""
    return {policy.consumer: _task(celery, container, policy) for policy in POLICIES}


def _task(celery: Celery, container: Container, policy: Policy) -> Task:
    # Its queue is the prefix of its name (celeryconfig.task_routes; Celery 6 drops a task's
    # own `queue`), and the relay names it on every publish.
    @celery.task(
        name=policy.consumer,
        acks_late=True,
        reject_on_worker_lost=True,
        ignore_result=True,
    )
    def handle(events: list[dict]) -> int:
        try:
            return len(consume(container, policy, events, announce_end=True))
        except BaseException:
            announce_done(container, policy.consumer)  # else the relay's slot waits to expire
            raise

    return handle
