"""Commands and policies of the learning context."""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from app.learning.model import Learning, Manager
from app.learning.repository import LearningRepository, ManagerRepository
from app.shared.errors import Conflict, found
from app.shared.events import Event, EventType
from app.shared.states import LearningStatus
from app.shared.uow import UnitOfWork, each_correlated


class LearningUnitOfWork(UnitOfWork):
    managers: ManagerRepository
    learnings: LearningRepository

    def __enter__(self) -> LearningUnitOfWork:
        super().__enter__()
        self.managers = ManagerRepository(self.session)
        self.learnings = LearningRepository(self.session)
        return self


@dataclass(frozen=True)
class RegisterManager:
    name: str
    phone: str


def register_manager(uow: LearningUnitOfWork, cmd: RegisterManager) -> Manager:
    with uow:
        manager = Manager(name=cmd.name, phone=cmd.phone, active=True, started_count=0)
        uow.managers.add(manager)
        uow.session.flush()
        uow.raise_event(
            Event(
                EventType.MANAGER_REGISTERED, None, {"manager_id": manager.id, "name": manager.name}
            )
        )
        uow.commit()
        return manager


@dataclass(frozen=True)
class StartLearning:
    learning_id: int
    manager_id: int


def start_learning(uow: LearningUnitOfWork, cmd: StartLearning) -> Learning:
    """A manager is assigned by hand to a WAITING learning."""
    with uow:
        learning = found(
            uow.learnings.get(cmd.learning_id, for_update=True), f"learning {cmd.learning_id}"
        )
        manager = found(uow.managers.get(cmd.manager_id), f"manager {cmd.manager_id}")
        if not manager.active:
            raise Conflict(f"manager {cmd.manager_id} is not active")
        learning.start(manager)
        uow.managers.count_started({manager.id: 1})
        uow.commit()
        return learning


def get_learning(uow: LearningUnitOfWork, learning_id: int) -> Learning:
    with uow:
        learning = found(uow.learnings.get(learning_id), f"learning {learning_id}")
        return learning


class ManagerLoad:
    """Picks the active manager with the fewest STARTED learnings (ties: the lowest id) for each
    learning a transaction starts, counting its own starts; `save()` writes the counts back."""

    def __init__(self, managers: ManagerRepository):
        self._managers = managers
        self._heap = [(m.started_count or 0, m.id, m) for m in managers.by_load()]
        heapq.heapify(self._heap)
        self._started: Counter[int] = Counter()

    def start(self, learning: Learning, announce: bool = True) -> bool:
        """Start the learning with the least-loaded manager; False if there is none."""
        if not self._heap:
            return False
        load, manager_id, manager = self._heap[0]
        learning.start(manager, announce)
        heapq.heapreplace(self._heap, (load + 1, manager_id, manager))
        self._started[manager_id] += 1
        return True

    def save(self) -> None:
        self._managers.count_started(self._started)
        self._started.clear()


# Policies: called by the consumer runner inside its transaction, with the events it has not
# handled before.


def open_learnings(uow: LearningUnitOfWork, events: list[Event]) -> None:
    """On CourseOrdered: open each order's learning and start it with the least-loaded manager.
    An order with a learning already (opened, or cancelled before it could open) gets nothing."""
    known = uow.learnings.opened_for([e.required_order_no() for e in events])
    load = ManagerLoad(uow.managers)
    opened: list[Learning] = []
    started: dict[str, Learning] = {}
    for event in events:
        p = event.payload
        if p["order_no"] in known:
            continue
        known.add(p["order_no"])
        learning = Learning.open(p["order_no"], p["course_no"], p.get("course_title"), p["phone"])
        # Started before it is stored: one INSERT, no UPDATE after it. No manager: it waits.
        if load.start(learning, announce=False):
            started[event.event_id] = learning
        opened.append(learning)
    if not opened:
        return
    uow.learnings.insert(opened)  # the learning ids go into LearningStarted
    for event in each_correlated(uow, [e for e in events if e.event_id in started]):
        learning = started[event.event_id]
        learning.announce_started()
        uow.raise_events_of(learning)  # it is not in the session, where they are looked for
    load.save()


# How many WAITING learnings one ManagerRegistered starts; the rest wait for the next manager.
START_ON_REGISTRATION_LIMIT = 100


def start_waiting_learnings(uow: LearningUnitOfWork, event: Event) -> None:
    """On ManagerRegistered: start the oldest WAITING learnings, each with the least-loaded
    manager (the new one first, as it has none)."""
    load = ManagerLoad(uow.managers)
    for learning in uow.learnings.oldest_waiting(START_ON_REGISTRATION_LIMIT):
        if not load.start(learning):
            break
    load.save()


def cancel_learning(uow: LearningUnitOfWork, event: Event) -> None:
    """On CourseOrderCancelled: cancel the learning, or leave a tombstone if it never opened,
    so that a late CourseOrdered opens nothing. An order cancelled while it waited for a seat
    never had, and never gets, a CourseOrdered: there is nothing to cancel."""
    if event.payload.get("waitlisted"):
        return
    order_no = event.required_order_no()
    learning = uow.learnings.of_order(order_no)
    if learning is None:
        learning = Learning.cancelled_before_opening(order_no, event.payload.get("phone"))
        uow.learnings.add(learning)
        uow.session.flush()
        learning.announce_cancelled()
        return
    _leave_started(uow, learning, learning.cancel)


def complete_learnings(uow: LearningUnitOfWork, events: list[Event]) -> None:
    """On FinalEvaluationRegistered: those learnings are over, and their managers each have
    fewer STARTED. One locked read and one write of the counts for the whole batch."""
    ended: Counter[int] = Counter()
    for learning in uow.learnings.of_orders(sorted({e.required_order_no() for e in events})):
        if learning.complete() and learning.manager_id is not None:  # only a STARTED one
            ended[learning.manager_id] -= 1
    uow.managers.count_started(ended)


def _leave_started(uow: LearningUnitOfWork, learning: Learning, change: Callable[[], bool]) -> None:
    """Apply a change that may end a STARTED learning; its manager then has one fewer."""
    was_started = learning.status == LearningStatus.STARTED
    if change() and was_started and learning.manager_id is not None:
        uow.managers.count_started({learning.manager_id: -1})
