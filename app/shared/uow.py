"""Unit of work: one transaction; the events its aggregates recorded go to the outbox in it."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from typing import Protocol, Self

from sqlalchemy import event as sa_event
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.orm import Session

from app.shared.db.bulk import HasTable, column_values
from app.shared.db.engine import autocommits
from app.shared.events import RAISED, Aggregate, Event
from app.shared.outbox.writer import OutboxWriter, RowWrite
from app.shared.tracing import current_context

# The request id or the id carried by the event being handled; stamped on every event raised.
correlation_id: ContextVar[str | None] = ContextVar("correlation_id", default=None)

# The unit of work a session belongs to (in session.info).
_UNIT_OF_WORK = "onlinestudy.unit_of_work"


@sa_event.listens_for(Session, "before_flush")
def _take_events_at_flush(session: Session, *_args: object) -> None:
    # One listener for every session, rather than one added and removed by each unit of work:
    # adding and removing a listener is slow work for SQLAlchemy, on the path of every order.
    uow = session.info.get(_UNIT_OF_WORK)
    if uow is not None:
        uow._take_events(session)


class SessionFactory(Protocol):
    def __call__(self, autocommit: bool = False) -> Session:
        """A new session; with `autocommit`, one whose every statement commits on its own where
        the database allows it (PostgreSQL), for statement_by_statement."""


class MappedAggregate(HasTable, Protocol):
    """An aggregate mapped on a table: commit_new and commit_changed write it by Core."""

    def take_events(self) -> list[Event]: ...


class UnitOfWork:
    def __init__(self, session_factory: SessionFactory, outbox: OutboxWriter | None):
        self._session_factory = session_factory
        self._outbox = outbox
        self._events: list[Event] = []
        self._statement_by_statement = False
        self.session: Session

    def statement_by_statement(self) -> Self:
        """Enter with each statement committing on its own where the database allows it
        (PostgreSQL), which saves the BEGIN and COMMIT round trips. For a unit of work that
        reads and then writes once with commit_new, whose write is then one atomic statement."""
        self._statement_by_statement = True
        return self

    def __enter__(self) -> Self:
        if self._statement_by_statement:
            self.session = self._session_factory(autocommit=True)
        else:
            self.session = self._session_factory()
        self._events = []
        self._stamped = 0
        # A flushed aggregate may be collected once its handler returns (the identity map is
        # weak), so events are taken at each flush, and at commit from session.info[RAISED].
        self.session.info[_UNIT_OF_WORK] = self
        return self

    def __exit__(self, *exc_info: object) -> None:
        # close() rolls back what was not committed and detaches the objects without expiring
        # them, so callers can still read what they loaded.
        self.session.info.pop(_UNIT_OF_WORK, None)
        self.session.close()
        self._statement_by_statement = False

    def add(self, obj: object) -> None:
        self.session.add(obj)

    def raise_event(self, event: Event) -> None:
        """An event that belongs to no aggregate (e.g. a manager registered)."""
        self._events.append(event)

    def raise_events_of(self, aggregate: Aggregate) -> None:
        """The events of an aggregate written outside the session (by a Core statement)."""
        self._events.extend(aggregate.take_events())

    def commit(self) -> list[Event]:
        """Commit the changes and the events they raised, atomically. Returns the events."""
        self._refuse_several_statements_without_transaction()
        events = self._collect_events()
        if events:
            self._write_out(events)
        self.session.commit()
        return events

    def commit_new(self, aggregate: MappedAggregate, only_if: str | None = None) -> bool:
        """Insert a new aggregate and commit it with its events, by Core instead of the ORM's
        flush: the hottest write (an order). On PostgreSQL the row, its events and their
        deliveries are one statement. The object stays outside the session: nothing is read
        back, not even its id. With `only_if` (see RowWrite), False when that condition was
        false at the insert: nothing was written."""
        events = [*self._collect_events(), *aggregate.take_events()]
        row = RowWrite(aggregate.__table__, column_values(aggregate), only_if=only_if)
        written = self._write_out(events, row)
        self.session.commit()
        return written

    def commit_changed(self, aggregate: MappedAggregate) -> list[Event]:
        """Commit the changed columns of one loaded aggregate with its events. When nothing
        else in the session changed, that is one statement on PostgreSQL, the UPDATE inside
        the outbox's (the score chain's steps); else an ordinary commit. The aggregate leaves
        the session."""
        state = sa_inspect(aggregate)
        others = [o for o in (*self.session.new, *self.session.dirty) if o is not aggregate]
        if others or self.session.deleted:
            return self.commit()
        events = self._collect_events()
        key = state.mapper.primary_key[0].key
        changed = {
            attr.key: attr.value
            for attr in state.attrs
            if attr.key in state.mapper.columns and attr.history.has_changes()
        }
        self.session.expunge(aggregate)  # written here: the session must not flush it again
        if changed or events:
            row = RowWrite(aggregate.__table__, {key: getattr(aggregate, key), **changed}, key)
            self._write_out(events, row)
        self.session.commit()
        return events

    def _refuse_several_statements_without_transaction(self) -> None:
        if autocommits(self.session):
            raise RuntimeError("a write of several statements needs a transaction")

    def _write_out(self, events: list[Event], row: RowWrite | None = None) -> bool:
        if self._outbox is None:
            raise RuntimeError("this database has no outbox; its context raises no events")
        if not self._outbox.writes_in_one_statement(self.session, events):
            self._refuse_several_statements_without_transaction()
        cid = correlation_id.get()
        cause = current_context()  # the span of the request or task: None when tracing is off
        for event in events:
            event.correlation_id = event.correlation_id or cid
            event.trace_context = event.trace_context or cause
        return self._outbox.write(self.session, events, row)

    def rollback(self) -> None:
        self.session.rollback()
        self._events.clear()
        self._stamped = 0

    def stamp_raised(self, cid: str | None) -> None:
        """Give the events raised since the last stamp this correlation id: a batch handles
        many events in one transaction, and each effect traces back to its own cause."""
        self._take_events(self.session)
        for event in self._events[self._stamped :]:
            event.correlation_id = event.correlation_id or cid
        self._stamped = len(self._events)

    def _take_events(self, session: Session, *_args: object) -> None:
        for obj in [*session.new, *session.dirty, *session.info.pop(RAISED, [])]:
            if isinstance(obj, Aggregate):
                self._events.extend(obj.take_events())

    def _collect_events(self) -> list[Event]:
        self._take_events(self.session)
        events, self._events = self._events, []
        self._stamped = 0
        return events


def each_correlated(uow: UnitOfWork, events: Iterable[Event]) -> Iterator[Event]:
    """Iterate a batch's events, each as the current cause: what the caller raises while it
    handles one event carries that event's correlation id."""
    for event in events:
        token = correlation_id.set(event.correlation_id)
        try:
            yield event
            uow.stamp_raised(event.correlation_id)
        finally:
            correlation_id.reset(token)
