"""The Celery queues, one per context (SPEC section 2)."""

from enum import StrEnum


class Queue(StrEnum):
    ORDERS = "orders"
    LEARNING = "learning"
    EVALUATION = "evaluation"
    NOTIFICATION = "notification"
    MYPAGE = "mypage"
