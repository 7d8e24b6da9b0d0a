"""In-memory stand-ins for repositories, units of work, the score chain, Celery and the SMS
sender."""

from __future__ import annotations

import itertools
from contextlib import contextmanager

from sqlalchemy.exc import IntegrityError

from app.evaluation.handlers import ScoreOutcome
from app.notification.model import SmsMessage
from app.notification.senders import Outgoing
from app.shared.events import Aggregate, Event
from app.shared.states import LIVE_ORDER, SEAT_HOLDING, OrderStatus, SmsStatus
from app.shared.uow import correlation_id

_ids = itertools.count(1)


class FakeUnitOfWork:
    """Commits by taking the events of what was added, like the real one does."""

    def __init__(self):
        self.committed = 0
        self.events: list[Event] = []
        self._seen: list[object] = []
        self.session = self  # handlers call uow.session.flush()

    def __enter__(self):
        return self

    def statement_by_statement(self):
        return self

    def __exit__(self, *exc_info):
        return None

    def flush(self):
        for obj in self._seen:
            if getattr(obj, "id", None) is None:
                obj.id = next(_ids)

    def track(self, obj) -> None:
        self._seen.append(obj)

    def raise_event(self, event: Event) -> None:
        self.events.append(event)

    def raise_events_of(self, aggregate) -> None:
        for event in aggregate.take_events():  # stamped as the real one's stamp_raised does
            event.correlation_id = event.correlation_id or correlation_id.get()
            self.events.append(event)

    def stamp_raised(self, cid):
        for obj in self._seen:
            for event in obj.__dict__.get("_pending_events", []):
                event.correlation_id = event.correlation_id or cid

    def commit(self):
        self.flush()
        for obj in self._seen:
            if isinstance(obj, Aggregate):
                self.events.extend(obj.take_events())
        self.committed += 1
        return self.events

    def commit_changed(self, _aggregate):
        return self.commit()

    def rollback(self):
        pass


class FakeCourses:
    def __init__(self, uow):
        self.uow, self.items = uow, {}

    def add(self, course):
        self.uow.track(course)
        self.items[course.course_no] = course

    def get(self, course_no, for_update=False):
        return self.items.get(course_no)

    def seats_for_update(self, course_no):
        return self.items.get(course_no)

    def save_seats(self, course):
        pass  # the fake's course is the stored one

    def course_to_order(self, course_no, caller="", idempotency_key=None):
        course = self.items.get(course_no)
        if course is not None:
            earlier = self.uow.orders.by_idempotency_key(caller, idempotency_key)
            course.replay_of = earlier.order_no if idempotency_key and earlier else None
        return course


class FakeOrders:
    def __init__(self, uow):
        self.uow, self.items = uow, []

    def add(self, order):
        self.uow.track(order)
        self.items.append(order)

    def get(self, order_no, for_update=False):
        return next((o for o in self.items if o.order_no == order_no), None)

    def by_idempotency_key(self, caller, key):
        return next(
            (o for o in self.items if (o.idempotency_caller, o.idempotency_key) == (caller, key)),
            None,
        )

    def live_order(self, phone, course_no):
        return next(
            (
                o
                for o in self.items
                if o.phone == phone and o.course_no == course_no and o.status in LIVE_ORDER
            ),
            None,
        )

    def course_of(self, order_no):
        order = self.get(order_no)
        return order.course_no if order else None

    def _waiting(self, course_no):
        waiting = [
            o for o in self.items if o.course_no == course_no and o.status == OrderStatus.WAITLISTED
        ]
        return sorted(waiting, key=lambda o: o.waitlist_ticket)

    def oldest_waitlisted(self, course_no, count):
        return self._waiting(course_no)[: max(0, count)]

    def with_positions(self, orders):
        for order in orders:
            if order.status == OrderStatus.WAITLISTED:
                order.waitlist_position = self._waiting(order.course_no).index(order) + 1
        return orders

    def seats_held(self, course_no):
        return sum(1 for o in self.items if o.course_no == course_no and o.status in SEAT_HOLDING)


_SEATS = ("capacity", "seats_taken", "waitlisted", "last_ticket")


class FakeOrdersUnitOfWork(FakeUnitOfWork):
    """Enforces the orders table's unique indexes at commit, as the database does, and rolls
    back what a unit of work left uncommitted (orders added, the courses' seats)."""

    def __init__(self):
        super().__init__()
        self.courses = FakeCourses(self)
        self.orders = FakeOrders(self)
        self._committed_orders = 0
        self._seats: dict = {}

    def __enter__(self):
        self._seats = {c: [getattr(c, n) for n in _SEATS] for c in self.courses.items.values()}
        return self

    def __exit__(self, *exc_info):
        self.rollback()  # the real one closes its session: what was not committed is undone

    def commit(self):
        live = [(o.phone, o.course_no) for o in self.orders.items if o.status in LIVE_ORDER]
        keys = [
            (o.idempotency_caller, o.idempotency_key)
            for o in self.orders.items
            if o.idempotency_key
        ]
        if len(set(live)) < len(live) or len(set(keys)) < len(keys):
            raise IntegrityError("INSERT INTO orders_orders", {}, Exception("unique index"))
        events = super().commit()
        self._committed_orders = len(self.orders.items)
        self._seats = {c: [getattr(c, n) for n in _SEATS] for c in self.courses.items.values()}
        return events

    def commit_new(self, order, only_if=None):
        course = self.courses.items.get(order.course_no)
        if only_if is not None and course is not None and course.capacity is not None:
            order.take_events()
            return False  # the statement's condition: the course has a capacity
        self.orders.add(order)
        self.commit()
        return True

    def rollback(self):
        added = self.orders.items[self._committed_orders :]
        del self.orders.items[self._committed_orders :]
        self._seen = [obj for obj in self._seen if obj not in added]
        for course, values in self._seats.items():
            for name, value in zip(_SEATS, values, strict=True):
                setattr(course, name, value)


class FakeManagers:
    def __init__(self, uow):
        self.uow, self.items = uow, []

    def add(self, manager):
        self.uow.track(manager)
        self.items.append(manager)

    def by_load(self):
        active = [m for m in self.items if m.active]
        return sorted(active, key=lambda m: (m.started_count or 0, m.id))

    def count_started(self, changes):
        for manager in self.items:
            manager.started_count = (manager.started_count or 0) + changes.get(manager.id, 0)


class FakeLearnings:
    def __init__(self, uow):
        self.uow, self.items = uow, []

    def add(self, learning):
        self.uow.track(learning)
        self.items.append(learning)

    def of_order(self, order_no):
        return next((x for x in self.items if x.order_no == order_no), None)

    def opened_for(self, order_nos):
        return {x.order_no for x in self.items if x.order_no in order_nos}

    def insert(self, learnings):
        for learning in learnings:  # stored at once, outside the unit of work's session
            learning.id = next(_ids)
            self.items.append(learning)


class FakeLearningUnitOfWork(FakeUnitOfWork):
    def __init__(self):
        super().__init__()
        self.managers = FakeManagers(self)
        self.learnings = FakeLearnings(self)


class FakeEvaluations:
    def __init__(self, uow, items):
        self.uow, self.items = uow, {e.id: e for e in items}

    def get(self, evaluation_id, for_update=False, records=True):
        return self.items.get(evaluation_id)

    state_of = get


class FakeEvaluationUnitOfWork(FakeUnitOfWork):
    def __init__(self, *evaluations):
        super().__init__()
        self.evaluations = FakeEvaluations(self, evaluations)


class FakeScoreChain:
    """Plays the orders side: completes the evaluation, or answers/raises as scripted."""

    def __init__(self, outcome=ScoreOutcome.COMPLETED, error=None):
        self.outcome, self.error, self.calls = outcome, error, []

    def run(self, order_no, evaluation_id, score):
        self.calls.append((order_no, evaluation_id, score))
        if self.error:
            raise self.error
        return self.outcome


class FakeMessages:
    """The repository on a list: one message per (event, phone), ids in insertion order from
    `next_id`."""

    def __init__(self):
        self.items = []
        self.next_id = 1

    def add_missing(self, messages):
        known = {(m.event_id, m.phone) for m in self.items}
        for fields in messages:
            if (fields["event_id"], fields["phone"]) not in known:
                known.add((fields["event_id"], fields["phone"]))
                self.items.append(SmsMessage(id=self.next_id, **fields))
                self.next_id += 1

    def pending_for(self, keys):
        return [
            m for m in self.items if (m.event_id, m.phone) in keys and m.status == SmsStatus.PENDING
        ]

    def record_attempts(self, attempts):
        by_id = {m.id: m for m in self.items}
        for attempt in attempts:
            message = by_id[attempt["id"]]
            for name, value in attempt.items():
                if name != "id":
                    setattr(message, name, value)


class FakeNotificationUnitOfWork(FakeUnitOfWork):
    """The notification unit of work with its gateway, as the container builds it."""

    def __init__(self, sender: FakeSender, max_attempts: int = 5):
        super().__init__()
        self.messages = FakeMessages()
        self.sender = sender
        self.max_attempts = max_attempts


class FakeCelery:
    """Records what the relay publishes instead of talking to a broker."""

    def __init__(self):
        self.sent: list[tuple[str, str, list[dict]]] = []

    @contextmanager
    def producer_or_acquire(self):
        yield None

    def send_task(self, name, kwargs, queue, producer=None, **_options):
        self.sent.append((name, queue, kwargs["events"]))


class FakeSender:
    """Answers from a script of outcomes (an exception to raise, or None to succeed)."""

    name = "fake"

    def __init__(self, outcomes=()):
        self.outcomes = list(outcomes)
        self.sent: list[Outgoing] = []
        self.calls = 0

    def send(self, sms: Outgoing) -> str:
        self.calls += 1
        outcome = self.outcomes.pop(0) if self.outcomes else None
        if outcome is not None:
            raise outcome
        self.sent.append(sms)
        return f"provider-{len(self.sent)}"
