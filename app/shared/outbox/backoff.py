"""The one backoff of the outbox: how long a delivery waits before its next attempt."""

from __future__ import annotations

# The delay doubles with each attempt up to this many times, then stays: a consumer that is down
# for long is neither flooded with copies nor left waiting for hours once it is back.
MAX_DOUBLINGS = 4


def backoff_s(base_s: float, attempt: int) -> float:
    """Seconds before the next attempt after `attempt` earlier ones (0 for the first)."""
    return float(base_s) * 2.0 ** min(attempt, MAX_DOUBLINGS)


def backoff_schedule_s(base_s: float) -> list[float]:
    """backoff_s for attempts 0..MAX_DOUBLINGS, for SQL to index by attempt (the last entry
    holds for every later attempt)."""
    return [backoff_s(base_s, attempt) for attempt in range(MAX_DOUBLINGS + 1)]
