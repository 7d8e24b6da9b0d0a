"""Opening and starting learnings on CourseOrdered, with fakes."""

from app.learning import handlers
from app.learning.model import Manager
from app.shared.events import Event, EventType
from app.shared.states import LearningStatus
from tests.unit.fakes import FakeLearningUnitOfWork


def course_ordered(order_no="O1", phone="010-1234-5678") -> Event:
    return Event(
        EventType.COURSE_ORDERED,
        order_no,
        {
            "order_no": order_no,
            "course_no": "PY101",
            "course_title": "파이썬 입문",
            "phone": phone,
            "ordered_at": "2026-11-25T00:00:00+00:00",
            "begin_date": "2026-12-01",
            "end_date": "2027-01-31",
        },
    )


def with_managers(*names) -> FakeLearningUnitOfWork:
    uow = FakeLearningUnitOfWork()
    for name in names:
        uow.managers.add(Manager(name=name, phone="010-9999-0000", active=True))
    uow.flush()
    return uow


def test_given_no_manager_when_a_course_is_ordered_then_the_learning_waits():
    uow = with_managers()
    handlers.open_learnings(uow, [course_ordered()])
    [learning] = uow.learnings.items
    assert learning.status == LearningStatus.WAITING and learning.manager_id is None
    assert uow.commit() == []


def test_given_managers_when_courses_are_ordered_then_the_least_loaded_starts_each():
    uow = with_managers("김", "이")
    kim, lee = uow.managers.items
    handlers.open_learnings(uow, [course_ordered("O0"), course_ordered("O1")])
    handlers.open_learnings(uow, [course_ordered("O2")])
    assigned = [x.manager_id for x in uow.learnings.items]
    assert assigned == [kim.id, lee.id, kim.id]  # ties go to the lowest id
    events = uow.commit()
    assert [e.event_type for e in events] == [EventType.LEARNING_STARTED] * 3
    assert events[1].payload["manager_name"] == "이"
    assert events[1].payload["phone"] == "010-1234-5678"


def test_given_an_inactive_manager_when_a_course_is_ordered_then_they_get_no_learning():
    uow = with_managers("김", "이")
    uow.managers.items[0].active = False
    handlers.open_learnings(uow, [course_ordered()])
    assert uow.learnings.items[0].manager_name == "이"


def test_given_a_learning_for_the_order_when_course_ordered_comes_again_then_nothing_changes():
    uow = with_managers("김")
    handlers.open_learnings(uow, [course_ordered()])
    handlers.open_learnings(uow, [course_ordered()])
    assert len(uow.learnings.items) == 1
    assert len(uow.commit()) == 1


def test_given_a_learning_cancelled_when_the_next_course_is_ordered_then_its_manager_is_free():
    uow = with_managers("김", "이")
    kim, lee = uow.managers.items
    handlers.open_learnings(uow, [course_ordered("O0"), course_ordered("O1")])
    cancelled = Event(EventType.COURSE_ORDER_CANCELLED, "O0", {"phone": "010-1234-5678"})
    handlers.cancel_learning(uow, cancelled)
    handlers.cancel_learning(uow, cancelled)  # a second copy frees nobody twice
    handlers.open_learnings(uow, [course_ordered("O2"), course_ordered("O3")])
    assert [x.manager_id for x in uow.learnings.items] == [kim.id, lee.id, kim.id, kim.id]
    assert (kim.started_count, lee.started_count) == (2, 1)
