"""Flower as an operator opens it, on Redis and on RabbitMQ: the broker page and the queue
lengths, behind the basic auth that `onlinestudy flower` takes from the environment."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid

import psutil
import pytest
import requests
from celery import Celery

from chaos.cluster import RabbitVhost, RedisServer
from tests.e2e.conftest import free_port
from tests.helpers import eventually

AUTH = ("operator", f"flower-{uuid.uuid4().hex[:12]}")
WAITING = 3  # tasks sent to the mypage queue, with no worker to take them


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    """A Redis of our own: no worker of the e2e system takes the messages counted here."""
    server = RedisServer(tmp_path_factory.mktemp("flower-redis"))
    server.start()
    yield server
    server.kill()


@pytest.fixture
def rabbit_vhost():
    vhost = RabbitVhost(f"onlinestudy_flower_{uuid.uuid4().hex[:8]}")
    vhost.create()
    yield vhost
    vhost.delete()


def flower(e2e_env, broker_url: str, result_backend: str, tmp_path, stop):
    """`onlinestudy flower` on `broker_url`, with tasks waiting on the mypage queue; its base URL
    and process (stopped after the test)."""
    sender = Celery("sender")
    # Named here: CELERY_BROKER_URL in this process's environment would win over broker=.
    with sender.connection_for_write(broker_url) as connection:
        for _ in range(WAITING):
            sender.send_task("mypage.project", args=[[]], queue="mypage", connection=connection)
    sender.close()
    port = free_port()
    env = dict(
        e2e_env,
        CELERY_BROKER_URL=broker_url,
        CELERY_RESULT_BACKEND=result_backend,
        ONLINESTUDY_VAR_DIR=str(tmp_path),
        FLOWER_BASIC_AUTH=":".join(AUTH),
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "flower", "--port", str(port)],
        env=env,
        stdout=open(tmp_path / "flower.log", "wb"),  # noqa: SIM115 - kept open for the child
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    stop(process)
    base_url = f"http://127.0.0.1:{port}"
    eventually(lambda: healthy(base_url), timeout_s=60)
    return base_url, process


def healthy(base_url: str) -> None:
    try:
        assert requests.get(f"{base_url}/healthcheck", timeout=2).text == "OK"
    except requests.RequestException as exc:  # not listening yet
        raise AssertionError("Flower not up yet") from exc


@pytest.fixture
def stop():
    started: list[subprocess.Popen] = []
    yield started.append
    for process in started:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:  # one whose broker is gone retries for ever
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def queue_lengths(base_url: str) -> dict[str, int | None]:
    answer = requests.get(f"{base_url}/api/queues/length", auth=AUTH, timeout=10)
    assert answer.status_code == 200, answer.text
    # RabbitMQ's management API leaves the count out until its statistics have caught up.
    return {q["name"]: q.get("messages") for q in answer.json()["active_queues"]}


def assert_what_an_operator_sees(base_url: str, process: subprocess.Popen) -> None:
    # Nothing without the password, except the two paths Flower leaves open (README).
    assert requests.get(f"{base_url}/broker", timeout=10).status_code == 401
    assert requests.get(f"{base_url}/api/queues/length", timeout=10).status_code == 401
    assert requests.get(f"{base_url}/healthcheck", timeout=10).text == "OK"

    def waiting() -> dict[str, int]:
        lengths = queue_lengths(base_url)
        assert lengths.get("mypage") == WAITING, lengths
        return lengths

    lengths = eventually(waiting, timeout_s=30)  # RabbitMQ's statistics lag a few seconds
    assert all(count == 0 for name, count in lengths.items() if name != "mypage"), lengths
    page = requests.get(f"{base_url}/broker", auth=AUTH, timeout=10)
    assert page.status_code == 200, page.text
    assert "mypage" in page.text and "not supported" not in page.text
    # The password is in the environment, not on the command line the process list shows.
    everything = [process, *psutil.Process(process.pid).children(recursive=True)]
    for proc in everything:
        assert AUTH[1] not in " ".join(psutil.Process(proc.pid).cmdline())


def test_flower_shows_the_queue_lengths_on_redis(e2e_env, redis_server, tmp_path, stop):
    base_url, process = flower(e2e_env, redis_server.url(0), redis_server.url(1), tmp_path, stop)
    assert_what_an_operator_sees(base_url, process)
    # Every queue of the system is listed, the empty ones at 0.
    assert set(queue_lengths(base_url)) == {
        "orders",
        "learning",
        "evaluation",
        "notification",
        "mypage",
    }


def test_flower_shows_the_queue_lengths_on_rabbitmq(
    e2e_env, redis_server, rabbit_vhost, tmp_path, stop
):
    # The result backend stays Redis with RabbitMQ (README, running modes).
    base_url, process = flower(e2e_env, rabbit_vhost.url, redis_server.url(1), tmp_path, stop)
    assert_what_an_operator_sees(base_url, process)
