"""What the load generator was told: each order it tried to place and each command it sent
about it, with every HTTP answer (None when no answer came: refused, reset or timed out)."""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, field

INDETERMINATE = "indeterminate"


def _unanswered(status: int | None) -> bool:
    """No answer, or a server error that may have come after the commit."""
    return status is None or (status >= 500 and status != 503)


@dataclass
class Command:
    """A record, a final score or a cancel, with every answer to its (retried) request."""

    kind: str  # "record" | "final" | "cancel"
    score: int | None = None
    answers: list[int | None] = field(default_factory=list)

    @property
    def outcome(self) -> str:
        """ "ok", "conflict", "refused" or "indeterminate" (it may or may not have happened)."""
        if any(a in (200, 201) for a in self.answers):
            return "ok"
        if 409 in self.answers:
            return "conflict"
        # A 503 on the final score may come after the order step ran (SPEC 6): indeterminate.
        if self.kind == "final" or any(_unanswered(a) for a in self.answers):
            return INDETERMINATE
        return "refused"


@dataclass
class OrderHistory:
    """One order the client tried to place (one Idempotency-Key), and what it did with it."""

    key: str
    phone: str
    course_no: str
    answers: list[int | None] = field(default_factory=list)
    order_no: str | None = None  # from the 201
    probe: bool = False
    commands: list[Command] = field(default_factory=list)

    @property
    def outcome(self) -> str:
        """ "accepted" (a 201), "refused" (only definite refusals) or "indeterminate"."""
        if self.order_no:
            return "accepted"
        if any(_unanswered(a) for a in self.answers):
            return INDETERMINATE
        return "refused"

    def attempted(self, kind: str) -> list[Command]:
        return [c for c in self.commands if c.kind == kind]


class History:
    """The load's record, shared by its threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.orders: list[OrderHistory] = []

    def new_order(self, key: str, phone: str, course_no: str, probe: bool = False) -> OrderHistory:
        order = OrderHistory(key, phone, course_no, probe=probe)
        with self._lock:
            self.orders.append(order)
        return order

    def snapshot(self) -> list[OrderHistory]:
        with self._lock:
            return list(self.orders)

    def to_json(self) -> list[dict]:
        return [asdict(order) for order in self.snapshot()]
