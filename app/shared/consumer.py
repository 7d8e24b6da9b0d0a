"""Runs one policy over a batch of events: each applied once, failures counted, DONE recorded."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import structlog

from app.observability import EVENTS
from app.shared.events import Event
from app.shared.idempotency import claim
from app.shared.outbox import record_done, record_failure
from app.shared.uow import correlation_id

if TYPE_CHECKING:
    from app.bootstrap import Container
    from app.policies import Policy

log = structlog.get_logger(__name__)

RETRY_BASE_S = 1.0


def consume(container: Container, policy: Policy, envelopes: Iterable[dict]) -> list[str]:
    """Handle each event of the batch; returns the ids now recorded as done."""
    done: list[str] = []
    for body in envelopes:
        event = Event.from_envelope(body)
        if event.event_type not in policy.events:
            # Misrouted (only the relay's routing stands between): never apply a foreign event.
            log.error("event.misrouted", consumer=policy.consumer, event_type=str(event.event_type))
            continue
        token = correlation_id.set(event.correlation_id)
        try:
            _apply_once(container, policy, event)
            if policy.after_commit is not None:
                policy.after_commit(container, event)
            done.append(event.event_id)
        except Exception as exc:  # noqa: BLE001 - any failure counts towards the dead letter
            _count_failure(container, policy, event, exc)
        finally:
            correlation_id.reset(token)
    if done:
        with container.main_session() as session:
            record_done(session, policy.consumer, done)
            session.commit()
    return done


def _apply_once(container: Container, policy: Policy, event: Event) -> None:
    with getattr(container, policy.unit_of_work)() as uow:
        if not claim(uow.session, policy.bind, policy.consumer, event.event_id):
            log.info("event.duplicate", consumer=policy.consumer, event_id=event.event_id)
            EVENTS.labels(policy.consumer, "duplicate").inc()
            return
        policy.handle(container, uow, event)
        uow.commit()
    EVENTS.labels(policy.consumer, "handled").inc()
    log.info(
        "event.handled",
        consumer=policy.consumer,
        event_type=str(event.event_type),
        event_id=event.event_id,
        order_no=event.order_no,
    )


def _count_failure(container: Container, policy: Policy, event: Event, exc: Exception) -> None:
    error = f"{exc.__class__.__name__}: {exc}"
    with container.main_session() as session:
        parked = record_failure(
            session,
            policy.consumer,
            event.event_id,
            error,
            container.settings.max_attempts,
            RETRY_BASE_S,
        )
        session.commit()
    EVENTS.labels(policy.consumer, "dead" if parked else "failed").inc()
    log.warning(
        "event.failed",
        consumer=policy.consumer,
        event_id=event.event_id,
        event_type=str(event.event_type),
        error=error,
        dead=parked,
    )
