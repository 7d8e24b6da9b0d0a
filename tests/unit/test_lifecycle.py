"""State rules of orders, learnings and evaluations (SPEC 3), and the final-score command."""

from datetime import date

import pytest

from app.evaluation import handlers as evaluation
from app.evaluation.handlers import ScoreOutcome, ScoreUnavailable
from app.evaluation.model import Evaluation
from app.learning.model import Learning, Manager
from app.orders.model import Course, Order
from app.shared.errors import Conflict, NotFound, Unavailable
from app.shared.events import EventType
from app.shared.states import EvaluationStatus, OrderStatus
from tests.unit.fakes import FakeEvaluationUnitOfWork, FakeScoreChain


def an_order() -> Order:
    course = Course(course_no="PY101", title="파이썬", price=1, active=True)
    order = Order.place(course, "010-1234-5678", date(2026, 12, 1), date(2026, 12, 31))
    order.take_events()
    return order


def test_an_order_is_cancelled_once_and_cancelling_again_changes_nothing():
    order = an_order()
    assert order.cancel() is True and order.status == OrderStatus.CANCELLED
    assert order.cancel() is False
    assert [e.event_type for e in order.take_events()] == [EventType.COURSE_ORDER_CANCELLED]


def test_a_completed_order_cannot_be_cancelled_and_a_cancelled_one_takes_no_score():
    completed, cancelled = an_order(), an_order()
    completed.register_score(90)
    with pytest.raises(Conflict):
        completed.cancel()
    cancelled.cancel()
    with pytest.raises(Conflict):
        cancelled.register_score(90)
    assert completed.status == OrderStatus.COMPLETED and cancelled.status == OrderStatus.CANCELLED


def test_the_same_score_again_is_a_no_op_and_another_score_a_conflict():
    order = an_order()
    assert order.register_score(77) is True
    assert order.register_score(77) is False
    with pytest.raises(Conflict):
        order.register_score(78)
    [completed] = order.take_events()
    assert completed.event_type == EventType.ORDER_COMPLETED and completed.payload["score"] == 77


def test_a_learning_is_cancelled_or_completed_once_and_never_revived():
    learning = Learning.open("O1", "PY101", "파이썬", "010-1234-5678")
    learning.id = 1
    learning.start(Manager(id=1, name="김", phone="010-9999-0000", active=True))
    assert learning.cancel() is True and learning.cancel() is False
    assert learning.complete() is False
    with pytest.raises(Conflict):
        learning.start(Manager(id=2, name="이", phone="010-9999-0001", active=True))
    types = [e.event_type for e in learning.take_events()]
    assert types == [EventType.LEARNING_STARTED, EventType.LEARNING_CANCELLED]


def test_an_evaluation_takes_records_only_in_progress():
    e = Evaluation.open("O1", 1, "010-1234-5678", "PY101", 1)
    e.id = 1
    e.add_record(60, "중간")
    e.finalize(80)
    with pytest.raises(Conflict):
        e.add_record(70, "늦음")
    assert e.finalize(80) is False
    with pytest.raises(Conflict):
        e.finalize(81)
    assert e.cancel() is False and e.status == EvaluationStatus.FINAL
    types = [x.event_type for x in e.take_events()]
    assert types == [EventType.EVALUATION_RECORDED, EventType.FINAL_EVALUATION_REGISTERED]


def in_progress(evaluation_id=7) -> Evaluation:
    e = Evaluation.open("O7", 1, "010-1234-5678", "PY101", 1)
    e.id = evaluation_id
    return e


def final(cmd_score=90):
    return evaluation.RegisterFinalScore(7, cmd_score)


def register(uow, chain, cmd):
    """As the view does: read what the score decides on (and check access on it), register."""
    state = evaluation.state_for_final_score(uow, cmd.evaluation_id)
    return evaluation.register_final_score(uow, chain, cmd, state)


def test_given_an_evaluation_in_progress_the_chain_runs_with_its_order_and_score():
    chain = FakeScoreChain()
    register(FakeEvaluationUnitOfWork(in_progress()), chain, final(90))
    assert chain.calls == [("O7", 7, 90)]


def test_given_a_final_evaluation_the_same_score_answers_without_the_chain_and_another_conflicts():
    e = in_progress()
    e.finalize(90)
    chain = FakeScoreChain()
    assert register(FakeEvaluationUnitOfWork(e), chain, final(90)) is e
    with pytest.raises(Conflict):
        register(FakeEvaluationUnitOfWork(e), chain, final(91))
    assert chain.calls == []


@pytest.mark.parametrize(
    "outcome, error",
    [
        (ScoreOutcome.ORDER_CANCELLED, Conflict),
        (ScoreOutcome.ORDER_CONFLICT, Conflict),
        (ScoreOutcome.EVALUATION_CONFLICT, Conflict),
        (ScoreOutcome.EXPIRED, Unavailable),
    ],
)
def test_what_the_orders_side_answered_maps_to_the_callers_error(outcome, error):
    with pytest.raises(error):
        register(FakeEvaluationUnitOfWork(in_progress()), FakeScoreChain(outcome), final())


def test_given_the_orders_side_down_the_caller_gets_unavailable_with_retry_after():
    chain = FakeScoreChain(error=ScoreUnavailable("no answer", retry_after_s=3))
    with pytest.raises(Unavailable) as caught:
        register(FakeEvaluationUnitOfWork(in_progress()), chain, final())
    assert caught.value.retry_after_s == 3


def test_an_unknown_evaluation_is_not_found():
    with pytest.raises(NotFound):
        evaluation.state_for_final_score(FakeEvaluationUnitOfWork(), 7)
