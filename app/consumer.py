"""Runs one policy over a batch of events: each applied once, failures counted, DONE recorded.

The batch is applied in one transaction: the processed-messages records in one statement, the
policy's effects, and (when they share the database) the DONE marks. If anything in it fails,
it is rolled back and the events are applied one at a time, so that only the bad event has its
failure counted and the others go through.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any, TypeVar

import structlog

from app.config import describe_duration
from app.container import Container
from app.observability import EVENTS
from app.policies import Policy
from app.shared.db.base import utcnow
from app.shared.events import Event
from app.shared.idempotency import claim_all
from app.shared.outbox.acks import announce_task_done, park, record_done, record_failure
from app.shared.tracing import consuming
from app.shared.uow import UnitOfWork, correlation_id

log = structlog.get_logger(__name__)

RETRY_BASE_S = 1.0

U = TypeVar("U", bound=UnitOfWork)


def consume(
    container: Container,
    policy: Policy[U],
    envelopes: Iterable[dict[str, Any]],
    announce_end: bool = False,
) -> list[str]:
    """Handle each event of the batch; returns the ids now recorded as done. With
    `announce_end` (a worker's task), tell the relay the task is over: in the batch's last
    transaction when it has one on the main database, else by a NOTIFY of its own."""
    envelopes = list(envelopes)
    with consuming(policy.consumer, envelopes):
        return _consume(container, policy, envelopes, announce_end)


def _consume(
    container: Container, policy: Policy[U], envelopes: list[dict[str, Any]], announce_end: bool
) -> list[str]:
    events = _routed(policy, envelopes)
    expired = _expired(container, events)
    if expired:
        _park_expired(container, policy, expired)
        gone = {event.event_id for event in expired}
        events = [event for event in events if event.event_id not in gone]
    announced = False
    if not events:
        if announce_end:
            announce_done(container, policy.consumer)
        return []
    try:
        _apply(container, policy, events, announce_end)
        announced = announce_end and _done_with_effects(policy)
        applied = events
    except Exception as exc:  # noqa: BLE001 - find the bad event by applying them one by one
        log.info(
            "batch.split",
            consumer=policy.consumer,
            events=len(events),
            error=f"{exc.__class__.__name__}: {exc}",
        )
        applied = [event for event in events if _apply_alone(container, policy, event)]
    if policy.after_commit is not None and applied:
        applied = _after_commit(container, policy, policy.after_commit, applied)
    done = [event.event_id for event in applied]
    if done and not _done_with_effects(policy):
        with container.main_session() as session:
            record_done(session, policy.consumer, done)
            if announce_end:
                announce_task_done(session, policy.consumer)
            session.commit()
        announced = announce_end
    if announce_end and not announced:
        announce_done(container, policy.consumer)
    return done


def announce_done(container: Container, consumer: str) -> None:
    """Free the relay's slot for this consumer by a NOTIFY of its own; if this fails the slot
    expires by itself."""
    try:
        with container.main_session(autocommit=True) as session:  # no BEGIN, no COMMIT
            announce_task_done(session, consumer)
    except Exception as exc:  # noqa: BLE001 - never fail a task that did its work
        log.warning("relay.announce_failed", consumer=consumer, error=str(exc))


def _done_with_effects(policy: Policy[U]) -> bool:
    """DONE can commit with the effects when they share the database and nothing is left to
    do after the commit: then the whole batch is one transaction."""
    return policy.bind == "main" and policy.after_commit is None


def _routed(policy: Policy[U], envelopes: Iterable[dict[str, Any]]) -> list[Event]:
    """The batch's events, each once, minus any this policy does not handle."""
    events: dict[str, Event] = {}
    for body in envelopes:
        event = Event.from_envelope(body)
        if event.event_type not in policy.events:
            # Misrouted (only the relay's routing stands between): never apply a foreign event.
            log.error("event.misrouted", consumer=policy.consumer, event_type=str(event.event_type))
            continue
        events.setdefault(event.event_id, event)
    return list(events.values())


def _expired(container: Container, events: list[Event]) -> list[Event]:
    """The copies older than the deduplication window (SPEC 5.6). Their processed-messages
    records may have been deleted, so a claim could not tell a duplicate from a new event."""
    window_s = container.settings.dedup_window_s
    oldest_allowed = utcnow() - timedelta(seconds=window_s)
    return [event for event in events if event.occurred_at < oldest_allowed]


def _park_expired(container: Container, policy: Policy[U], events: list[Event]) -> None:
    """Never apply an expired copy: park its delivery, if still owed, with the reason (a
    replay parks it again). A DONE or deleted delivery was applied: the copy is dropped."""
    window = describe_duration(container.settings.dedup_window_s)
    reason = f"older than the deduplication window ({window}): not applied"
    with container.main_session() as session:
        parked = park(session, policy.consumer, [event.event_id for event in events], reason)
        session.commit()
    EVENTS.labels(policy.consumer, "expired").inc(len(events))
    log.warning(
        "events.expired",
        consumer=policy.consumer,
        event_ids=[event.event_id for event in events],
        parked=parked,
        reason=reason,
    )


def _apply(
    container: Container, policy: Policy[U], events: list[Event], announce_end: bool = False
) -> None:
    ids = [event.event_id for event in events]
    with policy.unit_of_work(container) as uow:
        fresh = claim_all(uow.session, policy.bind, policy.consumer, ids)
        todo = [event for event in events if event.event_id in fresh]
        if todo:
            policy.handle(uow, todo)
        if _done_with_effects(policy):
            record_done(uow.session, policy.consumer, ids)
            if announce_end:  # the task's last commit: its NOTIFY goes out with it
                announce_task_done(uow.session, policy.consumer)
        uow.commit()
    duplicate = len(events) - len(todo)
    _count(policy, handled=len(todo), duplicate=duplicate)
    log.info("events.handled", consumer=policy.consumer, handled=len(todo), duplicate=duplicate)


def _apply_alone(container: Container, policy: Policy[U], event: Event) -> bool:
    token = correlation_id.set(event.correlation_id)
    try:
        _apply(container, policy, [event])
        return True
    except Exception as exc:  # noqa: BLE001 - any failure counts towards the dead letter
        _count_failure(container, policy, event, f"{exc.__class__.__name__}: {exc}")
        return False
    finally:
        correlation_id.reset(token)


def _after_commit(
    container: Container,
    policy: Policy[U],
    after_commit: Callable[[U, list[Event]], dict[str, str]],
    events: list[Event],
) -> list[Event]:
    """Run the policy's work after the commit; returns the events it completed."""
    try:
        retry = after_commit(policy.unit_of_work(container), events)
    except Exception as exc:  # noqa: BLE001 - e.g. the database went away: all are retried
        retry = {event.event_id: f"{exc.__class__.__name__}: {exc}" for event in events}
    for event in events:
        if event.event_id in retry:
            _count_failure(container, policy, event, retry[event.event_id])
    return [event for event in events if event.event_id not in retry]


def _count(policy: Policy[U], handled: int, duplicate: int) -> None:
    if handled:
        EVENTS.labels(policy.consumer, "handled").inc(handled)
    if duplicate:
        EVENTS.labels(policy.consumer, "duplicate").inc(duplicate)


def _count_failure(container: Container, policy: Policy[U], event: Event, error: str) -> None:
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
