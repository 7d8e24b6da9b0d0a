"""The rate limits hold as configured when several gunicorn processes serve the API, in every
mode: embedded (`onlinestudy run`), PostgreSQL + Redis, and RabbitMQ with and without Redis as
the result backend."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis
import requests

from app.config import Settings
from app.security import Tokens
from tests.e2e.conftest import E2E_REDIS_URL, embedded_env, free_port, start_embedded
from tests.helpers import course_body, eventually, order_body, random_phone

ANONYMOUS_LIMIT, ORDERS_LIMIT = 10, 5
LIMITS = {
    "RATE_LIMIT_ANONYMOUS": f"{ANONYMOUS_LIMIT}/minute",
    "RATE_LIMIT_ORDERS": f"{ORDERS_LIMIT}/minute",
}


def assert_live(base_url: str) -> None:
    try:
        assert requests.get(f"{base_url}/health/live", timeout=5).ok
    except requests.RequestException as exc:
        raise AssertionError("API not up yet") from exc


def on_two_processes(port: int, head: str, body: str, request) -> list[int]:
    """Two requests that two different API processes answer: the first, a client that sends
    its headers slowly, holds one gunicorn worker, which must leave the second to another."""
    slow = socket.create_connection(("127.0.0.1", port), timeout=30)
    with slow:
        slow.sendall(head.encode())  # all but the blank line that ends the headers
        time.sleep(0.2)  # accepted by a worker, which now waits for the rest
        answers = [request().status_code]
        slow.sendall(f"\r\n{body}".encode())
        answer = b""
        while chunk := slow.recv(65536):
            answer += chunk
    return [int(answer.split(b" ", 2)[1]), *answers]


def fire(count: int, request) -> list[int]:
    """`count` requests from 8 clients at once, each on a new connection."""
    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(lambda _: request().status_code, range(count)))


def assert_the_limits_hold(port: int, tokens: Tokens) -> None:
    base = f"http://127.0.0.1:{port}"

    def anonymous():
        return requests.get(f"{base}/courses", timeout=30)

    head = "GET /courses HTTP/1.1\r\nHost: api\r\nConnection: close\r\n"
    answers = on_two_processes(port, head, "", anonymous)
    answers += fire(3 * ANONYMOUS_LIMIT - 2, anonymous)
    assert sorted(answers) == [401] * ANONYMOUS_LIMIT + [429] * (2 * ANONYMOUS_LIMIT)

    # The limit counts orders about to be written: the same order again and again, the first
    # placed and the rest refused as a second live order of the course, until the limit.
    admin = {"Authorization": f"Bearer {tokens.issue('admin')}"}
    course = requests.post(f"{base}/courses", json=course_body(), headers=admin, timeout=30)
    assert course.status_code == 201, course.text
    phone = random_phone()
    student_token = tokens.issue("student", phone=phone)
    body = json.dumps(order_body(course.json()["course_no"], phone=phone))

    def order():
        headers = {"Authorization": f"Bearer {student_token}", "Content-Type": "application/json"}
        return requests.post(f"{base}/orders", data=body, headers=headers, timeout=30)

    head = (
        "POST /orders HTTP/1.1\r\nHost: api\r\nConnection: close\r\n"
        f"Authorization: Bearer {student_token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body.encode())}\r\n"
    )
    answers = on_two_processes(port, head, body, order) + fire(3 * ORDERS_LIMIT - 2, order)
    assert sorted(answers) == [201] + [409] * (ORDERS_LIMIT - 1) + [429] * (2 * ORDERS_LIMIT)


def test_in_the_embedded_mode_the_limits_hold_across_the_api_processes(tmp_path):
    env = dict(embedded_env(), **LIMITS)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    run = start_embedded(tmp_path, port, env)
    try:
        eventually(lambda: assert_live(base), timeout_s=60)
        token_env = dict(env, ONLINESTUDY_VAR_DIR=str(tmp_path / "var"))
        assert_the_limits_hold(port, Tokens(Settings.from_env(token_env)))
    finally:
        os.killpg(run.pid, signal.SIGINT)
        run.wait(timeout=60)


@pytest.mark.parametrize(
    "mode, settings",
    [
        ("redis", {}),
        (
            "rabbitmq",
            {"CELERY_BROKER_URL": "amqp://guest:guest@127.0.0.1:5672//"},
        ),
        (
            "rabbitmq-without-redis",
            {
                "CELERY_BROKER_URL": "amqp://guest:guest@127.0.0.1:5672//",
                "CELERY_RESULT_BACKEND": "rpc://",
            },
        ),
    ],
)
def test_with_servers_the_limits_hold_across_the_api_processes(e2e_env, tmp_path, mode, settings):
    env = dict(e2e_env, **LIMITS, **settings)
    store = redis.Redis.from_url(E2E_REDIS_URL)
    for key in store.scan_iter("LIMITS:*"):  # the counts of the mode before
        store.delete(key)
    if mode == "rabbitmq-without-redis":
        assert Settings.from_env(env).rate_limit_storage_url == "database"
    port = free_port()
    api = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "3"]
        + ["app:create_app()"],
        env=env,
        stdout=open(tmp_path / "api.log", "wb"),  # noqa: SIM115 - kept open for the child
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        eventually(lambda: assert_live(base), timeout_s=60)
        assert_the_limits_hold(port, Tokens(Settings.from_env(env)))
    finally:
        os.killpg(api.pid, signal.SIGTERM)
        api.wait(timeout=60)
