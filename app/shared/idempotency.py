"""Processed-messages records: a consumer's effect and its record commit together (SPEC 5.2)."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Column, Index, MetaData, String, Table
from sqlalchemy.orm import Session

from app.shared.db.base import MainBase, NotificationBase, UTCDateTime, utcnow
from app.shared.db.dialects import statements


def _processed_messages(metadata: MetaData, name: str) -> Table:
    return Table(
        name,
        metadata,
        Column("consumer", String(64), primary_key=True),
        Column("event_id", String(36), primary_key=True),
        Column("processed_at", UTCDateTime(), nullable=False),
        # The retention sweep deletes the oldest records first.
        Index(f"ix_{name}_processed_at", "processed_at"),
    )


# Each database keeps its own record, in the same transaction as the effects stored there.
PROCESSED = {
    "main": _processed_messages(MainBase.metadata, "processed_messages"),
    "notification": _processed_messages(
        NotificationBase.metadata, "notification_processed_messages"
    ),
}


def claim_all(session: Session, bind: str, consumer: str, event_ids: Iterable[str]) -> set[str]:
    """Record, in one statement, that `consumer` handles these events in this transaction;
    returns the ids it had not handled before.

    A concurrent copy of an event blocks on the primary key until the first commits, then
    finds it there: exactly one applies the effect, and nobody fails on a duplicate key. The
    ids go in sorted, so two batches that share events lock them in the same order.
    """
    table = PROCESSED[bind]
    now = utcnow()
    ids = sorted(set(event_ids))
    if not ids:
        return set()
    return statements(session).insert_processed(session, table, consumer, ids, now)
