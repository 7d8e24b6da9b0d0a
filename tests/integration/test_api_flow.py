"""The HTTP API of the whole flow on PostgreSQL: catalog changes, cancel, manual start,
evaluations and the final score (with a fake orders side), overload."""

import dataclasses
import json

from sqlalchemy import select

from app.consumer import consume
from app.evaluation.handlers import ScoreOutcome, ScoreUnavailable
from app.policies import BY_CONSUMER
from app.shared.outbox.tables import OutboxEvent
from tests.helpers import course_body, order_body, random_phone
from tests.unit.fakes import FakeScoreChain


def created(response):
    assert response.status_code in (200, 201), response.json
    return response.json


def error(response, status):
    assert response.status_code == status, response.json
    assert response.json["code"] == status and response.json["message"]
    return response.json


def deliver_all(container, order_no):
    """Run every policy for the order's events until nothing new appears (the workers' job)."""
    done = set()
    while True:
        with container.main_session() as session:
            new = [
                e
                for e in session.execute(
                    select(OutboxEvent)
                    .where(OutboxEvent.order_no == order_no)
                    .order_by(OutboxEvent.id)
                ).scalars()
                if e.event_id not in done
            ]
        if not new:
            return
        for event in new:
            done.add(event.event_id)
            for policy in BY_CONSUMER.values():
                if event.event_type in policy.events:
                    consume(container, policy, [event.to_event().envelope()])


def an_evaluation(client, container):
    client.post("/managers", json={"name": "강매니저", "phone": random_phone()})
    course = created(client.post("/courses", json=course_body()))
    order = created(client.post("/orders", json=order_body(course["course_no"])))
    deliver_all(container, order["order_no"])
    [evaluation] = client.get("/evaluations", query_string={"order_no": order["order_no"]}).json
    return order, evaluation


class ChainThatCompletes:
    """Plays the orders side synchronously with the real handlers, like the workers do."""

    def __init__(self, container):
        self.container = container

    def run(self, order_no, evaluation_id, score):
        from app.evaluation.handlers import finalize_evaluation
        from app.orders.handlers import register_score

        outcome = register_score(self.container.orders_uow(), order_no, score)
        if outcome != ScoreOutcome.COMPLETED:
            return outcome
        return finalize_evaluation(self.container.evaluation_uow(), evaluation_id, score)


def test_a_deactivated_course_leaves_the_catalog_and_cannot_be_ordered(client):
    course = created(client.post("/courses", json=course_body(title="폐강 예정")))
    patched = created(client.patch(f"/courses/{course['course_no']}", json={"active": False}))
    assert patched["active"] is False
    found = client.get("/courses", query_string={"q": "폐강 예정"}).json
    assert course["course_no"] not in [c["course_no"] for c in found]
    error(client.post("/orders", json=order_body(course["course_no"])), 409)
    error(client.patch(f"/courses/{course['course_no']}", json={"course_no": "X"}), 422)
    error(client.patch("/courses/NOPE", json={"price": 1}), 404)


def test_an_order_is_cancelled_once_and_then_a_new_one_can_be_placed(client):
    course = created(client.post("/courses", json=course_body()))
    body = order_body(course["course_no"])
    order = created(client.post("/orders", json=body))
    first = created(client.post(f"/orders/{order['order_no']}/cancel"))
    again = created(client.post(f"/orders/{order['order_no']}/cancel"))
    assert first["status"] == again["status"] == "CANCELLED"
    assert created(client.post("/orders", json=body))["order_no"] != order["order_no"]
    error(client.post("/orders/NOPE/cancel"), 404)


def test_a_waiting_learning_is_started_by_hand_once(client, container):
    course = created(client.post("/courses", json=course_body()))
    order = created(client.post("/orders", json=order_body(course["course_no"])))
    deliver_all(container, order["order_no"])  # no manager yet: WAITING
    [learning] = client.get("/learnings", query_string={"order_no": order["order_no"]}).json
    assert learning["status"] == "WAITING"
    manager = created(client.post("/managers", json={"name": "윤매니저", "phone": random_phone()}))
    error(client.post(f"/learnings/{learning['id']}/start", json={"manager_id": 99999}), 404)
    error(client.post(f"/learnings/{learning['id']}/start", json={}), 422)
    started = created(
        client.post(f"/learnings/{learning['id']}/start", json={"manager_id": manager["id"]})
    )
    assert started["status"] == "STARTED" and started["manager_name"] == "윤매니저"
    error(
        client.post(f"/learnings/{learning['id']}/start", json={"manager_id": manager["id"]}), 409
    )
    by_manager = client.get("/learnings", query_string={"manager_id": manager["id"]}).json
    assert [x["id"] for x in by_manager] == [learning["id"]]


def test_records_and_the_final_score_then_the_order_is_completed_with_it(
    client, client_with, container
):
    order, evaluation = an_evaluation(client, container)
    url = f"/evaluations/{evaluation['id']}"
    created(client.post(f"{url}/records", json={"score": 65, "comment": "중간 점검"}))
    error(client.post(f"{url}/records", json={"score": 101}), 422)
    error(client.post(f"{url}/records", json={"score": "high"}), 422)
    error(client.post(f"{url}/final", json={"score": -1}), 422)
    container.score_chain = ChainThatCompletes(container)
    client = client_with()
    final = created(client.post(f"{url}/final", json={"score": 92}))
    assert final["status"] == "FINAL" and final["final_score"] == 92
    assert [r["score"] for r in final["records"]] == [65]
    placed = client.get(f"/orders/{order['order_no']}").json
    assert (placed["status"], placed["score"]) == ("COMPLETED", 92)
    assert created(client.post(f"{url}/final", json={"score": 92}))["final_score"] == 92
    error(client.post(f"{url}/final", json={"score": 93}), 409)
    error(client.post(f"{url}/records", json={"score": 70}), 409)
    error(client.post(f"/orders/{order['order_no']}/cancel"), 409)


def test_given_the_orders_side_down_the_final_score_is_503_and_nothing_changes(
    client, client_with, container
):
    order, evaluation = an_evaluation(client, container)
    container.score_chain = FakeScoreChain(error=ScoreUnavailable("no answer", 3))
    client = client_with()
    response = client.post(f"/evaluations/{evaluation['id']}/final", json={"score": 80})
    error(response, 503)
    assert response.headers["Retry-After"] == "3"
    assert client.get(f"/evaluations/{evaluation['id']}").json["status"] == "IN_PROGRESS"
    assert client.get(f"/orders/{order['order_no']}").json["status"] == "ORDERED"


def test_given_a_cancelled_order_the_final_score_is_a_conflict(client, client_with, container):
    order, evaluation = an_evaluation(client, container)
    created(client.post(f"/orders/{order['order_no']}/cancel"))
    container.score_chain = ChainThatCompletes(container)
    client = client_with()
    error(client.post(f"/evaluations/{evaluation['id']}/final", json={"score": 80}), 409)
    assert client.get(f"/orders/{order['order_no']}").json["status"] == "CANCELLED"


def test_evaluations_are_listed_by_status_and_unknown_ones_are_404(client, container):
    order, evaluation = an_evaluation(client, container)
    listed = client.get("/evaluations", query_string={"status": "IN_PROGRESS"})
    assert evaluation["id"] in [e["id"] for e in listed.json]
    assert json.loads(listed.headers["X-Pagination"])["total"] >= 1
    error(client.get("/evaluations/424242"), 404)
    error(client.get("/evaluations", query_string={"status": "DONE"}), 422)


def test_given_the_learning_backlog_over_the_limit_new_orders_get_503_in_korean(client, container):
    course = created(client.post("/courses", json=course_body()))
    created(client.post("/orders", json=order_body(course["course_no"])))
    container.settings = dataclasses.replace(container.settings, learning_backlog_limit=1)
    container._backlog_checked_at = 0.0
    created(client.post("/orders", json=order_body(course["course_no"])))  # backlog 1: fine
    container._backlog_checked_at = 0.0
    response = client.post("/orders", json=order_body(course["course_no"]))
    body = error(response, 503)
    assert "잠시 후 다시 시도해 주세요" in body["message"]
    assert int(response.headers["Retry-After"]) > 0


def test_given_the_database_down_the_api_answers_503_not_500(client, container, monkeypatch):
    from sqlalchemy.exc import OperationalError

    def unreachable(*args, **kwargs):
        raise OperationalError("SELECT 1", {}, Exception("connection refused"))

    monkeypatch.setattr(container.db, "session", unreachable)
    response = client.get("/orders")
    error(response, 503)
    assert response.headers["Retry-After"] == "2"
