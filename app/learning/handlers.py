"""Commands and policies of the learning context."""

from __future__ import annotations

from dataclasses import dataclass

from app.learning.model import Learning, Manager
from app.learning.repository import LearningRepository, ManagerRepository
from app.shared.errors import NotFound
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


def get_learning(uow: LearningUnitOfWork, learning_id: int) -> Learning:
    with uow:
        learning = uow.learnings.get(learning_id)
        if learning is None:
            raise NotFound(f"learning {learning_id} not found")
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
