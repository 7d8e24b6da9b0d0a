"""One thin Celery task per policy of app.policies: events in, consume(), done."""

from __future__ import annotations

from celery import Task

from app.bootstrap import container
from app.policies import POLICIES, Policy
from app.shared.consumer import announce_done, consume
from workers.celery_app import app


def _register(policy: Policy) -> Task:
    @app.task(
        name=policy.consumer,
        queue=policy.queue.value,
        acks_late=True,
        reject_on_worker_lost=True,
        ignore_result=True,
    )
    def handle(events: list[dict]) -> int:
        c = container()
        try:
            return len(consume(c, policy, events, announce_end=True))
        except BaseException:
            announce_done(c, policy.consumer)  # else the relay's slot waits to expire
            raise

    return handle


TASKS = {policy.consumer: _register(policy) for policy in POLICIES}
