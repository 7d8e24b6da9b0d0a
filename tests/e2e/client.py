"""A small HTTP client for the e2e tests: what a student app or manager console would call."""

from __future__ import annotations

import requests

from tests.helpers import course_body, eventually, order_body, random_phone


class Client:
    def __init__(self, base_url: str, token: str):
        self.base_url = base_url
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Bearer {token}"

    def post(self, path: str, body: dict | None = None, expect: int | None = None):
        response = self.http.post(f"{self.base_url}{path}", json=body or {}, timeout=15)
        if expect is not None:
            assert response.status_code == expect, (path, response.status_code, response.text)
        return response

    def get(self, path: str, **params):
        response = self.http.get(f"{self.base_url}{path}", params=params, timeout=15)
        assert response.status_code == 200, (path, response.text)
        return response.json()

    def one(self, path: str, **params) -> dict:
        items = self.get(path, **params)
        assert len(items) == 1, (path, params, items)
        return items[0]

    # The steps of the story

    def a_manager(self, name: str) -> dict:
        return self.post("/managers", {"name": name, "phone": random_phone()}, expect=201).json()

    def an_order(self, phone: str | None = None, **course) -> dict:
        created = self.post("/courses", course_body(**course), expect=201).json()
        return self.post(
            "/orders", order_body(created["course_no"], phone=phone or random_phone()), expect=201
        ).json()

    def its_evaluation(self, order: dict, timeout_s: float = 30) -> dict:
        def opened():
            return self.one("/evaluations", order_no=order["order_no"])

        return eventually(opened, timeout_s=timeout_s)
