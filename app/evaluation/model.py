"""Evaluations and their records, and the events they raise."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.shared.db.base import MainBase, UTCDateTime, utcnow
from app.shared.errors import Conflict
from app.shared.events import Aggregate, Event, EventType
from app.shared.states import EvaluationStatus


class EvaluationRecord(MainBase):
    __tablename__ = "evaluation_records"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    evaluation_id: Mapped[int] = mapped_column(ForeignKey("evaluation_evaluations.id"), index=True)
    score: Mapped[int] = mapped_column(Integer)
    comment: Mapped[str] = mapped_column(Text, default="")
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Evaluation(MainBase, Aggregate):
    __tablename__ = "evaluation_evaluations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    order_no: Mapped[str] = mapped_column(String(32), unique=True)
    learning_id: Mapped[int | None] = mapped_column(Integer)
    phone: Mapped[str | None] = mapped_column(String(20))
    course_no: Mapped[str | None] = mapped_column(String(32))
    manager_id: Mapped[int | None] = mapped_column(Integer, index=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    final_score: Mapped[int | None] = mapped_column(Integer)
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime())
    finalized_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    cancelled_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    records: Mapped[list[EvaluationRecord]] = relationship(
        order_by=EvaluationRecord.id, lazy="selectin"
    )

    @classmethod
    def open(
        cls,
        order_no: str,
        learning_id: int | None,
        phone: str | None,
        course_no: str | None,
        manager_id: int | None,
    ) -> Evaluation:
        return cls(
            order_no=order_no,
            learning_id=learning_id,
            phone=phone,
            course_no=course_no,
            manager_id=manager_id,
            status=EvaluationStatus.IN_PROGRESS,
            opened_at=utcnow(),
            records=[],
        )

    @classmethod
    def cancelled_before_opening(cls, order_no: str, phone: str | None) -> Evaluation:
        """A tombstone: the learning was cancelled before this evaluation could open."""
        now = utcnow()
        return cls(
            order_no=order_no,
            phone=phone,
            status=EvaluationStatus.CANCELLED,
            opened_at=now,
            cancelled_at=now,
            records=[],
        )

    def add_record(self, score: int, comment: str) -> EvaluationRecord:
        if self.status != EvaluationStatus.IN_PROGRESS:
            raise Conflict(f"evaluation {self.id} is {self.status}, records need IN_PROGRESS")
        entry = EvaluationRecord(score=score, comment=comment, recorded_at=utcnow())
        self.records.append(entry)
        self._announce(
            EventType.EVALUATION_RECORDED,
            {"score": score, "comment": comment, "recorded_at": entry.recorded_at.isoformat()},
        )
        return entry

    def finalize(self, score: int) -> bool:
        """Make the evaluation FINAL with `score` (the order already holds it). True if changed;
        the same score again is a no-op, another score a conflict."""
        if self.status == EvaluationStatus.FINAL:
            if self.final_score != score:
                raise Conflict(f"evaluation {self.id} is already final with another score")
            return False
        if self.status == EvaluationStatus.CANCELLED:
            raise Conflict(f"evaluation {self.id} is cancelled")
        self.status = EvaluationStatus.FINAL
        self.final_score = score
        self.finalized_at = utcnow()
        self._announce(EventType.FINAL_EVALUATION_REGISTERED, {"score": score})
        return True

    def cancel(self) -> bool:
        if self.status != EvaluationStatus.IN_PROGRESS:
            return False  # already cancelled; a final evaluation is never cancelled
        self.status = EvaluationStatus.CANCELLED
        self.cancelled_at = utcnow()
        return True

    def _announce(self, event_type: EventType, extra: dict[str, Any]) -> None:
        self.raise_event(
            Event(
                event_type,
                self.order_no,
                {
                    "evaluation_id": self.id,
                    "order_no": self.order_no,
                    "phone": self.phone,
                    "course_no": self.course_no,
                    **extra,
                },
            )
        )
