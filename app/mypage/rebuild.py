"""Rebuild the My page read model from the event log, in the caller's transaction, in bounded
memory: the log is streamed order by order and the rows written in chunks."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import groupby
from types import SimpleNamespace
from typing import Any

from sqlalchemy import Table, delete, select
from sqlalchemy.orm import Session

from app.mypage.model import MyPageRow
from app.mypage.projection import apply, empty_values
from app.shared.db.base import utcnow
from app.shared.db.bulk import insert_missing
from app.shared.db.dialects import statements
from app.shared.events import Event, EventType
from app.shared.idempotency import PROCESSED
from app.shared.outbox.tables import OutboxEvent, stored_event

# Events fetched, and rows or records written, per round trip.
CHUNK = 1000

_ROWS = MyPageRow.__table__
_EVENTS = OutboxEvent.__table__


def rebuild(session: Session, consumer: str, event_types: Iterable[EventType]) -> int:
    """Replace every My page row by the fold of the outbox events of `event_types` (those the
    projection handles), and record them as processed by `consumer` (the projection's), so
    their redelivery is a no-op. The caller commits. Returns the number of rows."""
    # The live projection (SELECT ... FOR UPDATE, INSERT) waits until the commit; readers go
    # on seeing the old rows.
    statements(session).lock_out_writers(session, _ROWS)
    processed = PROCESSED["main"]
    session.execute(delete(_ROWS))
    session.execute(delete(processed).where(processed.c.consumer == consumer))
    blank = dict.fromkeys(column.key for column in _ROWS.columns)
    rows: list[dict[str, Any]] = []
    records: list[dict[str, Any]] = []
    total = 0
    now = utcnow()
    for order_no, events in groupby(_events(session, event_types), key=lambda e: e.order_no):
        history = list(events)  # one order's: a handful
        records += [
            {"consumer": consumer, "event_id": e.event_id, "processed_at": now} for e in history
        ]
        if order_no is not None:  # like project(): an event of no order has no row
            row = SimpleNamespace(
                **{**blank, **empty_values(order_no, history[0].payload["phone"])}
            )
            for event in history:
                apply(row, event)
            rows.append(vars(row))
        if len(rows) >= CHUNK or len(records) >= CHUNK:
            total += _write(session, rows, processed, records)
    return total + _write(session, rows, processed, records)


def _events(session: Session, event_types: Iterable[EventType]) -> Iterator[Event]:
    """The log's events of these types, order by order, each order's in sequence; fetched a
    chunk at a time (a server-side cursor on PostgreSQL), read by the index on both."""
    e = _EVENTS.c
    stream = session.execute(
        select(_EVENTS)
        .where(e.event_type.in_([str(t) for t in event_types]))
        .order_by(e.order_no, e.sequence)
        .execution_options(yield_per=CHUNK)
    )
    for row in stream:
        yield stored_event(row)


def _write(
    session: Session, rows: list[dict[str, Any]], processed: Table, records: list[dict[str, Any]]
) -> int:
    """Insert the buffered rows and records, empty the buffers; returns the rows written."""
    written = len(rows)
    insert_missing(session, _ROWS, rows)
    insert_missing(session, processed, records)
    rows.clear()
    records.clear()
    return written
