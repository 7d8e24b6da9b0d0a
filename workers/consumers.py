"""One thin Celery task per policy of app.policies: events in, consume(), done."""

from __future__ import annotations

import structlog
from celery import Task

from app.bootstrap import container
from app.policies import POLICIES, Policy
from app.shared.consumer import consume
from app.shared.outbox import announce_task_done
from workers.celery_app import app

log = structlog.get_logger(__name__)


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
            return len(consume(c, policy, events))
        finally:
            announce_done(c, policy.consumer)

    return handle


def announce_done(c, consumer: str) -> None:
    """Free the relay's slot for this consumer; if this fails the slot expires by itself."""
    try:
        with c.main_session(autocommit=True) as session:  # a NOTIFY alone: no BEGIN, no COMMIT
            announce_task_done(session, consumer)
    except Exception as exc:  # noqa: BLE001 - never fail a task that did its work
        log.warning("relay.announce_failed", consumer=consumer, error=str(exc))


TASKS = {policy.consumer: _register(policy) for policy in POLICIES}
