"""The My page row converges to the newest state whatever the arrival order."""

import itertools
from datetime import UTC, datetime, timedelta

from app.mypage.model import MyPageRow
from app.mypage.projection import apply
from app.shared.events import Event, EventType

T0 = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)


def history(order_no="O1", phone="010-1234-5678") -> list[Event]:
    def event(seq, event_type, **payload):
        return Event(
            event_type,
            order_no,
            {"order_no": order_no, "phone": phone, **payload},
            sequence=seq,
            occurred_at=T0 + timedelta(seconds=seq),
        )

    return [
        event(
            1,
            EventType.COURSE_ORDERED,
            course_no="PY101",
            course_title="파이썬 입문",
            ordered_at=T0.isoformat(),
            begin_date="2026-12-01",
            end_date="2027-01-31",
        ),
        event(2, EventType.LEARNING_STARTED, manager_name="김매니저"),
        event(3, EventType.EVALUATION_RECORDED, score=70),
        event(4, EventType.EVALUATION_RECORDED, score=85),
        event(5, EventType.ORDER_COMPLETED, score=90),
        event(6, EventType.FINAL_EVALUATION_REGISTERED, score=90),
    ]


def fold(events) -> MyPageRow:
    row = MyPageRow(
        order_no="O1",
        phone="010-1234-5678",
        order_seq=0,
        learning_seq=0,
        evaluation_seq=0,
        score_seq=0,
    )
    for event in events:
        apply(row, event)
    return row


def visible(row: MyPageRow) -> tuple:
    return (
        row.course_title,
        row.order_status,
        row.learning_status,
        row.manager_name,
        row.evaluation_status,
        row.latest_score,
        row.final_score,
        row.updated_at,
    )


def test_given_a_whole_history_in_order_then_the_row_shows_the_completed_order():
    row = fold(history())
    assert visible(row) == (
        "파이썬 입문",
        "COMPLETED",
        "COMPLETED",
        "김매니저",
        "FINAL",
        85,
        90,
        T0 + timedelta(seconds=6),
    )


def test_given_the_final_before_order_completed_then_the_order_shows_completed_at_once():
    # OrderCompleted's copy for My page waits behind the score chain; the chain's next step,
    # FinalEvaluationRegistered, already shows it. The late copy then changes nothing.
    *earlier, completed, final = history()
    before_the_copy = visible(fold([*earlier, final]))
    assert before_the_copy[1] == "COMPLETED"
    assert visible(fold([*earlier, final, completed])) == before_the_copy


def test_given_any_arrival_order_and_duplicates_then_the_row_is_the_same():
    expected = visible(fold(history()))
    events = history()
    for permutation in itertools.islice(itertools.permutations(events), 0, None, 37):
        assert visible(fold(list(permutation) + list(permutation[:2]))) == expected


def test_given_a_cancel_when_a_stale_course_ordered_arrives_late_then_it_stays_cancelled():
    order_no = "O2"
    ordered, cancelled = (
        Event(
            EventType.COURSE_ORDERED,
            order_no,
            {
                "order_no": order_no,
                "phone": "010-1234-5678",
                "course_no": "PY101",
                "course_title": "t",
                "ordered_at": T0.isoformat(),
                "begin_date": "2026-12-01",
                "end_date": "2027-01-31",
            },
            sequence=1,
            occurred_at=T0,
        ),
        Event(
            EventType.COURSE_ORDER_CANCELLED,
            order_no,
            {"order_no": order_no, "phone": "010-1234-5678"},
            sequence=2,
            occurred_at=T0 + timedelta(seconds=1),
        ),
    )
    row = fold([cancelled, ordered])
    assert row.order_status == "CANCELLED"
    assert row.course_no == "PY101"  # the late event still fills the facts it alone carries
