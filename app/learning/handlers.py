"""Commands and policies of the learning context."""

from __future__ import annotations

from dataclasses import dataclass

from app.learning.model import Learning, Manager
from app.learning.repository import LearningRepository, ManagerRepository
from app.shared.errors import Conflict, found
from app.shared.events import Event, EventType
from app.shared.uow import UnitOfWork


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
        manager = Manager(name=cmd.name, phone=cmd.phone, active=True)
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
        uow.commit()
        return learning


def get_learning(uow: LearningUnitOfWork, learning_id: int) -> Learning:
    with uow:
        learning = found(uow.learnings.get(learning_id), f"learning {learning_id}")
        return learning


# Policies: called by the consumer runner inside its transaction, once per event.


def open_learning(uow: LearningUnitOfWork, event: Event) -> None:
    """On CourseOrdered: open the learning and start it with the least-loaded manager."""
    p = event.payload
    if uow.learnings.for_order(p["order_no"]) is not None:
        return  # already opened, or cancelled before it could open: nothing to revive
    learning = Learning.open(p["order_no"], p["course_no"], p.get("course_title"), p["phone"])
    uow.learnings.add(learning)
    uow.session.flush()  # the learning id goes into LearningStarted
    manager = uow.managers.least_loaded()
    if manager is not None:
        learning.start(manager)


# How many WAITING learnings one ManagerRegistered starts; the rest wait for the next manager.
START_ON_REGISTRATION_LIMIT = 100


def start_waiting_learnings(uow: LearningUnitOfWork, event: Event) -> None:
    """On ManagerRegistered: start the oldest WAITING learnings, each with the least-loaded
    manager (the new one first, as it has none)."""
    for learning in uow.learnings.oldest_waiting(START_ON_REGISTRATION_LIMIT):
        manager = uow.managers.least_loaded()
        if manager is None:
            return
        learning.start(manager)
        uow.session.flush()  # the next least_loaded() counts this start


def cancel_learning(uow: LearningUnitOfWork, event: Event) -> None:
    """On CourseOrderCancelled: cancel the learning, or leave a tombstone if it never opened,
    so that a late CourseOrdered opens nothing."""
    learning = uow.learnings.for_order(event.order_no)
    if learning is None:
        learning = Learning.cancelled_before_opening(event.order_no, event.payload.get("phone"))
        uow.learnings.add(learning)
        uow.session.flush()
        learning.announce_cancelled()
        return
    learning.cancel()


def complete_learning(uow: LearningUnitOfWork, event: Event) -> None:
    """On FinalEvaluationRegistered: the learning is over."""
    learning = uow.learnings.for_order(event.order_no)
    if learning is not None:
        learning.complete()
