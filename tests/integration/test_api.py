"""The HTTP API on PostgreSQL: what a client sees, bad input included (never a 500)."""

import json

import pytest
from sqlalchemy import func, select

from app.shared.outbox.tables import Delivery, OutboxEvent
from tests.helpers import course_body, order_body, random_category, random_phone


def a_course(client, **overrides) -> dict:
    response = client.post("/courses", json=course_body(**overrides))
    assert response.status_code == 201, response.json
    return response.json


def assert_error(response, status):
    assert response.status_code == status, response.data
    body = response.json
    assert body["code"] == status and body["status"] and "message" in body
    return body


def test_a_course_is_created_found_and_searched(client):
    created = a_course(client, title="Python 데이터 분석", category="data")
    assert client.get(f"/courses/{created['course_no']}").json == created
    found = client.get("/courses", query_string={"q": "PYTHON", "category": "data"})
    assert created["course_no"] in [c["course_no"] for c in found.json]
    korean = client.get("/courses", query_string={"q": "데이터"})
    assert created["course_no"] in [c["course_no"] for c in korean.json]
    assert json.loads(found.headers["X-Pagination"])["total"] >= 1


def test_search_treats_like_wildcards_as_text(client):
    category = random_category()
    percent = a_course(client, title="100% 합격 과정", category=category)
    a_course(client, title="합격 과정", category=category)
    found = client.get("/courses", query_string={"q": "%", "category": category}).json
    assert [c["course_no"] for c in found] == [percent["course_no"]]


def test_a_duplicate_course_no_is_a_conflict(client):
    created = a_course(client)
    assert_error(client.post("/courses", json=course_body(course_no=created["course_no"])), 409)


@pytest.mark.parametrize(
    "bad",
    [
        {"price": -1},
        {"price": "free"},
        {"title": ""},
        {"course_no": None},
        {"surprise": 1},
        {"title": "x" * 201},
    ],
)
def test_a_bad_course_is_refused_with_422(client, bad):
    body = assert_error(client.post("/courses", json=course_body(**bad)), 422)
    assert body["errors"]


def test_an_unknown_course_is_404(client):
    assert_error(client.get("/courses/NOPE-404"), 404)


def test_an_order_is_placed_with_a_normalized_phone(client, container):
    course = a_course(client)
    response = client.post("/orders", json=order_body(course["course_no"], phone="01055556666"))
    assert response.status_code == 201
    order = response.json
    assert order["phone"] == "010-5555-6666" and order["status"] == "ORDERED"
    assert order["score"] is None and order["order_no"]
    assert client.get(f"/orders/{order['order_no']}").json == order
    listed = client.get("/orders", query_string={"phone": "010-5555-6666"}).json
    assert [o["order_no"] for o in listed] == [order["order_no"]]


@pytest.mark.parametrize(
    "bad, status",
    [
        ({"phone": "02-123-4567"}, 422),
        ({"phone": "not a phone"}, 422),
        ({"begin_date": "2027-03-01", "end_date": "2027-01-01"}, 422),
        ({"begin_date": "yesterday"}, 422),
        ({"course_no": "NO-SUCH-COURSE"}, 404),
    ],
)
def test_a_bad_order_is_refused_and_raises_no_event(client, container, bad, status):
    course = a_course(client)
    with container.main_session() as session:
        before = session.execute(select(func.count(OutboxEvent.id))).scalar_one()
    assert_error(client.post("/orders", json=order_body(course["course_no"], **bad)), status)
    with container.main_session() as session:
        assert session.execute(select(func.count(OutboxEvent.id))).scalar_one() == before


def test_malformed_json_is_a_400_not_a_500(client):
    response = client.post("/orders", data="{not json", content_type="application/json")
    assert_error(response, 400)


def _outbox_rows(container) -> tuple[int, int]:
    with container.main_session() as session:
        return (
            session.execute(select(func.count(OutboxEvent.id))).scalar_one(),
            session.execute(select(func.count(Delivery.id))).scalar_one(),
        )


def test_a_second_live_order_of_the_same_course_by_the_same_phone_is_a_conflict(client, container):
    course = a_course(client)
    body = order_body(course["course_no"])
    assert client.post("/orders", json=body).status_code == 201
    before = _outbox_rows(container)
    # The order row, its event and its deliveries are one statement: the refused row takes
    # its event with it.
    assert_error(client.post("/orders", json=body), 409)
    assert_error(
        client.post("/orders", json=body, headers={"Idempotency-Key": "k-" + body["phone"]}), 409
    )
    assert _outbox_rows(container) == before


def test_a_closed_course_takes_no_order_and_raises_no_event(client, container):
    course = a_course(client)
    assert (
        client.patch(f"/courses/{course['course_no']}", json={"active": False}).status_code == 200
    )
    before = _outbox_rows(container)
    assert_error(client.post("/orders", json=order_body(course["course_no"])), 409)
    assert _outbox_rows(container) == before


def test_an_idempotency_key_makes_a_retried_order_safe(client, container):
    course = a_course(client)
    body = order_body(course["course_no"])
    headers = {"Idempotency-Key": "retry-" + random_phone()}
    first = client.post("/orders", json=body, headers=headers)
    assert first.status_code == 201
    before = _outbox_rows(container)
    again = client.post("/orders", json=body, headers=headers)
    assert again.status_code == 201 and again.json == first.json
    assert _outbox_rows(container) == before
    with container.main_session() as session:
        assert (
            session.execute(
                select(func.count(OutboxEvent.id)).where(
                    OutboxEvent.order_no == first.json["order_no"]
                )
            ).scalar_one()
            == 1
        )
    other = order_body(course["course_no"])
    assert_error(client.post("/orders", json=other, headers=headers), 422)


def test_managers_are_registered_and_listed(client):
    response = client.post("/managers", json={"name": "한매니저", "phone": "010 7777 8888"})
    assert response.status_code == 201
    assert response.json["phone"] == "010-7777-8888" and response.json["active"] is True
    assert response.json in client.get("/managers").json
    assert_error(client.post("/managers", json={"name": "", "phone": "010-7777-8888"}), 422)


def test_lookups_of_unknown_things_are_404_and_bad_filters_422(client):
    assert_error(client.get("/orders/O-NOT-THERE"), 404)
    assert_error(client.get("/learnings/987654321"), 404)
    assert_error(client.get("/learnings", query_string={"status": "DANCING"}), 422)
    assert_error(client.get("/orders", query_string={"status": "LOST"}), 422)
    assert_error(client.get("/sms", query_string={"phone": "12"}), 422)
    assert_error(client.get("/mypage/not-a-phone"), 422)
    assert_error(client.get("/nowhere"), 404)
    assert_error(client.delete("/courses"), 405)


def test_my_page_of_a_student_without_orders_is_empty(client):
    assert client.get(f"/mypage/{random_phone()}").json == []


def test_health_and_openapi(client):
    assert client.get("/health/live").status_code == 200
    ready = client.get("/health/ready")
    assert ready.status_code == 200, ready.json
    spec = client.get("/openapi.json").json
    assert {"/orders", "/courses", "/mypage/{phone}", "/sms"} <= set(spec["paths"])
