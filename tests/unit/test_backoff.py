"""The outbox's one backoff: redeliveries and retries after a failure wait alike."""

from app.shared.outbox.backoff import MAX_DOUBLINGS, backoff_s, backoff_schedule_s


def test_the_wait_doubles_with_each_attempt_from_the_base():
    assert [backoff_s(30, attempt) for attempt in range(4)] == [30.0, 60.0, 120.0, 240.0]


def test_the_wait_stops_growing_after_the_last_doubling():
    cap = backoff_s(1.5, MAX_DOUBLINGS)
    assert cap == 1.5 * 2**MAX_DOUBLINGS
    assert [backoff_s(1.5, attempt) for attempt in (MAX_DOUBLINGS + 1, 10, 1000)] == [cap] * 3


def test_the_schedule_sql_indexes_is_the_same_formula_up_to_the_cap():
    schedule = backoff_schedule_s(0.2)
    assert schedule == [backoff_s(0.2, attempt) for attempt in range(MAX_DOUBLINGS + 1)]
    assert schedule[-1] == backoff_s(0.2, 99)
