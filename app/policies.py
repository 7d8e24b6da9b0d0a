"""Who handles which event: the whole event flow of SPEC section 4 in one table.

Each policy is one consumer: a Celery task of that name on its context's queue, with its own
delivery row per event and its own processed-messages record.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any, Generic, TypeVar

from app.container import Container
from app.evaluation import handlers as evaluation
from app.learning import handlers as learning
from app.mypage import projection as mypage
from app.notification import handlers as notification
from app.shared.events import Event, EventType
from app.shared.queues import Queue
from app.shared.uow import UnitOfWork, each_correlated

E = EventType
U = TypeVar("U", bound=UnitOfWork)


@dataclass(frozen=True)
class Policy(Generic[U]):
    consumer: str  # task name, delivery and idempotency key
    queue: Queue
    events: tuple[EventType, ...]
    # Opens the context's unit of work; its effects and processed records go to that database.
    unit_of_work: Callable[[Container], U]
    # Applies a batch of new events (never seen by this consumer) in that unit of work.
    handle: Callable[[U, list[Event]], None]
    # Work outside the database after the commit (an SMS send), for the whole batch, in a unit
    # of work of its own; returns the events to deliver again, with the reason. It runs on
    # every copy of an event, so it must itself be idempotent.
    after_commit: Callable[[U, list[Event]], dict[str, str]] | None = None
    bind: str = "main"  # the database of the unit of work
    # Events whose copy for this consumer is first due SCORE_SYNC_TIMEOUT_S after the commit:
    # on the normal path the synchronous score chain's next step brings the same news sooner
    # (or is the same work), so the copy only confirms, later and in a larger batch.
    behind_score_chain: tuple[EventType, ...] = ()
    # At most one task per this many seconds, so that batches grow: long for consumers off the
    # way from an order to a current My page (the CPU goes first to those a student waits
    # for), short on it.
    gather_s: float = 0.0


def one_by_one(handler: Callable[[U, Event], None]) -> Callable[[U, list[Event]], None]:
    """A batch handler from one that takes an event at a time (rare events need no more)."""

    def handle(uow: U, events: list[Event]) -> None:
        for event in each_correlated(uow, events):
            handler(uow, event)

    return handle


# Each policy has its own unit of work type: the table holds them all.
POLICIES: tuple[Policy[Any], ...] = (
    # learning
    Policy(
        "learning.open_learning",
        Queue.LEARNING,
        (E.COURSE_ORDERED,),
        unit_of_work=Container.learning_uow,
        handle=learning.open_learnings,
        # On the student's way too, yet gathering for a moment here makes fewer, larger batches,
        # which bring My page up to date sooner under load, not later.
        gather_s=0.03,
    ),
    Policy(
        "learning.cancel_learning",
        Queue.LEARNING,
        (E.COURSE_ORDER_CANCELLED,),
        unit_of_work=Container.learning_uow,
        handle=one_by_one(learning.cancel_learning),
    ),
    Policy(
        "learning.complete_learning",
        Queue.LEARNING,
        (E.FINAL_EVALUATION_REGISTERED,),
        unit_of_work=Container.learning_uow,
        handle=learning.complete_learnings,
        gather_s=0.2,
    ),
    Policy(
        "learning.start_waiting_learnings",
        Queue.LEARNING,
        (E.MANAGER_REGISTERED,),
        unit_of_work=Container.learning_uow,
        handle=one_by_one(learning.start_waiting_learnings),
    ),
    # evaluation
    Policy(
        "evaluation.open_evaluation",
        Queue.EVALUATION,
        (E.LEARNING_STARTED,),
        unit_of_work=Container.evaluation_uow,
        handle=evaluation.open_evaluations,
        gather_s=0.2,
    ),
    Policy(
        "evaluation.cancel_evaluation",
        Queue.EVALUATION,
        (E.LEARNING_CANCELLED,),
        unit_of_work=Container.evaluation_uow,
        handle=one_by_one(evaluation.cancel_evaluation),
    ),
    Policy(
        "evaluation.finalize_on_order_completed",
        Queue.EVALUATION,
        (E.ORDER_COMPLETED,),
        unit_of_work=Container.evaluation_uow,
        handle=evaluation.finalize_on_order_completed,
        behind_score_chain=(E.ORDER_COMPLETED,),  # a safety net: the chain's step 2 does it
    ),
    # notification: the row in the transaction, the send after the commit
    Policy(
        "notification.send_sms",
        Queue.NOTIFICATION,
        (
            E.COURSE_ORDERED,
            E.SEAT_CONFIRMED,
            E.COURSE_ORDER_CANCELLED,
            E.LEARNING_STARTED,
            E.LEARNING_CANCELLED,
            E.FINAL_EVALUATION_REGISTERED,
        ),
        unit_of_work=Container.notification_uow,
        handle=notification.record_sms,
        after_commit=notification.send_pending_sms,
        bind="notification",
        gather_s=0.2,
    ),
    # mypage
    Policy(
        "mypage.project",
        Queue.MYPAGE,
        (
            E.COURSE_ORDERED,
            E.ORDER_WAITLISTED,
            E.COURSE_ORDER_CANCELLED,
            E.LEARNING_STARTED,
            E.LEARNING_CANCELLED,
            E.EVALUATION_RECORDED,
            E.ORDER_COMPLETED,
            E.FINAL_EVALUATION_REGISTERED,
        ),
        unit_of_work=Container.main_uow,
        handle=mypage.project,
        # FinalEvaluationRegistered, a moment after it, shows the order COMPLETED too.
        behind_score_chain=(E.ORDER_COMPLETED,),
        # Even on the student's way, a moment: fewer tasks leave the machine less busy, so
        # under load My page is current sooner, not later.
        gather_s=0.03,
    ),
)

BY_CONSUMER: dict[str, Policy[Any]] = {policy.consumer: policy for policy in POLICIES}


@cache
def subscribers(event_type: EventType) -> tuple[str, ...]:
    """The consumers an event is delivered to (its delivery rows)."""
    return tuple(p.consumer for p in POLICIES if event_type in p.events)


def deferred_deliveries(delay_s: float) -> dict[tuple[str, EventType], float]:
    """(consumer, event type) whose copy is first due `delay_s` after the commit: those
    behind the score chain."""
    return {(p.consumer, t): delay_s for p in POLICIES for t in p.behind_score_chain}
