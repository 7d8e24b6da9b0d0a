"""Commands and policies of the evaluation context, and the synchronous final score."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from app.evaluation.model import Evaluation, EvaluationRecord
from app.evaluation.repository import EvaluationRepository
from app.shared.errors import Conflict, Unavailable, found
from app.shared.events import Event
from app.shared.states import EvaluationStatus
from app.shared.uow import UnitOfWork, each_correlated

if TYPE_CHECKING:
    from app.evaluation.repository import EvaluationState


class EvaluationUnitOfWork(UnitOfWork):
    evaluations: EvaluationRepository

    def __enter__(self) -> EvaluationUnitOfWork:
        super().__enter__()
        self.evaluations = EvaluationRepository(self.session)
        return self


class ScoreOutcome:
    """What the score chain answers (SPEC 6)."""

    COMPLETED = "completed"  # order COMPLETED and evaluation FINAL with the score
    ORDER_CANCELLED = "order_cancelled"
    ORDER_CONFLICT = "order_conflict"  # the order is completed with another score
    EVALUATION_CONFLICT = "evaluation_conflict"
    EXPIRED = "expired"  # the guard had fired before the order step began


class ScoreChain(Protocol):
    """The one synchronous call between contexts: orders registers, then evaluation finalizes."""

    def run(self, order_no: str, evaluation_id: int, score: int) -> str:
        """Return a ScoreOutcome; raise ScoreUnavailable when the orders side does not answer."""


class ScoreUnavailable(Exception):
    def __init__(self, reason: str, retry_after_s: int):
        super().__init__(reason)
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class RecordEvaluation:
    evaluation_id: int
    score: int
    comment: str = ""


@dataclass(frozen=True)
class RegisterFinalScore:
    evaluation_id: int
    score: int


def get_evaluation(uow: EvaluationUnitOfWork, evaluation_id: int) -> Evaluation:
    with uow.statement_by_statement():  # reads only: no BEGIN and ROLLBACK round trips
        evaluation = found(uow.evaluations.get(evaluation_id), f"evaluation {evaluation_id}")
        return evaluation


def record_evaluation(uow: EvaluationUnitOfWork, cmd: RecordEvaluation) -> EvaluationRecord:
    with uow:
        evaluation = found(
            uow.evaluations.get(cmd.evaluation_id, for_update=True),
            f"evaluation {cmd.evaluation_id}",
        )
        entry = evaluation.add_record(cmd.score, cmd.comment)
        uow.commit()
        return entry


def state_for_final_score(uow: EvaluationUnitOfWork, evaluation_id: int) -> EvaluationState:
    """What a final score decides on (id, order_no, manager_id, status, final_score), read
    without a lock. The view checks on it who may see the evaluation, then hands it to
    register_final_score, so that the way there reads the evaluation once."""
    with uow.statement_by_statement():
        return found(uow.evaluations.state_of(evaluation_id), f"evaluation {evaluation_id}")


def register_final_score(
    uow: EvaluationUnitOfWork,
    chain: ScoreChain,
    cmd: RegisterFinalScore,
    evaluation: EvaluationState,
) -> Evaluation:
    """SPEC 6: the order takes the score first, then the evaluation becomes FINAL; the caller
    waits for both. No database lock is held while waiting. `evaluation` is the command's
    state_for_final_score()."""
    if evaluation.status == EvaluationStatus.FINAL:
        if evaluation.final_score == cmd.score:
            return get_evaluation(uow, cmd.evaluation_id)  # the same score again: idempotent
        raise Conflict(f"evaluation {cmd.evaluation_id} is already final with another score")
    if evaluation.status == EvaluationStatus.CANCELLED:
        raise Conflict(f"evaluation {cmd.evaluation_id} is cancelled")
    try:
        outcome = chain.run(evaluation.order_no, evaluation.id, cmd.score)
    except ScoreUnavailable as exc:
        raise Unavailable(
            f"the score could not be registered now ({exc}); try again", exc.retry_after_s
        ) from None
    if outcome == ScoreOutcome.COMPLETED:
        return get_evaluation(uow, cmd.evaluation_id)
    if outcome == ScoreOutcome.ORDER_CANCELLED:
        raise Conflict(f"order {evaluation.order_no} is cancelled")
    if outcome == ScoreOutcome.EXPIRED:
        raise Unavailable("the orders side did not take the score in time; try again", 1)
    raise Conflict(f"the score conflicts with the one already registered ({outcome})")


def finalize_evaluation(uow: EvaluationUnitOfWork, evaluation_id: int, score: int) -> str:
    """Chain step 2 (the order already holds the score)."""
    with uow:
        evaluation = uow.evaluations.get(evaluation_id, for_update=True, records=False)
        if evaluation is None:
            return ScoreOutcome.EVALUATION_CONFLICT
        try:
            evaluation.finalize(score)
        except Conflict:
            return ScoreOutcome.EVALUATION_CONFLICT
        uow.commit_changed(evaluation)  # the caller waits: the update rides the outbox statement
        return ScoreOutcome.COMPLETED


# Policies: called by the consumer runner inside its transaction, with the events it has not
# handled before.


def open_evaluations(uow: EvaluationUnitOfWork, events: list[Event]) -> None:
    """On LearningStarted; a cancelled tombstone or an earlier copy stays as it is."""
    opened: dict[str, Evaluation] = {}
    for event in events:
        p = event.payload
        order_no = event.required_order_no()
        opened.setdefault(
            order_no,
            Evaluation.open(
                order_no,
                p.get("learning_id"),
                p.get("phone"),
                p.get("course_no"),
                p.get("manager_id"),
            ),
        )
    uow.evaluations.add_missing(list(opened.values()))


def cancel_evaluation(uow: EvaluationUnitOfWork, event: Event) -> None:
    """On LearningCancelled; before the evaluation opened, leave a tombstone."""
    order_no = event.required_order_no()
    evaluation = uow.evaluations.of_order(order_no)
    if evaluation is None:
        uow.evaluations.add(
            Evaluation.cancelled_before_opening(order_no, event.payload.get("phone"))
        )
        return
    evaluation.cancel()


def finalize_on_order_completed(uow: EvaluationUnitOfWork, events: list[Event]) -> None:
    """On OrderCompleted: converge after a crash or a timed-out caller (SPEC 6). On the normal
    path the chain made the evaluation FINAL before this copy came due: nothing is locked."""
    unfinished = {e.order_no: e for e in uow.evaluations.in_progress_for(_orders_of(events))}
    for event in each_correlated(uow, events):
        evaluation = unfinished.get(event.required_order_no())
        if evaluation is not None and evaluation.status == EvaluationStatus.IN_PROGRESS:
            evaluation.finalize(event.payload["score"])


def _orders_of(events: list[Event]) -> list[str]:
    return sorted({event.required_order_no() for event in events})
