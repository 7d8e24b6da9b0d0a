"""Hostile input over real HTTP (gunicorn, real workers): a clear 4xx, never a 500, nothing
changed, and the system goes on serving."""

from __future__ import annotations

import json

import pytest
import requests

from tests.e2e.client import Client
from tests.helpers import course_body

DEEP = "[" * 3000 + "]" * 3000


@pytest.fixture
def api(system) -> Client:
    return Client(system.base_url, system.admin_token)


def send(api: Client, method: str, path: str, body: str, token: bool = True):
    headers: dict[str, str | None] = {"Content-Type": "application/json"}
    if not token:
        headers["Authorization"] = None  # requests leaves out a header set to None
    return api.http.request(
        method, f"{api.base_url}{path}", data=body.encode(), headers=headers, timeout=15
    )


def test_a_deeply_nested_body_gets_400_or_is_ignored_and_never_passes_the_token_check(api):
    assert send(api, "GET", "/health/live", DEEP, token=False).status_code == 200
    assert send(api, "POST", "/courses", DEEP, token=False).status_code == 401
    refused = send(api, "POST", "/courses", DEEP)
    assert refused.status_code == 400 and refused.json()["code"] == 400
    assert requests.get(f"{api.base_url}/health/ready", timeout=5).ok


def test_surrogates_and_huge_numbers_are_4xx_and_store_nothing(api):
    course = course_body(title="\ud800")
    as_sent = json.dumps(course)  # the surrogate travels as the escape \ud800
    assert send(api, "POST", "/courses", as_sent).status_code == 422
    assert api.http.get(f"{api.base_url}/courses/{course['course_no']}").status_code == 404
    price = send(
        api, "POST", "/courses", as_sent.replace('"price": 30000', '"price": ' + "9" * 5000)
    )
    assert price.status_code == 422
    # In a query string a surrogate can only be the bytes UTF-8 would give it: not UTF-8.
    search = api.http.get(f"{api.base_url}/courses?q=%ED%A0%80", timeout=15)
    assert search.status_code < 500
    record = send(api, "POST", "/evaluations/1/records", '{"score": ' + "9" * 5000 + "}")
    assert record.status_code == 422
    api.a_manager("오매니저")  # and the API goes on serving (201)
