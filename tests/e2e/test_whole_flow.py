"""The whole flow on real workers: final score (SPEC 6), cancel cascade, isolation, overload."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis

from tests.e2e.client import Client
from tests.e2e.conftest import E2E_REDIS_URL
from tests.helpers import eventually, random_phone


@pytest.fixture
def api(system) -> Client:
    return Client(system.base_url, system.admin_token)


def test_given_an_evaluation_when_the_final_score_is_given_then_it_is_on_the_order_at_once(api):
    api.a_manager("송매니저")
    phone = random_phone()
    order = api.an_order(phone, title="머신러닝")
    evaluation = api.its_evaluation(order)
    api.post(
        f"/evaluations/{evaluation['id']}/records", {"score": 72, "comment": "성실함"}, expect=201
    )
    final = api.post(f"/evaluations/{evaluation['id']}/final", {"score": 91}, expect=200).json()
    assert (final["status"], final["final_score"]) == ("FINAL", 91)
    assert [(r["score"], r["comment"]) for r in final["records"]] == [(72, "성실함")]
    placed = api.get(f"/orders/{order['order_no']}")
    assert (placed["status"], placed["score"]) == ("COMPLETED", 91)  # at that same moment

    def everyone_agrees():
        assert api.one("/learnings", order_no=order["order_no"])["status"] == "COMPLETED"
        row = api.one(f"/mypage/{phone}")
        assert (
            row["order_status"],
            row["learning_status"],
            row["evaluation_status"],
            row["latest_score"],
            row["final_score"],
        ) == ("COMPLETED", "COMPLETED", "FINAL", 72, 91)
        texts = [m["message"] for m in api.get("/sms", phone=phone)]
        assert len(texts) == 3 and any("수료" in t and "91" in t for t in texts)

    eventually(everyone_agrees)
    api.post(f"/evaluations/{evaluation['id']}/final", {"score": 91}, expect=200)
    api.post(f"/evaluations/{evaluation['id']}/final", {"score": 90}, expect=409)
    api.post(f"/orders/{order['order_no']}/cancel", expect=409)
    # The chain's answers stay in Redis only a while: each one expires on its own.
    broker = redis.Redis.from_url(E2E_REDIS_URL)
    answers = list(broker.scan_iter("celery-task-meta-*"))
    assert answers and all(0 < broker.ttl(key) <= 600 for key in answers)


def test_given_the_orders_worker_down_the_final_score_is_503_in_time_then_200_when_back(
    api, system
):
    api.a_manager("오매니저")
    order = api.an_order()
    evaluation = api.its_evaluation(order)
    system.stop("worker-orders")
    try:
        started = time.monotonic()
        response = api.post(f"/evaluations/{evaluation['id']}/final", {"score": 70}, expect=503)
        elapsed = time.monotonic() - started
        assert elapsed < 2 + 1, elapsed  # SCORE_SYNC_TIMEOUT_S=2 in the e2e system
        assert int(response.headers["Retry-After"]) >= 1
        assert api.get(f"/evaluations/{evaluation['id']}")["status"] == "IN_PROGRESS"
        assert api.get(f"/orders/{order['order_no']}")["status"] == "ORDERED"
    finally:
        system.start_worker("orders")

    # Back: another score is taken, so the expired chain of 70 never ran (it would conflict).
    def taken():
        response = api.post(f"/evaluations/{evaluation['id']}/final", {"score": 85})
        assert response.status_code == 200, response.text
        return response.json()

    assert eventually(taken, timeout_s=60, interval_s=1)["final_score"] == 85
    assert api.get(f"/orders/{order['order_no']}")["score"] == 85


def test_given_the_orders_step_failing_for_good_the_final_score_is_503_before_the_guard(
    api, system
):
    api.a_manager("조매니저")
    order = api.an_order()
    evaluation = api.its_evaluation(order)
    # A long guard, so that answering at the guard and answering at the failure differ.
    patient = Client(system.start_api("api-patient", SCORE_SYNC_TIMEOUT_S="12"), system.admin_token)
    system.stop("worker-orders")
    # The only orders worker now has a database that refuses every connection: each try of
    # the step fails, and after its quick retries the step fails for good.
    system.start(
        "worker-orders-broken",
        "-m",
        "app.cli",
        "worker",
        "--queues",
        "orders",
        "--concurrency",
        "1",
        DATABASE_URL="postgresql+psycopg://postgres@127.0.0.1:1/nowhere",
    )
    try:
        started = time.monotonic()
        response = patient.post(f"/evaluations/{evaluation['id']}/final", {"score": 77}, expect=503)
        assert time.monotonic() - started < 12 - 4  # the worker's start, then ~1 s of retries
        assert int(response.headers["Retry-After"]) >= 1
        assert api.get(f"/evaluations/{evaluation['id']}")["status"] == "IN_PROGRESS"
        assert api.get(f"/orders/{order['order_no']}")["status"] == "ORDERED"
    finally:
        system.stop("worker-orders-broken")
        system.stop("api-patient")
        system.start_worker("orders")

    def taken():  # once the good worker is up
        response = api.post(f"/evaluations/{evaluation['id']}/final", {"score": 77})
        assert response.status_code == 200, response.text

    eventually(taken, timeout_s=60, interval_s=1)
    assert api.get(f"/orders/{order['order_no']}")["score"] == 77


def test_cancel_racing_the_final_score_fifty_times_exactly_one_wins_and_all_agree(api):
    api.a_manager("백매니저")
    orders = [api.an_order() for _ in range(50)]
    evaluations = [api.its_evaluation(order) for order in orders]

    def race(pair):
        order, evaluation = pair
        with ThreadPoolExecutor(2) as pool:
            final = pool.submit(api.post, f"/evaluations/{evaluation['id']}/final", {"score": 77})
            cancel = pool.submit(api.post, f"/orders/{order['order_no']}/cancel")
            return final.result().status_code, cancel.result().status_code

    with ThreadPoolExecutor(5) as pool:
        answers = list(pool.map(race, zip(orders, evaluations, strict=True)))

    for order, (final, cancel) in zip(orders, answers, strict=True):
        status = api.get(f"/orders/{order['order_no']}")["status"]
        if cancel == 200:
            assert status == "CANCELLED" and final in (409, 503), (final, cancel)
        else:
            assert cancel == 409 and status == "COMPLETED", (final, cancel, status)
            assert final in (200, 503)  # a 503 whose order step ran converges below

    def all_agree():
        for order in orders:
            status = api.get(f"/orders/{order['order_no']}")["status"]
            learning = api.one("/learnings", order_no=order["order_no"])["status"]
            evaluation = api.one("/evaluations", order_no=order["order_no"])
            row = api.one(f"/mypage/{order['phone']}")
            expected = (
                ("COMPLETED", "FINAL") if status == "COMPLETED" else ("CANCELLED", "CANCELLED")
            )
            assert (learning, evaluation["status"]) == expected, order["order_no"]
            assert (row["order_status"], row["learning_status"], row["evaluation_status"]) == (
                status,
                *expected,
            )
            if status == "COMPLETED":
                assert evaluation["final_score"] == row["final_score"] == 77

    eventually(all_agree, timeout_s=60, interval_s=0.5)
    wins = [a for a in answers if a[1] == 200]
    print(f"cancel won {len(wins)} of 50 races")


def test_given_an_order_cancelled_then_learning_and_evaluation_cancel_with_sms(api):
    api.a_manager("한매니저")
    phone = random_phone()
    order = api.an_order(phone)
    api.its_evaluation(order)
    api.post(f"/orders/{order['order_no']}/cancel", expect=200)
    api.post(f"/orders/{order['order_no']}/cancel", expect=200)

    def cascaded():
        assert api.one("/learnings", order_no=order["order_no"])["status"] == "CANCELLED"
        assert api.one("/evaluations", order_no=order["order_no"])["status"] == "CANCELLED"
        row = api.one(f"/mypage/{phone}")
        assert (row["order_status"], row["learning_status"], row["evaluation_status"]) == (
            "CANCELLED",
            "CANCELLED",
            "CANCELLED",
        )
        kinds = sorted(m["event_type"] for m in api.get("/sms", phone=phone))
        assert kinds == [
            "CourseOrderCancelled",
            "CourseOrdered",
            "LearningCancelled",
            "LearningStarted",
        ]

    eventually(cascaded)


def test_given_the_evaluation_workers_down_everything_else_works_and_they_catch_up(api, system):
    api.a_manager("문매니저")
    system.stop("worker-evaluation")
    try:
        kept_phone, cancelled_phone = random_phone(), random_phone()
        kept, cancelled = api.an_order(kept_phone), api.an_order(cancelled_phone)

        def learning_started():
            assert api.one("/learnings", order_no=kept["order_no"])["status"] == "STARTED"
            assert api.one("/learnings", order_no=cancelled["order_no"])["status"] == "STARTED"

        eventually(learning_started)
        api.post(f"/orders/{cancelled['order_no']}/cancel", expect=200)

        def the_rest_works():
            assert api.one("/learnings", order_no=cancelled["order_no"])["status"] == "CANCELLED"
            assert len(api.get("/sms", phone=kept_phone)) == 2
            assert len(api.get("/sms", phone=cancelled_phone)) == 4
            assert api.one(f"/mypage/{kept_phone}")["learning_status"] == "STARTED"
            assert api.one(f"/mypage/{cancelled_phone}")["order_status"] == "CANCELLED"

        eventually(the_rest_works)
        assert api.get("/evaluations", order_no=kept["order_no"]) == []
    finally:
        system.start_worker("evaluation")

    def caught_up():
        assert api.one("/evaluations", order_no=kept["order_no"])["status"] == "IN_PROGRESS"
        assert api.one("/evaluations", order_no=cancelled["order_no"])["status"] == "CANCELLED"

    eventually(caught_up, timeout_s=40)


def test_given_the_learning_backlog_over_the_limit_orders_get_503_and_nothing_is_dropped(
    api, system
):
    api.a_manager("장매니저")
    limited = Client(
        system.start_api("api-limited", LEARNING_BACKLOG_LIMIT="2"), system.admin_token
    )
    system.stop("worker-others")  # the learning queue's worker
    try:
        accepted, refused = [], None
        for _ in range(10):
            time.sleep(0.6)  # the backlog is sampled every 0.5 s
            phone = random_phone()
            course = limited.post(
                "/courses",
                {"course_no": f"OV{phone[-4:]}{len(accepted)}", "title": "과부하", "price": 1},
                expect=201,
            ).json()
            response = limited.post(
                "/orders",
                {
                    "course_no": course["course_no"],
                    "phone": phone,
                    "begin_date": "2026-12-01",
                    "end_date": "2026-12-31",
                },
            )
            if response.status_code == 503:
                refused = response
                break
            assert response.status_code == 201, response.text
            accepted.append(response.json())
        assert refused is not None, "no order was refused"
        assert "잠시 후 다시 시도해 주세요" in refused.json()["message"]
        assert int(refused.headers["Retry-After"]) > 0
        assert len(accepted) >= 3
    finally:
        system.start_worker("others")
        system.stop("api-limited")

    def none_dropped():
        for order in accepted:
            assert api.one("/learnings", order_no=order["order_no"])["status"] == "STARTED"

    eventually(none_dropped, timeout_s=40)
