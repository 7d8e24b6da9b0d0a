"""The outbox writer: events, their deliveries and sequences, in the business transaction."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Table, TextClause, bindparam, insert, select, text, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from app.shared.db.base import utcnow
from app.shared.db.dialects import statements
from app.shared.events import Event, EventType
from app.shared.outbox.notices import NEW_WORK, NOTIFY_CHANNEL, new_work
from app.shared.outbox.tables import Delivery, DeliveryStatus, OrderSequence, OutboxEvent


def next_sequence(session: Session, order_no: str) -> int:
    """Allocate the order's next sequence. The row lock held to commit orders commits too."""
    stmt = (
        statements(session)
        .upsert(OrderSequence.__table__)
        .values(order_no=order_no, last_sequence=1)
        .on_conflict_do_update(
            index_elements=[OrderSequence.order_no],
            set_={"last_sequence": OrderSequence.last_sequence + 1},
        )
        .returning(OrderSequence.last_sequence)
    )
    return session.execute(stmt).scalar_one()


Subscribers = Callable[[EventType], Sequence[str]]


@dataclass(frozen=True)
class RowWrite:
    """One row written with the events: inserted, or (with `key`, its primary key column)
    updated where that column equals values[key]."""

    table: Table
    values: dict[str, Any]  # column key -> value
    key: str | None = None
    # An insert only: a condition, in SQL on the row's parameters (`:row_<column>`), checked
    # in the same statement as the insert. When it is false nothing is written: neither the
    # row nor the events.
    only_if: str | None = None


class OutboxWriter:
    """Writes events and their deliveries into the caller's transaction."""

    def __init__(
        self,
        subscribers: Subscribers,
        deferred: dict[tuple[str, EventType], float] | None = None,
    ):
        self._subscribers = subscribers
        # (consumer, event type) whose copy is first due this many seconds after the commit.
        self._deferred = deferred or {}

    def _due(self, consumer: str, event_type: EventType, now: datetime) -> datetime:
        delay = self._deferred.get((consumer, event_type))
        return now + timedelta(seconds=delay) if delay else now

    def write(self, session: Session, events: Iterable[Event], row: RowWrite | None = None) -> bool:
        """Write the events and their deliveries; with `row`, write that row first. Where
        `writes_in_one_statement` (PostgreSQL, one event per order: the usual case), all of it
        is one statement: atomic on its own, so it needs no transaction around it. False when
        the row's `only_if` was false: then nothing was written."""
        events = list(events)
        if self.writes_in_one_statement(session, events):
            return self._write_in_one_statement(session, events, row)
        if row is not None:
            if row.key is None and row.only_if is not None:
                if not _insert_only_if(session, row):
                    return False
            elif row.key is None:
                session.execute(insert(row.table), row.values)
            else:
                key = row.table.c[row.key]
                changes = {name: value for name, value in row.values.items() if name != row.key}
                session.execute(update(row.table).where(key == row.values[row.key]).values(changes))
        if events:
            self._write(session, events)
        return True

    @staticmethod
    def writes_in_one_statement(session: Session, events: list[Event]) -> bool:
        """Whether `write` takes the one-statement path: the database can write several tables
        in one statement, and every event has an order of its own. The statement gives each
        order one next sequence (an upsert may not touch one row twice), and finds each
        event's sequence by its order. Else the row, each sequence and the events are
        written one statement after the other."""
        order_nos = [event.order_no for event in events]
        return (
            bool(events)
            and statements(session).one_statement_writes
            and None not in order_nos
            and len(set(order_nos)) == len(order_nos)
        )

    def _write(self, session: Session, events: list[Event]) -> None:
        now = utcnow()
        event_rows: list[dict[str, Any]] = []
        delivery_rows: list[dict[str, Any]] = []
        for event in events:
            if event.order_no:
                event.sequence = next_sequence(session, event.order_no)
            event_rows.append(
                {
                    "event_id": event.event_id,
                    "event_type": str(event.event_type),
                    "order_no": event.order_no,
                    "sequence": event.sequence,
                    "occurred_at": event.occurred_at,
                    "payload": event.payload,
                    "correlation_id": event.correlation_id,
                    "trace_context": event.trace_context,
                }
            )
            delivery_rows.extend(
                {
                    "event_id": event.event_id,
                    "consumer": consumer,
                    "status": DeliveryStatus.PENDING,
                    "published": 0,
                    "failures": 0,
                    "next_attempt_at": self._due(consumer, event.event_type, now),
                    "created_at": now,
                }
                for consumer in self._subscribers(event.event_type)
            )
        # Core inserts, events first: the deliveries refer to them.
        session.execute(insert(OutboxEvent), event_rows)
        if delivery_rows:
            session.execute(insert(Delivery), delivery_rows)
        due_now = [row["consumer"] for row in delivery_rows if row["next_attempt_at"] <= now]
        if due_now:
            statements(session).notify(session, NOTIFY_CHANNEL, new_work(due_now))

    def _write_in_one_statement(
        self, session: Session, events: list[Event], row: RowWrite | None
    ) -> bool:
        """PostgreSQL, one event per order: the row, the sequences, the events, their
        deliveries and the NOTIFY in one round trip."""
        now = utcnow()
        deliveries = [
            (event.event_id, consumer, self._due(consumer, event.event_type, now))
            for event in events
            for consumer in self._subscribers(event.event_type)
        ]
        statement, row_values = _WRITE_ALL, {}
        if row is not None:
            statement = _write_all_after(row.table, tuple(row.values), row.key, row.only_if)
            row_values = {f"row_{name}": value for name, value in row.values.items()}
        sequences = session.execute(
            statement,
            {
                **row_values,
                "event_ids": [e.event_id for e in events],
                "types": [str(e.event_type) for e in events],
                "order_nos": [e.order_no for e in events],
                "occurred": [e.occurred_at for e in events],
                "payloads": [json.dumps(e.payload) for e in events],
                "cids": [e.correlation_id for e in events],
                "traces": [
                    json.dumps(e.trace_context) if e.trace_context else None for e in events
                ],
                "d_events": [d[0] for d in deliveries],
                "d_consumers": [d[1] for d in deliveries],
                "d_due": [d[2] for d in deliveries],
                "now": now,
                "channel": NOTIFY_CHANNEL,
                "payload": new_work(d[1] for d in deliveries if d[2] <= now),
            },
        )
        by_id: dict[str, int] = dict(sequences.all())
        if not by_id:  # the row's condition was false: nothing was written
            return False
        for event in events:
            event.sequence = by_id[event.event_id]
        return True


def _insert_only_if(session: Session, row: RowWrite) -> bool:
    """INSERT ... SELECT the row's values WHERE its condition; whether it was inserted."""
    params = {f"row_{name}": value for name, value in row.values.items()}
    values = [bindparam(f"row_{name}", type_=row.table.c[name].type) for name in row.values]
    chosen = select(*values).where(text(row.only_if or "1 = 1"))
    inserted = session.execute(
        insert(row.table).from_select(list(row.values), chosen).returning(row.table.c[0]), params
    )
    return inserted.first() is not None


def _write_events(gate: str) -> str:
    """The events, their sequences and deliveries, and the NOTIFY; `gate` a WHERE clause that
    lets them be written, or nothing."""
    return f"""
input AS (
    SELECT * FROM unnest(
        CAST(:event_ids AS varchar[]), CAST(:types AS varchar[]), CAST(:order_nos AS varchar[]),
        CAST(:occurred AS timestamptz[]), CAST(:payloads AS text[]), CAST(:cids AS varchar[]),
        CAST(:traces AS text[])
    ) AS t(
        event_id, event_type, order_no, occurred_at, payload, correlation_id, trace_context
    ){gate}
), seq AS (
    INSERT INTO outbox_order_sequences AS s (order_no, last_sequence)
    SELECT order_no, 1 FROM input
    ON CONFLICT (order_no) DO UPDATE SET last_sequence = s.last_sequence + 1
    RETURNING order_no, last_sequence
), ev AS (
    INSERT INTO outbox_events
        (event_id, event_type, order_no, sequence, occurred_at, payload, correlation_id,
         trace_context)
    SELECT i.event_id, i.event_type, i.order_no, seq.last_sequence, i.occurred_at,
           CAST(i.payload AS json), i.correlation_id, CAST(i.trace_context AS json)
    FROM input i JOIN seq USING (order_no)
    RETURNING event_id, sequence
), dl AS (
    INSERT INTO outbox_deliveries
        (event_id, consumer, status, published, failures, next_attempt_at, created_at)
    SELECT d.event_id, d.consumer, 'PENDING', 0, 0, d.due, :now
    FROM unnest(
        CAST(:d_events AS varchar[]), CAST(:d_consumers AS varchar[]),
        CAST(:d_due AS timestamptz[])
    ) AS d(event_id, consumer, due){gate}
), woken AS (
    -- Only when a delivery is due now: a deferred one is found by the relay sweep.
    SELECT CASE WHEN :payload <> '{NEW_WORK}' THEN pg_notify(:channel, :payload) END
)
SELECT ev.event_id, ev.sequence FROM ev CROSS JOIN woken
"""


_WRITE_ALL = text("WITH " + _write_events(""))


@functools.cache
def _write_all_after(
    table: Table, names: tuple[str, ...], key: str | None, only_if: str | None = None
) -> TextClause:
    """_WRITE_ALL led by the write of one row of `table` (its parameters: row_<column>): an
    INSERT of those columns, or with `key` an UPDATE of them where `key` matches. A failure
    there (a unique violation) fails the whole statement, so no event is written for it. With
    `only_if`, the INSERT is of the values where that condition holds, and the events are
    written only with the row (the statement then returns nothing)."""
    columns = [table.c[name] for name in names]
    gate = ""
    if key is None and only_if is not None:
        # Typed: in a SELECT list PostgreSQL would take an untyped NULL for text.
        dialect = postgresql.dialect()  # type: ignore[no-untyped-call]  # unannotated
        listed = ", ".join(c.name for c in columns)
        values = ", ".join(f"CAST(:row_{c.key} AS {c.type.compile(dialect)})" for c in columns)
        lead = f"INSERT INTO {table.name} ({listed}) SELECT {values} WHERE {only_if} RETURNING 1"
        gate = " WHERE EXISTS (SELECT 1 FROM row_written)"
    elif key is None:
        listed = ", ".join(c.name for c in columns)
        values = ", ".join(f":row_{c.key}" for c in columns)
        lead = f"INSERT INTO {table.name} ({listed}) VALUES ({values})"
    else:
        sets = ", ".join(f"{c.name} = :row_{c.key}" for c in columns if c.key != key)
        lead = f"UPDATE {table.name} SET {sets} WHERE {table.c[key].name} = :row_{key}"
    return text(f"WITH row_written AS ({lead}), " + _write_events(gate)).bindparams(
        *(bindparam(f"row_{c.key}", type_=c.type) for c in columns)
    )
