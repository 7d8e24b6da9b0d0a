"""Cancellation cascade, convergence on OrderCompleted, and every arrival order (SPEC 4, 5.4, 6)."""

from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import select

from app.consumer import consume
from app.evaluation.handlers import finalize_evaluation
from app.evaluation.model import Evaluation
from app.learning.handlers import RegisterManager, register_manager
from app.learning.model import Learning
from app.orders import handlers as orders
from app.policies import BY_CONSUMER, subscribers
from app.shared.errors import Conflict
from app.shared.outbox.tables import OutboxEvent
from tests.helpers import an_order


def events(c, order_no, event_type):
    with c.main_session() as session:
        return [
            e.to_event().envelope()
            for e in session.execute(
                select(OutboxEvent)
                .where(OutboxEvent.order_no == order_no, OutboxEvent.event_type == event_type)
                .order_by(OutboxEvent.id)
            ).scalars()
        ]


def deliver(c, order_no, event_type, only=None):
    """Hand the event to its consumers (or only to `only`), as the workers would."""
    [event] = events(c, order_no, event_type)
    for consumer in subscribers(event["event_type"]):
        if only is None or consumer == only:
            consume(c, BY_CONSUMER[consumer], [event])


def states(c, order_no):
    with c.main_session() as session:
        learning = session.execute(
            select(Learning.status).where(Learning.order_no == order_no)
        ).scalar_one_or_none()
        evaluation = session.execute(
            select(Evaluation.status).where(Evaluation.order_no == order_no)
        ).scalar_one_or_none()
    return learning, evaluation


def test_given_a_started_learning_when_the_order_is_cancelled_then_everything_cancels(container):
    register_manager(container.learning_uow(), RegisterManager("김", "010-9999-0000"))
    order = an_order(container)
    deliver(container, order.order_no, "CourseOrdered")
    deliver(container, order.order_no, "LearningStarted")
    assert states(container, order.order_no) == ("STARTED", "IN_PROGRESS")
    orders.cancel_order(container.orders_uow(), order.order_no)
    deliver(container, order.order_no, "CourseOrderCancelled")
    deliver(container, order.order_no, "LearningCancelled")
    assert states(container, order.order_no) == ("CANCELLED", "CANCELLED")
    sent = sorted(s.text.split("]")[1].split(":")[0].strip()[:8] for s in container.sms_sender.sent)
    assert len(container.sms_sender.sent) == 4, sent


def test_given_the_cancel_arrives_before_the_order_then_nothing_opens(container):
    register_manager(container.learning_uow(), RegisterManager("이", "010-9999-0001"))
    order = an_order(container)
    orders.cancel_order(container.orders_uow(), order.order_no)
    learning = "learning.open_learning"
    deliver(container, order.order_no, "CourseOrderCancelled", only="learning.cancel_learning")
    deliver(container, order.order_no, "CourseOrdered", only=learning)
    assert events(container, order.order_no, "LearningStarted") == []
    [cancelled] = events(container, order.order_no, "LearningCancelled")
    consume(container, BY_CONSUMER["evaluation.cancel_evaluation"], [cancelled])
    assert states(container, order.order_no) == ("CANCELLED", "CANCELLED")


def test_given_learning_started_arrives_after_learning_cancelled_then_no_evaluation_opens(
    container,
):
    register_manager(container.learning_uow(), RegisterManager("박", "010-9999-0002"))
    order = an_order(container)
    deliver(container, order.order_no, "CourseOrdered")
    orders.cancel_order(container.orders_uow(), order.order_no)
    deliver(container, order.order_no, "CourseOrderCancelled")
    deliver(container, order.order_no, "LearningCancelled")  # before LearningStarted
    deliver(container, order.order_no, "LearningStarted")
    assert states(container, order.order_no) == ("CANCELLED", "CANCELLED")


def test_given_the_chain_died_after_the_order_step_then_order_completed_finalizes(container):
    register_manager(container.learning_uow(), RegisterManager("최", "010-9999-0003"))
    order = an_order(container)
    deliver(container, order.order_no, "CourseOrdered")
    deliver(container, order.order_no, "LearningStarted")
    assert orders.register_score(container.orders_uow(), order.order_no, 95) == "completed"
    deliver(container, order.order_no, "OrderCompleted")  # evaluation.finalize never ran
    deliver(container, order.order_no, "FinalEvaluationRegistered")
    assert states(container, order.order_no) == ("COMPLETED", "FINAL")
    with container.main_session() as session:
        evaluation = session.execute(
            select(Evaluation).where(Evaluation.order_no == order.order_no)
        ).scalar_one()
    assert evaluation.final_score == 95
    # the late chain step changes nothing
    assert finalize_evaluation(container.evaluation_uow(), evaluation.id, 95) == "completed"
    assert len(events(container, order.order_no, "FinalEvaluationRegistered")) == 1


def test_given_a_batch_of_order_completed_then_only_unfinished_evaluations_converge(container):
    register_manager(container.learning_uow(), RegisterManager("한", "010-9999-0006"))
    made = [an_order(container) for _ in range(3)]
    for order in made:
        deliver(container, order.order_no, "CourseOrdered")
        deliver(container, order.order_no, "LearningStarted")
    for order, score in zip(made, (70, 80, 90), strict=True):
        assert orders.register_score(container.orders_uow(), order.order_no, score) == "completed"
    with container.main_session() as session:
        chained = session.execute(
            select(Evaluation.id).where(Evaluation.order_no == made[1].order_no)
        ).scalar_one()
    finalize_evaluation(container.evaluation_uow(), chained, 80)  # the chain did this one
    completed = [events(container, o.order_no, "OrderCompleted")[0] for o in made]

    consume(container, BY_CONSUMER["evaluation.finalize_on_order_completed"], completed * 2)

    with container.main_session() as session:
        finals = session.execute(
            select(Evaluation.order_no, Evaluation.status, Evaluation.final_score).where(
                Evaluation.order_no.in_([o.order_no for o in made])
            )
        ).all()
    assert sorted(tuple(f) for f in finals) == sorted(
        (o.order_no, "FINAL", score) for o, score in zip(made, (70, 80, 90), strict=True)
    )
    assert [len(events(container, o.order_no, "FinalEvaluationRegistered")) for o in made] == [
        1,
        1,
        1,
    ]


def test_given_waiting_learnings_when_a_manager_registers_then_the_oldest_start(container):
    first, second = an_order(container), an_order(container)
    deliver(container, first.order_no, "CourseOrdered")
    deliver(container, second.order_no, "CourseOrdered")
    assert states(container, first.order_no)[0] == "WAITING"
    register_manager(container.learning_uow(), RegisterManager("정", "010-9999-0004"))
    with container.main_session() as session:
        [registered] = [
            e.to_event().envelope()
            for e in session.execute(
                select(OutboxEvent).where(OutboxEvent.event_type == "ManagerRegistered")
            ).scalars()
        ]
    consume(container, BY_CONSUMER["learning.start_waiting_learnings"], [registered])
    consume(container, BY_CONSUMER["learning.start_waiting_learnings"], [registered])
    assert states(container, first.order_no)[0] == "STARTED"
    assert states(container, second.order_no)[0] == "STARTED"
    assert len(events(container, first.order_no, "LearningStarted")) == 1


def test_cancel_and_final_score_racing_on_the_order_row_exactly_one_wins(committing_container):
    c = committing_container
    outcomes = []
    for _ in range(20):
        order = an_order(c)

        def cancel(order_no=order.order_no):
            try:
                orders.cancel_order(c.orders_uow(), order_no)
                return "cancelled"
            except Conflict:
                return "refused"

        with ThreadPoolExecutor(2) as pool:
            score = pool.submit(orders.register_score, c.orders_uow(), order.order_no, 80)
            cancelled = pool.submit(cancel)
            pair = (score.result(), cancelled.result())
        assert pair in (("completed", "refused"), ("order_cancelled", "cancelled")), pair
        final = orders.get_order(c.orders_uow(), order.order_no)
        assert final.status == ("COMPLETED" if pair[0] == "completed" else "CANCELLED")
        outcomes.append(pair[0])
    assert len(outcomes) == 20


def test_the_same_event_consumed_by_two_workers_at_once_applies_once(committing_container):
    c = committing_container
    register_manager(c.learning_uow(), RegisterManager("동시", "010-9999-0005"))
    for _ in range(10):
        order = an_order(c)
        [ordered] = events(c, order.order_no, "CourseOrdered")
        policy = BY_CONSUMER["learning.open_learning"]
        with ThreadPoolExecutor(2) as pool:
            done = list(pool.map(consume, [c, c], [policy, policy], [[ordered], [ordered]]))
        assert done == [[ordered["event_id"]]] * 2  # both record the delivery as done
        assert len(events(c, order.order_no, "LearningStarted")) == 1
        with c.main_session() as session:
            assert (
                session.execute(select(Learning).where(Learning.order_no == order.order_no))
                .scalars()
                .all()
                .__len__()
                == 1
            )
