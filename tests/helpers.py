"""Helpers shared by the test suites: random ids, polling with a deadline, sample data."""

from __future__ import annotations

import dataclasses
import random
import secrets
from collections.abc import Callable
from datetime import date
from typing import Any, TypeVar

from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_fixed

T = TypeVar("T")


def random_phone() -> str:
    # 010-2000 to 010-4999 are all assigned (libphonenumber refuses e.g. 010-597x as unused).
    return f"010-{random.randint(2000, 4999)}-{random.randint(1000, 9999)}"


def random_course_no() -> str:
    return "C" + secrets.token_hex(4).upper()


def an_order(container: Any, phone: str | None = None) -> Any:
    """A new course and an order of it, through the orders context's handlers (its events in
    the outbox, not yet delivered)."""
    from app.orders import handlers  # the app's, only for the suites that need a container

    course_no = random_course_no()
    handlers.create_course(
        container.orders_uow(),
        handlers.CreateCourse(course_no=course_no, title="데이터 분석", price=1000),
    )
    order, _ = handlers.place_order(
        container.orders_uow(),
        handlers.PlaceOrder(
            course_no, phone or random_phone(), date(2026, 12, 1), date(2026, 12, 31)
        ),
    )
    return order


def random_category() -> str:
    """A category of one test's own: a search within it answers only that test's courses."""
    return "cat-" + secrets.token_hex(4)


def eventually(check: Callable[[], T], timeout_s: float = 15.0, interval_s: float = 0.1) -> T:
    """Call `check` until it stops raising AssertionError, or fail with its last error."""
    for attempt in Retrying(
        stop=stop_after_delay(timeout_s),
        wait=wait_fixed(interval_s),
        retry=retry_if_exception_type(AssertionError),
        reraise=True,
    ):
        with attempt:
            return check()
    raise AssertionError("unreachable")


def with_token(test_client, token: str):
    """A Flask test client that sends `token` as its Bearer token on every request."""
    test_client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return test_client


def course_body(**overrides) -> dict:
    body = {
        "course_no": random_course_no(),
        "title": "파이썬 입문",
        "description": "Python basics for beginners",
        "category": "programming",
        "price": 30000,
    }
    body.update(overrides)
    return body


def order_body(course: str, **overrides) -> dict:
    body = {
        "course_no": course,
        "phone": random_phone(),
        "begin_date": date(2026, 12, 1).isoformat(),
        "end_date": date(2027, 2, 28).isoformat(),
    }
    body.update(overrides)
    return body


def counting(policy: Any) -> tuple[Any, list[str]]:
    """The real policy, recording the events its handler actually applies."""
    handled: list[str] = []

    def handle(uow, events):
        handled.extend(event.event_id for event in events)
        policy.handle(uow, events)

    return dataclasses.replace(policy, handle=handle), handled
