"""Rebuild the My page read model from the event log, in the caller's transaction."""

from __future__ import annotations

from collections.abc import Iterable
from typing import cast

from sqlalchemy import Table, delete, insert, select
from sqlalchemy.orm import Session

from app.mypage.model import MyPageRow
from app.mypage.projection import apply, new_row
from app.shared.db.base import utcnow
from app.shared.db.dialects import statements
from app.shared.events import EventType
from app.shared.idempotency import PROCESSED
from app.shared.outbox.tables import OutboxEvent

BATCH = 1000


def rebuild(session: Session, consumer: str, event_types: Iterable[EventType]) -> int:
    """Replace every My page row by the fold of the outbox events of `event_types` (those the
    projection handles), and record them as processed by `consumer` (the projection's), so
    their redelivery is a no-op. The caller commits. Returns the number of rows."""
    # The live projection (SELECT ... FOR UPDATE, INSERT) waits until the commit; readers go
    # on seeing the old rows.
    statements(session).lock_out_writers(session, cast(Table, MyPageRow.__table__))
    processed = PROCESSED["main"]
    session.execute(delete(MyPageRow))
    session.execute(delete(processed).where(processed.c.consumer == consumer))
    types = [str(t) for t in event_types]
    rows: dict[str, MyPageRow] = {}
    event_ids: list[str] = []
    stream = session.execute(
        select(OutboxEvent)
        .where(OutboxEvent.event_type.in_(types))
        .order_by(OutboxEvent.id)
        .execution_options(yield_per=BATCH)
    ).scalars()
    for outbox_event in stream:
        event = outbox_event.to_event()
        event_ids.append(event.event_id)
        if event.order_no:  # like project(): an event of no order has no row
            if event.order_no not in rows:
                rows[event.order_no] = new_row(event.order_no, event.payload["phone"])
            apply(rows[event.order_no], event)
    session.add_all(rows.values())
    if event_ids:
        now = utcnow()
        session.execute(
            insert(processed),
            [{"consumer": consumer, "event_id": e, "processed_at": now} for e in event_ids],
        )
    session.flush()
    return len(rows)
