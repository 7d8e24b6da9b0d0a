"""Event ids grow with time, so that the indexes they key grow at their ends."""

import time
import uuid

from app.shared.events import Event, EventType


def test_given_events_raised_one_after_another_then_their_ids_sort_in_that_order():
    ids = []
    for _ in range(20):
        ids.append(Event(EventType.COURSE_ORDERED, "O1", {}).event_id)
        time.sleep(0.002)  # the ids' clock counts milliseconds

    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)


def test_given_an_event_then_its_id_is_a_version_7_uuid_of_the_time_it_was_raised():
    before = time.time_ns() // 1_000_000
    event_id = uuid.UUID(Event(EventType.COURSE_ORDERED, "O1", {}).event_id)
    after = time.time_ns() // 1_000_000

    assert (event_id.version, event_id.variant) == (7, uuid.RFC_4122)
    assert before <= event_id.int >> 80 <= after
