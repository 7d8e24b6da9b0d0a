"""What the outbox tells the relay: the NOTIFY channel and the payloads sent on it."""

from __future__ import annotations

from collections.abc import Iterable

NOTIFY_CHANNEL = "onlinestudy_outbox"
# Payloads of the NOTIFYs: a commit names the consumers it gave deliveries to; a worker names
# the consumer whose task ended.
NEW_WORK = "new:"
TASK_DONE = "done:"


def new_work(consumers: Iterable[str]) -> str:
    """Names the consumers with a delivery due now; with none, no NOTIFY is sent."""
    return NEW_WORK + ",".join(sorted(set(consumers)))
