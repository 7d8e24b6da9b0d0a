"""Processed-messages records: a consumer's effect and its record commit together (SPEC 5.2)."""

from __future__ import annotations

from sqlalchemy import Column, MetaData, String, Table, insert, select
from sqlalchemy.orm import Session

from app.shared.db import MainBase, NotificationBase, UTCDateTime, utcnow


def _processed_messages(metadata: MetaData, name: str) -> Table:
    return Table(
        name,
        metadata,
        Column("consumer", String(64), primary_key=True),
        Column("event_id", String(36), primary_key=True),
        Column("processed_at", UTCDateTime(), nullable=False),
    )


# Each database keeps its own record, in the same transaction as the effects stored there.
PROCESSED = {
    "main": _processed_messages(MainBase.metadata, "processed_messages"),
    "notification": _processed_messages(
        NotificationBase.metadata, "notification_processed_messages"
    ),
}


def already_processed(session: Session, bind: str, consumer: str, event_id: str) -> bool:
    table = PROCESSED[bind]
    return (
        session.execute(
            select(table.c.event_id).where(
                table.c.consumer == consumer, table.c.event_id == event_id
            )
        ).first()
        is not None
    )


def mark_processed(session: Session, bind: str, consumer: str, event_id: str) -> None:
    """Insert the record; a concurrent twin fails on the primary key and rolls its effect back."""
    session.execute(
        insert(PROCESSED[bind]).values(consumer=consumer, event_id=event_id, processed_at=utcnow())
    )
