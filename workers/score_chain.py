"""The two steps of the synchronous final score (SPEC 6), on the orders and evaluation queues.

Both are idempotent by state (the same score again changes nothing), so they may run twice.
A step that finds the caller's deadline passed does nothing: the chain never runs later.
"""

from __future__ import annotations

import time

from celery import Celery
from sqlalchemy.exc import OperationalError

from app.container import Container
from app.evaluation import handlers as evaluation
from app.orders import handlers as orders

# Transient database errors are retried quickly, inside the caller's guard.
RETRY = {
    "autoretry_for": (OperationalError,),
    "retry_backoff": 0.05,
    "retry_backoff_max": 0.5,
    "retry_jitter": True,
    "max_retries": 5,
}


def register(celery: Celery, container: Container) -> None:
    """The chain's two steps, registered on `celery`."""

    # Its result is not kept, but its failure is: Celery then stores it on the finalize step
    # too, where the caller waits, so a step that failed for good answers at once instead of
    # at the guard.
    @celery.task(
        name="orders.register_score",
        acks_late=True,
        reject_on_worker_lost=True,
        store_errors_even_if_ignored=True,
        **RETRY,
    )
    def register_score(order_no: str, evaluation_id: int, score: int, deadline: float) -> dict:
        if time.time() > deadline:
            return {"outcome": evaluation.ScoreOutcome.EXPIRED}
        return {
            "outcome": orders.register_score(container.orders_uow(), order_no, score),
            "evaluation_id": evaluation_id,
            "score": score,
        }

    @celery.task(
        name="evaluation.finalize",
        acks_late=True,
        reject_on_worker_lost=True,
        ignore_result=False,
        **RETRY,
    )
    def finalize(previous: dict) -> dict:
        # No deadline here: once the order holds the score, the evaluation must follow it.
        if previous["outcome"] != evaluation.ScoreOutcome.COMPLETED:
            return previous
        outcome = evaluation.finalize_evaluation(
            container.evaluation_uow(), previous["evaluation_id"], previous["score"]
        )
        return {**previous, "outcome": outcome}
