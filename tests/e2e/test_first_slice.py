"""The first slice on real processes: order -> learning -> SMS -> My page, and nothing lost."""

from __future__ import annotations

import time

import redis
import requests

from tests.e2e.conftest import E2E_REDIS_URL
from tests.helpers import course_body, eventually, order_body, random_phone


def _auth(system) -> dict:
    return {"Authorization": f"Bearer {system.admin_token}"}


def post(system, path, body):
    response = requests.post(
        f"{system.base_url}{path}", json=body, timeout=10, headers=_auth(system)
    )
    assert response.status_code == 201, response.text
    return response.json()


def get(system, path, **params):
    response = requests.get(
        f"{system.base_url}{path}", params=params, timeout=10, headers=_auth(system)
    )
    assert response.status_code == 200, response.text
    return response.json()


def everything_arrived(system, order_no, phone, manager_name):
    def check():
        learnings = get(system, "/learnings", order_no=order_no)
        assert len(learnings) == 1
        learning = learnings[0]
        assert learning["status"] == "STARTED" and learning["manager_name"] == manager_name
        sms = get(system, "/sms", phone=phone)
        assert sorted((m["event_type"], m["status"]) for m in sms) == [
            ("CourseOrdered", "SENT"),
            ("LearningStarted", "SENT"),
        ]
        rows = get(system, f"/mypage/{phone}")
        assert len(rows) == 1
        row = rows[0]
        assert (
            row["order_no"],
            row["order_status"],
            row["learning_status"],
            row["manager_name"],
        ) == (order_no, "ORDERED", "STARTED", manager_name)
        return row

    return eventually(check, timeout_s=30)


def test_given_a_manager_when_a_student_orders_then_learning_sms_and_my_page_follow(system):
    manager = post(system, "/managers", {"name": "서매니저", "phone": random_phone()})
    course = post(system, "/courses", course_body(title="자료구조"))
    phone = random_phone()
    order = post(system, "/orders", order_body(course["course_no"], phone=phone))

    row = everything_arrived(system, order["order_no"], phone, manager["name"])
    assert row["course_title"] == "자료구조"
    assert row["begin_date"] == order["begin_date"]
    time.sleep(1)  # nothing more turns up later: no duplicate SMS
    assert len(get(system, "/sms", phone=phone)) == 2


def test_given_the_broker_loses_its_messages_then_the_outbox_delivers_them_again(system):
    """Redis restarted without persistence while the workers were down."""
    manager = post(system, "/managers", {"name": "유매니저", "phone": random_phone()})
    course = post(system, "/courses", course_body())
    system.stop("worker-others")
    phone = random_phone()
    order = post(system, "/orders", order_body(course["course_no"], phone=phone))
    broker = redis.Redis.from_url(E2E_REDIS_URL)
    eventually(lambda: _assert(broker.llen("learning") >= 1), timeout_s=10)
    broker.flushdb()  # everything queued is gone, as after a restart without persistence
    system.start_worker("others")
    everything_arrived(system, order["order_no"], phone, manager["name"])
    assert len(get(system, "/sms", phone=phone)) == 2


def _assert(condition: bool) -> None:
    assert condition
