"""The outbox's tables: the event log, one delivery per (event, consumer), per-order sequences."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    ColumnElement,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    literal_column,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.shared.db.base import MainBase, UTCDateTime
from app.shared.db.dialects import AnyColumn
from app.shared.events import Event, EventType


class DeliveryStatus:
    PENDING = "PENDING"
    DONE = "DONE"
    DEAD = "DEAD"


def has_status(status_column: AnyColumn, status: str) -> ColumnElement[bool]:
    """`status = '<status>'` with the value in the SQL text: a bound parameter would keep the
    planner from using the partial indexes in a prepared (generic) plan."""
    return status_column == literal_column(f"'{status}'")


def pending(status_column: AnyColumn) -> ColumnElement[bool]:
    return has_status(status_column, DeliveryStatus.PENDING)


class OutboxEvent(MainBase):
    """Every event ever committed, in commit order: the event log My page is rebuilt from."""

    __tablename__ = "outbox_events"
    # An order's events, and My page's rebuild reads the whole log in this order.
    __table_args__ = (Index("ix_outbox_events_order_no_sequence", "order_no", "sequence"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(36), unique=True)
    event_type: Mapped[str] = mapped_column(String(64))
    order_no: Mapped[str | None] = mapped_column(String(32))
    sequence: Mapped[int] = mapped_column(Integer)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime())
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    correlation_id: Mapped[str | None] = mapped_column(String(64))
    # The W3C trace context of the span that raised it, when tracing was on.
    trace_context: Mapped[dict[str, str] | None] = mapped_column(JSON)

    def to_event(self) -> Event:
        return stored_event(self)


def stored_event(row: Any) -> Event:
    """The event of a row of the log: an entity, or a row of its columns."""
    return Event(
        event_type=EventType(row.event_type),
        order_no=row.order_no,
        payload=row.payload,
        event_id=row.event_id,
        occurred_at=row.occurred_at,
        sequence=row.sequence,
        correlation_id=row.correlation_id,
        trace_context=row.trace_context,
    )


class Delivery(MainBase):
    """One consumer's copy of one event, and how far its delivery got."""

    __tablename__ = "outbox_deliveries"
    __table_args__ = (
        UniqueConstraint("event_id", "consumer", name="uq_outbox_deliveries_event_consumer"),
        # Partial: only PENDING rows are indexed, so these stay the size of the backlog, and a
        # delivery that becomes DONE writes no entry into them.
        Index(
            "ix_outbox_deliveries_due",
            "next_attempt_at",
            postgresql_where=text("status = 'PENDING'"),
            sqlite_where=text("status = 'PENDING'"),
        ),
        # Also each consumer's claim order: the relay's LATERAL stops at the quota.
        Index(
            "ix_outbox_deliveries_backlog",
            "consumer",
            "id",
            postgresql_where=text("status = 'PENDING'"),
            sqlite_where=text("status = 'PENDING'"),
        ),
        # The dead letters, by consumer: what /metrics and `events dead` read of the table,
        # without scanning the DONE rows a year leaves in it.
        Index(
            "ix_outbox_deliveries_dead",
            "consumer",
            postgresql_where=text("status = 'DEAD'"),
            sqlite_where=text("status = 'DEAD'"),
        ),
        # The retention sweep's: DONE deliveries, oldest first. Partial, so that PENDING and
        # DEAD rows (the relay's and the operator's) are not in it.
        Index(
            "ix_outbox_deliveries_done",
            "done_at",
            postgresql_where=text("status = 'DONE'"),
            sqlite_where=text("status = 'DONE'"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(ForeignKey("outbox_events.event_id"))
    consumer: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default=DeliveryStatus.PENDING)
    published: Mapped[int] = mapped_column(Integer, default=0)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    done_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_error: Mapped[str | None] = mapped_column(Text)


class OrderSequence(MainBase):
    """The last sequence number given to an order's events, whichever context raised them."""

    __tablename__ = "outbox_order_sequences"

    order_no: Mapped[str] = mapped_column(String(32), primary_key=True)
    last_sequence: Mapped[int] = mapped_column(Integer)
