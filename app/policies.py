"""Who handles which event: the whole event flow of SPEC section 4 in one table.

Each policy is one consumer: a Celery task of that name on its context's queue, with its own
delivery row per event and its own processed-messages record.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

from app.evaluation import handlers as evaluation
from app.learning import handlers as learning
from app.mypage import projection as mypage
from app.notification import handlers as notification
from app.shared.events import Event, EventType
from app.shared.queues import Queue

if TYPE_CHECKING:
    from app.bootstrap import Container

E = EventType


@dataclass(frozen=True)
class Policy:
    consumer: str  # task name, delivery and idempotency key
    queue: Queue
    events: tuple[EventType, ...]
    bind: str  # the database its effects and records live in
    unit_of_work: str  # Container method that opens the context's unit of work
    handle: Callable[[Container, object, Event], None]
    # Work outside the database after the commit (an SMS send). It runs on every copy of the
    # event, so it must itself be idempotent.
    after_commit: Callable[[Container, Event], None] | None = None


def _in(uow_name: str, handler) -> dict:
    """A policy whose handler needs only its unit of work and the event."""
    return {
        "bind": "main",
        "unit_of_work": uow_name,
        "handle": lambda c, uow, event: handler(uow, event),
    }


POLICIES: tuple[Policy, ...] = (
    # learning
    Policy(
        "learning.open_learning",
        Queue.LEARNING,
        (E.COURSE_ORDERED,),
        **_in("learning_uow", learning.open_learning),
    ),
    Policy(
        "learning.cancel_learning",
        Queue.LEARNING,
        (E.COURSE_ORDER_CANCELLED,),
        **_in("learning_uow", learning.cancel_learning),
    ),
    Policy(
        "learning.complete_learning",
        Queue.LEARNING,
        (E.FINAL_EVALUATION_REGISTERED,),
        **_in("learning_uow", learning.complete_learning),
    ),
    Policy(
        "learning.start_waiting_learnings",
        Queue.LEARNING,
        (E.MANAGER_REGISTERED,),
        **_in("learning_uow", learning.start_waiting_learnings),
    ),
    # evaluation
    Policy(
        "evaluation.open_evaluation",
        Queue.EVALUATION,
        (E.LEARNING_STARTED,),
        **_in("evaluation_uow", evaluation.open_evaluation),
    ),
    Policy(
        "evaluation.cancel_evaluation",
        Queue.EVALUATION,
        (E.LEARNING_CANCELLED,),
        **_in("evaluation_uow", evaluation.cancel_evaluation),
    ),
    Policy(
        "evaluation.finalize_on_order_completed",
        Queue.EVALUATION,
        (E.ORDER_COMPLETED,),
        **_in("evaluation_uow", evaluation.finalize_on_order_completed),
    ),
    # notification: the row in the transaction, the send after the commit
    Policy(
        "notification.send_sms",
        Queue.NOTIFICATION,
        (
            E.COURSE_ORDERED,
            E.COURSE_ORDER_CANCELLED,
            E.LEARNING_STARTED,
            E.LEARNING_CANCELLED,
            E.FINAL_EVALUATION_REGISTERED,
        ),
        bind="notification",
        unit_of_work="notification_uow",
        handle=lambda c, uow, event: notification.record_sms(uow, event, c.sms_sender.name),
        after_commit=lambda c, event: notification.send_pending_sms(
            c.notification_uow(), event, c.sms_sender, c.settings.max_attempts
        ),
    ),
    # mypage
    Policy(
        "mypage.project",
        Queue.MYPAGE,
        (
            E.COURSE_ORDERED,
            E.COURSE_ORDER_CANCELLED,
            E.LEARNING_STARTED,
            E.LEARNING_CANCELLED,
            E.EVALUATION_RECORDED,
            E.ORDER_COMPLETED,
            E.FINAL_EVALUATION_REGISTERED,
        ),
        **_in("main_uow", mypage.project),
    ),
)

BY_CONSUMER: dict[str, Policy] = {policy.consumer: policy for policy in POLICIES}


@cache
def subscribers(event_type: EventType) -> tuple[str, ...]:
    """The consumers an event is delivered to (its delivery rows)."""
    return tuple(p.consumer for p in POLICIES if event_type in p.events)
