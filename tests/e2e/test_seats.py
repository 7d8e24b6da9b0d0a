"""Seats on real workers (SPEC 11): a seat freed by a cancel goes to the order waiting longest,
which then goes the usual way (learning started, SMS) with a seat-confirmed SMS besides, while
My page shows every waiting order's current position."""

from __future__ import annotations

import pytest

from tests.e2e.client import Client
from tests.helpers import course_body, eventually, order_body, random_phone


@pytest.fixture
def api(system) -> Client:
    return Client(system.base_url, system.admin_token)


def test_given_a_full_course_when_a_seat_is_freed_then_the_oldest_waiting_order_gets_it(api):
    api.a_manager("좌석매니저")
    course = api.post("/courses", course_body(title="실시간 특강", capacity=1), expect=201).json()
    holder = api.post("/orders", order_body(course["course_no"]), expect=201).json()
    sold_out = api.post("/orders", order_body(course["course_no"]), expect=409).json()
    assert sold_out["status"] == "SOLD_OUT"
    phones = [random_phone() for _ in range(3)]
    waiting = [
        api.post(
            "/orders", order_body(course["course_no"], phone=p, waitlist=True), expect=201
        ).json()
        for p in phones
    ]
    assert [(w["status"], w["waitlist_position"]) for w in waiting] == [
        ("WAITLISTED", 1),
        ("WAITLISTED", 2),
        ("WAITLISTED", 3),
    ]

    def positions_shown(expected):
        def check():
            rows = [api.one(f"/mypage/{p}") for p in phones]
            assert [(r["order_status"], r["waitlist_position"]) for r in rows] == expected

        return check

    eventually(positions_shown([("WAITLISTED", 1), ("WAITLISTED", 2), ("WAITLISTED", 3)]))

    api.post(f"/orders/{holder['order_no']}/cancel", expect=200)
    api.post(f"/orders/{waiting[1]['order_no']}/cancel", expect=200)  # the one behind it leaves

    def seated_the_usual_way():
        seated = waiting[0]["order_no"]
        assert api.get(f"/orders/{seated}")["status"] == "ORDERED"
        assert api.one("/learnings", order_no=seated)["status"] == "STARTED"
        assert api.one("/evaluations", order_no=seated)["status"] == "IN_PROGRESS"
        texts = sorted(m["message"] for m in api.get("/sms", order_no=seated))
        assert len(texts) == 3, texts
        assert any("좌석 확정" in t and "실시간 특강" in t for t in texts)
        assert any("강좌 주문이 접수" in t for t in texts)
        assert any("학습관리 시작" in t for t in texts)
        row = api.one(f"/mypage/{phones[0]}")
        assert (row["order_status"], row["learning_status"]) == ("ORDERED", "STARTED")

    eventually(seated_the_usual_way, timeout_s=30)
    eventually(positions_shown([("ORDERED", None), ("CANCELLED", None), ("WAITLISTED", 1)]))
    # The order cancelled while it waited: its cancel SMS, and no learning ever.
    left = waiting[1]["order_no"]
    eventually(lambda: api.one("/sms", order_no=left))
    assert api.get("/learnings", order_no=left) == []
    assert api.get(f"/courses/{course['course_no']}")["seats_left"] == 0
