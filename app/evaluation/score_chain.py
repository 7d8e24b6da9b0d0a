"""The Celery adapter of ScoreChain: send the chain, wait under the guard, trip the breaker."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pybreaker
from celery import Celery
from celery.exceptions import TimeoutError as CeleryTimeout

from app.config import Settings
from app.evaluation.handlers import ScoreUnavailable
from app.observability import SCORE_BREAKER_REFUSALS

BREAKER_FAIL_MAX = 3
BREAKER_RESET_S = 10


class OrdersSideDown(Exception):
    """The chain did not answer within the guard: counted by the breaker."""


class CeleryScoreChain:
    def __init__(self, celery: Celery, settings: Settings, breaker: pybreaker.CircuitBreaker):
        self.celery = celery
        self.timeout_s = settings.score_sync_timeout_s
        self.breaker = breaker

    def run(self, order_no: str, evaluation_id: int, score: int) -> str:
        try:
            return self.breaker.call(self._send_and_wait, order_no, evaluation_id, score)
        except pybreaker.CircuitBreakerError:
            SCORE_BREAKER_REFUSALS.inc()
            raise ScoreUnavailable("the orders side keeps failing", BREAKER_RESET_S) from None
        except OrdersSideDown:
            raise ScoreUnavailable(
                "the orders side did not answer in time", max(1, round(self.timeout_s))
            ) from None

    def _send_and_wait(self, order_no: str, evaluation_id: int, score: int) -> str:
        deadline = time.time() + self.timeout_s
        # Messages not started by then are discarded by the workers (and the steps check
        # the deadline themselves, whatever the clock of the broker).
        expires = datetime.now(UTC) + timedelta(seconds=self.timeout_s)
        # The reprs (what monitors show of the arguments) are given, not made by Celery's
        # saferepr, here and in the worker that sends the second step.
        kwargs = {"order_no": order_no, "evaluation_id": evaluation_id, "score": score}
        chain = self.celery.signature(
            "orders.register_score",
            queue="orders",
            expires=expires,
            kwargs={**kwargs, "deadline": deadline},
            argsrepr="()",
            kwargsrepr=repr(kwargs),
        ) | self.celery.signature(
            "evaluation.finalize",
            queue="evaluation",
            expires=expires,
            argsrepr="(the order step's answer,)",
            kwargsrepr="{}",
        )
        result = chain.apply_async()
        timed_out = False
        try:
            # Only the last step's result is read: a step that fails for good stores its
            # error on every step after it (Celery's chain failure propagation), so following
            # the parents would only add a Redis read per step and per interval.
            answer: dict[str, str] = result.get(  # the last step's return value
                timeout=max(0.01, deadline - time.time()),
                interval=0.02,
                propagate=True,
                follow_parents=False,
                disable_sync_subtasks=False,
            )
        except CeleryTimeout:
            timed_out = True
            raise OrdersSideDown() from None
        except Exception as exc:  # noqa: BLE001 - a step failed for good (retries exhausted)
            raise OrdersSideDown(f"{exc.__class__.__name__}") from exc
        finally:
            # A timed-out caller forgets the chain, to stop listening for it. An answer that
            # came is deleted only where it would stay for ever (the embedded SQLite backend):
            # Redis expires it (result_expires), which spares every final two round trips.
            if timed_out or not result.backend.supports_autoexpire:
                result.forget()
        return answer["outcome"]


def make_breaker(
    settings: Settings, namespace: str = "onlinestudy:score-breaker"
) -> pybreaker.CircuitBreaker:
    """Shared by every API process through Redis when there is one; else per process."""
    storage = None
    for url in (settings.broker_url, settings.result_backend):
        if url.startswith(("redis://", "rediss://")):
            import redis

            storage = pybreaker.CircuitRedisStorage(
                pybreaker.STATE_CLOSED,
                redis.Redis.from_url(url, socket_timeout=0.5),
                namespace=namespace,
            )
            break
    return pybreaker.CircuitBreaker(
        fail_max=BREAKER_FAIL_MAX,
        reset_timeout=BREAKER_RESET_S,
        state_storage=storage,
        name="orders-score",
        exclude=[ScoreUnavailable],
    )
