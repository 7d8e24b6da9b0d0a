"""Domain errors; the API maps each kind to one HTTP status."""

from typing import TypeVar


class DomainError(Exception):
    """Base of the errors a handler raises on purpose."""

    # The error body's "status": the HTTP status's phrase unless a kind names its own.
    reason: str | None = None

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class NotFound(DomainError):
    """404: no such resource."""


T = TypeVar("T")


def found(value: T | None, what: str) -> T:
    """`value`, or NotFound naming `what` when there is none."""
    if value is None:
        raise NotFound(f"{what} not found")
    return value


class Conflict(DomainError):
    """409: the resource's state forbids the command."""


class SoldOut(Conflict):
    """409 SOLD_OUT: the course has no seat left (SPEC 11)."""

    reason = "SOLD_OUT"

    def __init__(self, message: str = "정원이 마감되었습니다"):
        super().__init__(message)


class InvalidInput(DomainError):
    """422: the input is well-formed but not acceptable."""


class Unavailable(DomainError):
    """503: try again later."""

    def __init__(self, message: str, retry_after_s: int = 5):
        super().__init__(message)
        self.retry_after_s = retry_after_s
