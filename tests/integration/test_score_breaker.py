"""SPEC 6: the breaker fails fast while the orders side keeps failing, and all API processes
share its state (through Redis)."""

import dataclasses
import time
import uuid

import pytest
import redis

from app.evaluation.handlers import ScoreUnavailable
from app.evaluation.score_chain import BREAKER_FAIL_MAX, CeleryScoreChain, make_breaker
from tests.conftest import REDIS_URL


class SilentResult:
    """A chain whose orders side never answers."""

    def get(self, timeout, **kwargs):
        time.sleep(timeout)
        from celery.exceptions import TimeoutError

        raise TimeoutError()

    def forget(self):
        pass


class SilentCelery:
    def __init__(self):
        self.sent = 0

    def signature(self, *args, **kwargs):
        return self

    def __or__(self, other):
        return self

    def apply_async(self):
        self.sent += 1
        return SilentResult()


@pytest.fixture
def settings(it_settings):
    return dataclasses.replace(
        it_settings, score_sync_timeout_s=0.2, broker_url=REDIS_URL, result_backend=REDIS_URL
    )


@pytest.fixture
def namespace():
    # A namespace of its own, so no other test's failures count here.
    name = f"test-breaker-{uuid.uuid4()}"
    yield name
    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(f"*{name}*"):
        client.delete(key)


def test_after_repeated_timeouts_every_api_process_fails_fast(settings, namespace):
    celery = SilentCelery()
    process_a = CeleryScoreChain(celery, settings, make_breaker(settings, namespace))
    process_b = CeleryScoreChain(
        celery, settings, make_breaker(settings, namespace)
    )  # another process
    for _ in range(BREAKER_FAIL_MAX):
        with pytest.raises(ScoreUnavailable):
            process_a.run("O1", 1, 80)
    sent = celery.sent
    started = time.monotonic()
    with pytest.raises(ScoreUnavailable) as caught:
        process_b.run("O1", 1, 80)
    assert time.monotonic() - started < 0.1  # no wait for the guard
    assert celery.sent == sent  # nothing was sent while open
    assert caught.value.retry_after_s >= 1
