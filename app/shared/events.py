"""The event envelope of SPEC section 4, and the names of the events."""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy.orm import object_session

from app.shared.db.base import utcnow

# Session.info key: aggregates that raised events, held strongly until the unit of work takes
# them (the identity map holds a clean object weakly, and would drop it with its events).
RAISED = "onlinestudy.raised"


class EventType(StrEnum):
    COURSE_ORDERED = "CourseOrdered"
    ORDER_WAITLISTED = "OrderWaitlisted"
    SEAT_CONFIRMED = "SeatConfirmed"
    COURSE_ORDER_CANCELLED = "CourseOrderCancelled"
    LEARNING_STARTED = "LearningStarted"
    LEARNING_CANCELLED = "LearningCancelled"
    EVALUATION_RECORDED = "EvaluationRecorded"
    ORDER_COMPLETED = "OrderCompleted"
    FINAL_EVALUATION_REGISTERED = "FinalEvaluationRegistered"
    MANAGER_REGISTERED = "ManagerRegistered"


def time_ordered_uuid() -> uuid.UUID:
    """A version 7 UUID (RFC 9562): the Unix time in milliseconds, then 74 random bits.

    Event ids key the largest indexes (the event log, the deliveries, the processed-messages
    records, the SMS). Random ids would put each new entry on a random page of those indexes,
    so that every page stays in the working set as the history grows; ids that grow with time
    put new entries at the indexes' ends."""
    value = (time.time_ns() // 1_000_000) << 80 | int.from_bytes(os.urandom(10), "big")
    value = value & ~(0xF << 76) | 0x7 << 76  # version 7
    value = value & ~(0x3 << 62) | 0x2 << 62  # the RFC's variant
    return uuid.UUID(int=value)


@dataclass
class Event:
    """A fact one context tells the others. `sequence` is given by the outbox at commit."""

    event_type: EventType
    order_no: str | None
    payload: dict[str, Any]
    event_id: str = field(default_factory=lambda: str(time_ordered_uuid()))
    occurred_at: datetime = field(default_factory=utcnow)
    sequence: int = 0
    correlation_id: str | None = None
    # The span that raised it (app.shared.tracing), when tracing is on.
    trace_context: dict[str, str] | None = None

    def required_order_no(self) -> str:
        """The order the event is about: every event but ManagerRegistered names one."""
        if self.order_no is None:
            raise ValueError(f"{self.event_type} {self.event_id} names no order")
        return self.order_no

    def envelope(self) -> dict[str, Any]:
        """The JSON form that travels in task arguments."""
        return envelope(
            self.event_id,
            str(self.event_type),
            self.occurred_at,
            self.order_no,
            self.sequence,
            self.payload,
            self.correlation_id,
            self.trace_context,
        )

    @classmethod
    def from_envelope(cls, body: dict[str, Any]) -> Event:
        return cls(
            event_type=EventType(body["event_type"]),
            order_no=body.get("order_no"),
            payload=dict(body.get("payload") or {}),
            event_id=body["event_id"],
            occurred_at=datetime.fromisoformat(body["occurred_at"]),
            sequence=int(body.get("sequence") or 0),
            correlation_id=body.get("correlation_id"),
            trace_context=body.get("trace_context"),
        )


def envelope(
    event_id: str,
    event_type: str,
    occurred_at: datetime,
    order_no: str | None,
    sequence: int,
    payload: dict[str, Any],
    correlation_id: str | None,
    trace_context: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The envelope of SPEC 4 (also built straight from outbox rows by the relay)."""
    body = {
        "event_id": event_id,
        "event_type": event_type,
        "occurred_at": occurred_at.isoformat(),
        "order_no": order_no,
        "sequence": sequence,
        "payload": payload,
    }
    if correlation_id:
        body["correlation_id"] = correlation_id
    if trace_context:
        body["trace_context"] = trace_context
    return body


class Aggregate:
    """A domain object that records the events its changes raise; the unit of work takes them."""

    def raise_event(self, event: Event) -> None:
        self.__dict__.setdefault("_pending_events", []).append(event)
        session = object_session(self)
        if session is not None:  # a new, not yet added aggregate will be in session.new
            session.info.setdefault(RAISED, []).append(self)

    def take_events(self) -> list[Event]:
        events: list[Event] = self.__dict__.pop("_pending_events", [])
        return events
