"""Retention of the bookkeeping (SPEC 5.6): what falls out of the deduplication window is deleted.

Delivered (`DONE`) deliveries and the processed-messages records of both databases are kept
for DEDUP_WINDOW, then deleted a small batch per statement, each statement its own
transaction: no long lock, and several sweepers at once skip each other's rows. The event
log itself is kept (docs/decisions/0009-event-log-retention.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Table, func, select
from sqlalchemy.orm import Session

from app.shared.db.base import utcnow
from app.shared.db.dialects import statements
from app.shared.idempotency import PROCESSED
from app.shared.outbox.tables import Delivery, DeliveryStatus, has_status

# Rows per DELETE: each statement is a short transaction that holds its row locks briefly.
BATCH = 1000
# A record is deleted this much later than the window ends (at most), so that a consumer that
# has just let a copy in as young enough still finds the record: it covers the moment between
# its check and its claim and the clocks of different hosts.
MAX_GRACE_S = 60.0

SessionFor = Callable[[str], Session]


@dataclass(frozen=True)
class Bookkeeping:
    """One kind of bookkeeping row: where it lives and when it became what it is."""

    name: str  # as printed and in the metrics' `table` label
    bind: str
    table: Table
    age: ColumnElement[Any]  # when the row got its current state (DONE, processed, created)
    state: ColumnElement[bool] | None = None  # only the rows in this state

    def where(self, before: datetime | None = None) -> list[ColumnElement[bool]]:
        conditions = [] if self.state is None else [self.state]
        if before is not None:
            conditions.append(self.age < before)
        return conditions


_DELIVERIES = Delivery.__table__
_STATUS = _DELIVERIES.c.status

DONE_DELIVERIES = Bookkeeping(
    "outbox_deliveries_done",
    "main",
    _DELIVERIES,
    _DELIVERIES.c.done_at,
    has_status(_STATUS, DeliveryStatus.DONE),
)
PENDING_DELIVERIES = Bookkeeping(
    "outbox_deliveries_pending",
    "main",
    _DELIVERIES,
    _DELIVERIES.c.created_at,
    has_status(_STATUS, DeliveryStatus.PENDING),
)
PROCESSED_RECORDS = tuple(
    Bookkeeping(table.name, bind, table, table.c.processed_at) for bind, table in PROCESSED.items()
)

# What the window deletes. PENDING deliveries are owed work and DEAD ones the operator's.
PRUNED: tuple[Bookkeeping, ...] = (DONE_DELIVERIES, *PROCESSED_RECORDS)
# What the metrics show.
OBSERVED: tuple[Bookkeeping, ...] = (DONE_DELIVERIES, PENDING_DELIVERIES, *PROCESSED_RECORDS)


def prune_before(window_s: float, now: datetime | None = None) -> datetime:
    """Rows that got their state before this are out of the window (and its grace)."""
    grace_s = min(window_s, MAX_GRACE_S)
    return (now or utcnow()) - timedelta(seconds=window_s + grace_s)


def prune(
    session_for: SessionFor,
    window_s: float,
    *,
    dry_run: bool = False,
    batch: int = BATCH,
    stopping: Callable[[], bool] = lambda: False,
    on_deleted: Callable[[str, int], None] = lambda _name, _rows: None,
    kinds: tuple[Bookkeeping, ...] = PRUNED,
) -> dict[str, int]:
    """Delete the bookkeeping rows older than the window, table by table, `batch` rows per
    statement and transaction; returns the rows deleted per table (with `dry_run`, those that
    would be, deleting nothing). `on_deleted` hears each committed batch, so that what a pass
    interrupted by an error did is still counted; `stopping` ends a pass between batches."""
    before = prune_before(window_s)
    deleted: dict[str, int] = {}
    for kind in kinds:
        deleted[kind.name] = 0
        if dry_run:
            with session_for(kind.bind) as session:
                deleted[kind.name] = session.execute(
                    select(func.count()).select_from(kind.table).where(*kind.where(before))
                ).scalar_one()
            continue
        while not stopping():
            with session_for(kind.bind) as session:
                rows = statements(session).delete_oldest(
                    session, kind.table, kind.where(before), kind.age, batch
                )
                session.commit()
            if rows:
                deleted[kind.name] += rows
                on_deleted(kind.name, rows)
            if rows < batch:
                break
    return deleted


@dataclass(frozen=True)
class Extent:
    """How much of one kind of bookkeeping there is, and since when."""

    name: str
    rows: int
    oldest: datetime | None


def extents(session_for: SessionFor) -> list[Extent]:
    """Rows and oldest row of each observed kind (counts over their indexes, which the window
    keeps bounded)."""
    found = []
    for kind in OBSERVED:
        with session_for(kind.bind) as session:
            rows, oldest = session.execute(
                select(func.count(), func.min(kind.age))
                .select_from(kind.table)
                .where(*kind.where())
            ).one()
        found.append(Extent(kind.name, rows, oldest))
    return found
