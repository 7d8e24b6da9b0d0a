"""Transactional outbox: the event log, one delivery row per (event, consumer), per-order sequence.

Rows are written in the business transaction (SPEC 5.1). The relay publishes due deliveries and
pushes their next attempt out by the redelivery timeout; a consumer marks its delivery DONE after
its own commit, so an event nobody recorded is published again (SPEC 5.3).
"""

from __future__ import annotations

import functools
import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import (
    JSON,
    ColumnElement,
    ForeignKey,
    Index,
    Integer,
    Row,
    String,
    Table,
    Text,
    TextClause,
    UniqueConstraint,
    bindparam,
    func,
    insert,
    literal_column,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Mapped, Session, mapped_column

from app.shared.db.base import MainBase, UTCDateTime, utcnow
from app.shared.db.bulk import among
from app.shared.db.engine import on_postgresql
from app.shared.events import Event, EventType, envelope

NOTIFY_CHANNEL = "onlinestudy_outbox"
# Payloads of the NOTIFYs: a commit names the consumers it gave deliveries to; a worker names
# the consumer whose task ended.
NEW_WORK = "new:"
TASK_DONE = "done:"


def _new_work(consumers: Iterable[str]) -> str:
    """Names the consumers with a delivery due now; with none, no NOTIFY is sent."""
    return NEW_WORK + ",".join(sorted(set(consumers)))


class DeliveryStatus:
    PENDING = "PENDING"
    DONE = "DONE"
    DEAD = "DEAD"


def _pending(status_column) -> ColumnElement[bool]:
    """`status = 'PENDING'` with the value in the SQL text: a bound parameter would keep the
    planner from using the partial indexes in a prepared (generic) plan."""
    return status_column == literal_column(f"'{DeliveryStatus.PENDING}'")


class OutboxEvent(MainBase):
    """Every event ever committed, in commit order: the event log My page is rebuilt from."""

    __tablename__ = "outbox_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(36), unique=True)
    event_type: Mapped[str] = mapped_column(String(64))
    order_no: Mapped[str | None] = mapped_column(String(32), index=True)
    sequence: Mapped[int] = mapped_column(Integer)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime())
    payload: Mapped[dict] = mapped_column(JSON)
    correlation_id: Mapped[str | None] = mapped_column(String(64))

    def to_event(self) -> Event:
        return Event(
            event_type=EventType(self.event_type),
            order_no=self.order_no,
            payload=self.payload,
            event_id=self.event_id,
            occurred_at=self.occurred_at,
            sequence=self.sequence,
            correlation_id=self.correlation_id,
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


def next_sequence(session: Session, order_no: str) -> int:
    """Allocate the order's next sequence. The row lock held to commit orders commits too."""
    dialect = postgresql if on_postgresql(session) else sqlite
    stmt = (
        dialect.insert(OrderSequence)
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
    values: dict  # column key -> value
    key: str | None = None


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

    def write(self, session: Session, events: Iterable[Event], row: RowWrite | None = None) -> None:
        """Write the events and their deliveries; with `row`, write that row first. On
        PostgreSQL, with one event per order (the usual case), all of it is one statement:
        atomic on its own, so it needs no transaction around it."""
        events = list(events)
        if self.writes_in_one_statement(session, events):
            self._write_in_one_statement(session, events, row)
            return
        if row is not None and row.key is None:
            session.execute(insert(row.table), row.values)
        elif row is not None:
            key = row.table.c[row.key]
            changes = {name: value for name, value in row.values.items() if name != row.key}
            session.execute(update(row.table).where(key == row.values[row.key]).values(changes))
        if events:
            self._write(session, events)

    @staticmethod
    def writes_in_one_statement(session: Session, events: list[Event]) -> bool:
        order_nos = [event.order_no for event in events]
        return (
            bool(events)
            and on_postgresql(session)
            and None not in order_nos
            and len(set(order_nos)) == len(order_nos)
        )

    def _write(self, session: Session, events: list[Event]) -> None:
        now = utcnow()
        event_rows, delivery_rows = [], []
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
        if on_postgresql(session) and due_now:
            # NOTIFY is transactional: the relay hears it at commit, never for a rollback.
            session.execute(
                text("SELECT pg_notify(:channel, :payload)"),
                {"channel": NOTIFY_CHANNEL, "payload": _new_work(due_now)},
            )

    def _write_in_one_statement(
        self, session: Session, events: list[Event], row: RowWrite | None
    ) -> None:
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
            statement = _write_all_after(row.table, tuple(row.values), row.key)
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
                "d_events": [d[0] for d in deliveries],
                "d_consumers": [d[1] for d in deliveries],
                "d_due": [d[2] for d in deliveries],
                "now": now,
                "channel": NOTIFY_CHANNEL,
                "payload": _new_work(d[1] for d in deliveries if d[2] <= now),
            },
        )
        by_id = dict(sequences.all())
        for event in events:
            event.sequence = by_id[event.event_id]


_WRITE_EVENTS = f"""
input AS (
    SELECT * FROM unnest(
        CAST(:event_ids AS varchar[]), CAST(:types AS varchar[]), CAST(:order_nos AS varchar[]),
        CAST(:occurred AS timestamptz[]), CAST(:payloads AS text[]), CAST(:cids AS varchar[])
    ) AS t(event_id, event_type, order_no, occurred_at, payload, correlation_id)
), seq AS (
    INSERT INTO outbox_order_sequences AS s (order_no, last_sequence)
    SELECT order_no, 1 FROM input
    ON CONFLICT (order_no) DO UPDATE SET last_sequence = s.last_sequence + 1
    RETURNING order_no, last_sequence
), ev AS (
    INSERT INTO outbox_events
        (event_id, event_type, order_no, sequence, occurred_at, payload, correlation_id)
    SELECT i.event_id, i.event_type, i.order_no, seq.last_sequence, i.occurred_at,
           CAST(i.payload AS json), i.correlation_id
    FROM input i JOIN seq USING (order_no)
    RETURNING event_id, sequence
), dl AS (
    INSERT INTO outbox_deliveries
        (event_id, consumer, status, published, failures, next_attempt_at, created_at)
    SELECT d.event_id, d.consumer, 'PENDING', 0, 0, d.due, :now
    FROM unnest(
        CAST(:d_events AS varchar[]), CAST(:d_consumers AS varchar[]),
        CAST(:d_due AS timestamptz[])
    ) AS d(event_id, consumer, due)
), woken AS (
    -- Only when a delivery is due now: a deferred one is found by the relay sweep.
    SELECT CASE WHEN :payload <> '{NEW_WORK}' THEN pg_notify(:channel, :payload) END
)
SELECT ev.event_id, ev.sequence FROM ev CROSS JOIN woken
"""

_WRITE_ALL = text("WITH " + _WRITE_EVENTS)


@functools.cache
def _write_all_after(table: Table, names: tuple[str, ...], key: str | None) -> TextClause:
    """_WRITE_ALL led by the write of one row of `table` (its parameters: row_<column>): an
    INSERT of those columns, or with `key` an UPDATE of them where `key` matches. A failure
    there (a unique violation) fails the whole statement, so no event is written for it."""
    columns = [table.c[name] for name in names]
    if key is None:
        listed = ", ".join(c.name for c in columns)
        values = ", ".join(f":row_{c.key}" for c in columns)
        lead = f"INSERT INTO {table.name} ({listed}) VALUES ({values})"
    else:
        sets = ", ".join(f"{c.name} = :row_{c.key}" for c in columns if c.key != key)
        lead = f"UPDATE {table.name} SET {sets} WHERE {table.c[key].name} = :row_{key}"
    return text(f"WITH row_written AS ({lead}), " + _WRITE_EVENTS).bindparams(
        *(bindparam(f"row_{c.key}", type_=c.type) for c in columns)
    )


@dataclass(frozen=True)
class DueDelivery:
    delivery_id: int
    consumer: str
    envelope: dict


def claim_due(
    session: Session,
    limit: int,
    redelivery_timeout_s: float,
    quotas: dict[str, int] | None = None,
) -> list[DueDelivery]:
    """Lock due deliveries (skipping those another relay holds) and schedule their redelivery;
    with `quotas` (PostgreSQL, whose relay counts tasks in flight), only for those consumers
    and at most that many each.

    The caller publishes them and then commits; if publishing fails it rolls back and they stay
    due. A publish that succeeds but whose commit is lost only causes a duplicate, which the
    consumers absorb.
    """
    now = utcnow()
    if quotas is not None:
        return _claim_quotas(session, now, redelivery_timeout_s, quotas)
    d, e = Delivery.__table__.c, OutboxEvent.__table__.c
    # Core rows, not ORM objects: the relay does this for every event, many times a second.
    stmt = (
        select(
            d.id,
            d.consumer,
            d.published,
            e.event_id,
            e.event_type,
            e.order_no,
            e.sequence,
            e.occurred_at,
            e.payload,
            e.correlation_id,
        )  # fmt: skip
        .join_from(Delivery.__table__, OutboxEvent.__table__, e.event_id == d.event_id)
        .where(_pending(d.status), d.next_attempt_at <= now)
        .order_by(d.id)
        .limit(limit)
        .with_for_update(skip_locked=True, of=Delivery.__table__)
    )
    due: list[DueDelivery] = []
    pushed: dict[datetime, list[int]] = defaultdict(list)  # next attempt -> deliveries
    for row in session.execute(stmt):
        # Capped exponential: a consumer that is down for long is not flooded with copies.
        factor = 2 ** min(row.published, 4)
        pushed[now + timedelta(seconds=redelivery_timeout_s * factor)].append(row.id)
        due.append(_due_delivery(row))
    # One statement per distinct next attempt (usually one: first publications).
    for next_attempt_at, ids in pushed.items():
        session.execute(
            update(Delivery.__table__)
            .where(among(session, d.id, ids))
            .values(published=d.published + 1, next_attempt_at=next_attempt_at)
        )
    return due


def _claim_quotas(
    session: Session, now: datetime, redelivery_timeout_s: float, quotas: dict[str, int]
) -> list[DueDelivery]:
    """claim_due on PostgreSQL: each consumer's quota is taken in SQL and the next attempts
    pushed in the same statement, so no row is read only to be left over."""
    wanted = {consumer: n for consumer, n in quotas.items() if n > 0}
    if not wanted:
        return []
    rows = session.execute(
        _CLAIM_QUOTAS,
        {
            "consumers": list(wanted),
            "quotas": list(wanted.values()),
            "now": now,
            "timeout_s": redelivery_timeout_s,
        },
    )
    return [_due_delivery(row) for row in rows]


def _due_delivery(row: Row) -> DueDelivery:
    """A claimed row (delivery and event columns) as what the relay publishes."""
    body = envelope(
        row.event_id,
        row.event_type,
        row.occurred_at,
        row.order_no,
        row.sequence,
        row.payload,
        row.correlation_id,
    )
    return DueDelivery(row.id, row.consumer, body)


# The capped exponential of claim_due: a consumer that is down for long is not flooded.
_CLAIM_QUOTAS = text(
    """
WITH wanted AS (
    SELECT * FROM unnest(CAST(:consumers AS varchar[]), CAST(:quotas AS integer[]))
        AS w(consumer, quota)
), claimed AS (
    SELECT d.id FROM wanted CROSS JOIN LATERAL (
        SELECT id FROM outbox_deliveries
        WHERE consumer = wanted.consumer AND status = 'PENDING' AND next_attempt_at <= :now
        ORDER BY id
        LIMIT wanted.quota
        FOR UPDATE SKIP LOCKED
    ) AS d
), pushed AS (
    UPDATE outbox_deliveries AS d
    SET published = d.published + 1,
        next_attempt_at = CAST(:now AS timestamptz)
            + make_interval(secs => :timeout_s * power(2, least(d.published, 4)))
    FROM claimed
    WHERE d.id = claimed.id
    RETURNING d.id, d.consumer, d.event_id
)
SELECT p.id, p.consumer, e.event_id, e.event_type, e.order_no, e.sequence, e.occurred_at,
       e.payload, e.correlation_id
FROM pushed AS p JOIN outbox_events AS e ON e.event_id = p.event_id
ORDER BY p.id
"""
).columns(occurred_at=UTCDateTime(), payload=JSON())


def announce_task_done(session: Session, consumer: str) -> None:
    """Tell the relay that one of `consumer`'s tasks has finished (a PostgreSQL NOTIFY; SQLite
    has none, and its relay does not count tasks in flight)."""
    if on_postgresql(session):
        session.execute(
            text("SELECT pg_notify(:channel, :payload)"),
            {"channel": NOTIFY_CHANNEL, "payload": f"{TASK_DONE}{consumer}"},
        )


def record_done(session: Session, consumer: str, event_ids: Sequence[str]) -> None:
    if not event_ids:
        return
    d = Delivery.__table__.c
    # On the table, not the entity: the ORM would match the rows against its session first.
    session.execute(
        update(Delivery.__table__)
        .where(
            d.consumer == consumer,
            among(session, d.event_id, event_ids),
            d.status != DeliveryStatus.DONE,
        )
        .values(status=DeliveryStatus.DONE, done_at=utcnow(), last_error=None)
    )


def record_failure(
    session: Session, consumer: str, event_id: str, error: str, max_attempts: int, retry_in_s: float
) -> bool:
    """Count a failed attempt; park the delivery as DEAD after `max_attempts`. True if parked."""
    delivery = session.execute(
        select(Delivery)
        .where(Delivery.consumer == consumer, Delivery.event_id == event_id)
        .with_for_update()
    ).scalar_one_or_none()
    if delivery is None or delivery.status == DeliveryStatus.DONE:
        return False
    delivery.failures += 1
    delivery.last_error = error[-2000:]
    if delivery.failures >= max_attempts:
        delivery.status = DeliveryStatus.DEAD
        return True
    delivery.next_attempt_at = utcnow() + timedelta(
        seconds=retry_in_s * 2 ** (delivery.failures - 1)
    )
    return False


def dead_deliveries(session: Session) -> list[tuple[Delivery, OutboxEvent]]:
    rows = session.execute(
        select(Delivery, OutboxEvent)
        .join(OutboxEvent, OutboxEvent.event_id == Delivery.event_id)
        .where(Delivery.status == DeliveryStatus.DEAD)
        .order_by(Delivery.id)
    )
    return [(delivery, event) for delivery, event in rows]


def replay_dead(session: Session, event_id: str | None = None, consumer: str | None = None) -> int:
    """Make parked deliveries due again, with a fresh attempt count. Returns how many."""
    stmt = update(Delivery).where(Delivery.status == DeliveryStatus.DEAD)
    if event_id:
        stmt = stmt.where(Delivery.event_id == event_id)
    if consumer:
        stmt = stmt.where(Delivery.consumer == consumer)
    result = session.execute(
        stmt.values(
            status=DeliveryStatus.PENDING, failures=0, published=0, next_attempt_at=utcnow()
        )
    )
    return result.rowcount


def pending_deliveries(session: Session, consumers: Sequence[str]) -> int:
    """How many events these consumers have not recorded yet."""
    return session.execute(
        select(func.count(Delivery.id)).where(
            _pending(Delivery.status), Delivery.consumer.in_(consumers)
        )
    ).scalar_one()
