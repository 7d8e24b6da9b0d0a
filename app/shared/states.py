"""The state names of orders, learnings, evaluations and SMS messages (SPEC 3): one vocabulary
for the context that owns each state and for the read models that show it."""

from enum import StrEnum


class OrderStatus(StrEnum):
    ORDERED = "ORDERED"
    COMPLETED = "COMPLETED"
    CANCELLED = "CANCELLED"


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
