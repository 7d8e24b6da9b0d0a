"""The state names of orders, learnings, evaluations and SMS messages (SPEC 3): one vocabulary
for the context that owns each state and for the read models that show it."""

from enum import StrEnum


class OrderStatus(StrEnum):
    WAITLISTED = "WAITLISTED"  # on a full course, waiting for a seat (SPEC 11)
    ORDERED = "ORDERED"
    COMPLETED = "COMPLETED"
    CANCELLED = "CANCELLED"


# The orders that hold a seat of their course (SPEC 11).
SEAT_HOLDING = (OrderStatus.ORDERED, OrderStatus.COMPLETED)
# The orders a phone may have only one of per course at a time.
LIVE_ORDER = (OrderStatus.ORDERED, OrderStatus.WAITLISTED)


class LearningStatus(StrEnum):
    WAITING = "WAITING"
    STARTED = "STARTED"
    COMPLETED = "COMPLETED"
    CANCELLED = "CANCELLED"


class EvaluationStatus(StrEnum):
    IN_PROGRESS = "IN_PROGRESS"
    FINAL = "FINAL"
    CANCELLED = "CANCELLED"


class SmsStatus(StrEnum):
    PENDING = "PENDING"
    SENT = "SENT"
    FAILED = "FAILED"
