"""The relay's side: claim due deliveries and push their next attempt out (redelivery)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import JSON, select, text, update
from sqlalchemy.orm import Session

from app.shared.db.base import UTCDateTime, utcnow
from app.shared.db.bulk import among
from app.shared.db.dialects import AnyRow
from app.shared.events import envelope
from app.shared.outbox.backoff import backoff_s, backoff_schedule_s
from app.shared.outbox.tables import Delivery, OutboxEvent, pending


@dataclass(frozen=True)
class DueDelivery:
    delivery_id: int
    consumer: str
    envelope: dict[str, Any]


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
            e.trace_context,
        )  # fmt: skip
        .join_from(Delivery.__table__, OutboxEvent.__table__, e.event_id == d.event_id)
        .where(pending(d.status), d.next_attempt_at <= now)
        .order_by(d.id)
        .limit(limit)
        .with_for_update(skip_locked=True, of=Delivery.__table__)
    )
    due: list[DueDelivery] = []
    pushed: dict[datetime, list[int]] = defaultdict(list)  # next attempt -> deliveries
    for row in session.execute(stmt):
        next_attempt_at = now + timedelta(seconds=backoff_s(redelivery_timeout_s, row.published))
        pushed[next_attempt_at].append(row.id)
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
            "delays_s": backoff_schedule_s(redelivery_timeout_s),
        },
    )
    return [_due_delivery(row) for row in rows]


def _due_delivery(row: AnyRow) -> DueDelivery:
    """A claimed row (delivery and event columns) as what the relay publishes."""
    body = envelope(
        row.event_id,
        row.event_type,
        row.occurred_at,
        row.order_no,
        row.sequence,
        row.payload,
        row.correlation_id,
        row.trace_context,
    )
    return DueDelivery(row.id, row.consumer, body)


# Each delivery's next attempt is its entry of backoff_schedule_s (indexed from 1 by attempt).
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
            + make_interval(secs => delays.s[least(d.published + 1, cardinality(delays.s))])
    FROM claimed, (SELECT CAST(:delays_s AS float8[]) AS s) AS delays
    WHERE d.id = claimed.id
    RETURNING d.id, d.consumer, d.event_id
)
SELECT p.id, p.consumer, e.event_id, e.event_type, e.order_no, e.sequence, e.occurred_at,
       e.payload, e.correlation_id, e.trace_context
FROM pushed AS p JOIN outbox_events AS e ON e.event_id = p.event_id
ORDER BY p.id
"""
).columns(occurred_at=UTCDateTime(), payload=JSON(), trace_context=JSON())
