"""The shared kernel on both databases: the embedded SQLite (a real file, migrated as `make run`
migrates it) and PostgreSQL. Each side writes its own statements (app/shared/db/dialects.py);
these tests hold them to the same outcomes: the outbox, its claim and acknowledgements, the
processed-messages records and the batch helpers."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, UniqueConstraint, select, update
from sqlalchemy.exc import IntegrityError

from app.config import Settings
from app.migrate import upgrade
from app.shared.db.base import utcnow
from app.shared.db.bulk import among, among_keys, insert_missing, insert_rows, update_rows
from app.shared.db.engine import Database
from app.shared.db.paging import paged, where_given
from app.shared.events import Event, EventType
from app.shared.idempotency import PROCESSED, claim_all
from app.shared.outbox.acks import announce_task_done, record_done, record_failure
from app.shared.outbox.backlog import pending_deliveries
from app.shared.outbox.backoff import backoff_s
from app.shared.outbox.claim import claim_due
from app.shared.outbox.dead_letters import dead_deliveries, replay_dead
from app.shared.outbox.tables import Delivery, DeliveryStatus, OrderSequence, OutboxEvent
from app.shared.outbox.writer import OutboxWriter
from app.shared.retention import DONE_DELIVERIES, PROCESSED_RECORDS, prune

LATER = "tests.later"  # a consumer whose copy is first due a minute after the commit


@pytest.fixture(scope="module")
def sqlite_settings(tmp_path_factory):
    settings = Settings.from_env({"ONLINESTUDY_VAR_DIR": str(tmp_path_factory.mktemp("var"))})
    upgrade(settings)
    return settings


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request):
    """A Database as the app makes it, whose sessions join one transaction rolled back after."""
    if request.param == "sqlite":
        settings = request.getfixturevalue("sqlite_settings")
    else:
        settings = request.getfixturevalue("it_settings")
    database = Database(settings.database_url, settings.notification_database_url)
    connection = database.engine().connect()
    transaction = connection.begin()
    database.use_connection("main", connection)
    yield database
    transaction.rollback()
    connection.close()
    database.dispose()


@pytest.fixture
def consumers():
    """Consumer names of this test alone, so rows of other tests never count."""
    tag = uuid.uuid4().hex[:8]
    return f"tests.first.{tag}", f"tests.second.{tag}"


def writer(consumers, later: str | None = None) -> OutboxWriter:
    deferred = {(later, EventType.COURSE_ORDERED): 60.0} if later else None
    return OutboxWriter(lambda _type: [*consumers, *([later] if later else [])], deferred)


def an_event(order_no: str | None) -> Event:
    return Event(EventType.COURSE_ORDERED, order_no, {"order_no": order_no, "phone": "010"})


def an_order_no() -> str:
    return "T" + uuid.uuid4().hex[:12].upper()


def deliveries(session, consumer: str) -> dict[str, Delivery]:
    rows = session.execute(select(Delivery).where(Delivery.consumer == consumer)).scalars()
    return {delivery.event_id: delivery for delivery in rows}


def written_events(db, consumers) -> list[Event]:
    """Two orders' events, written as the unit of work writes them: alone, then two orders in
    one write, then two events of one order in one write."""
    a, b = an_order_no(), an_order_no()
    events = [an_event(a), an_event(a), an_event(b), an_event(a), an_event(a)]
    with db.session() as session:
        w = writer(consumers)
        w.write(session, events[:1])
        w.write(session, events[1:3])
        w.write(session, events[3:])
        session.commit()
    return events


# The outbox's write ----------------------------------------------------------------------


def test_each_order_numbers_its_events_and_each_consumer_gets_a_delivery(db, consumers):
    events = written_events(db, consumers)
    a, b = events[0].order_no, events[2].order_no
    assert [e.sequence for e in events] == [1, 2, 1, 3, 4]
    with db.session() as session:
        stored = session.execute(
            select(OutboxEvent.event_id, OutboxEvent.order_no, OutboxEvent.sequence)
            .where(OutboxEvent.order_no.in_([a, b]))
            .order_by(OutboxEvent.id)
        ).all()
        assert stored == [(e.event_id, e.order_no, e.sequence) for e in events]
        last = dict(
            session.execute(select(OrderSequence.order_no, OrderSequence.last_sequence)).all()
        )
        assert (last[a], last[b]) == (4, 1)
        for consumer in consumers:
            mine = deliveries(session, consumer)
            assert set(mine) == {e.event_id for e in events}
            assert {(d.status, d.published, d.failures) for d in mine.values()} == {
                (DeliveryStatus.PENDING, 0, 0)
            }


def test_an_event_of_no_order_is_written_without_a_sequence(db, consumers):
    event = an_event(None)
    with db.session() as session:
        writer(consumers).write(session, [event])
        stored = session.execute(
            select(OutboxEvent).where(OutboxEvent.event_id == event.event_id)
        ).scalar_one()
        assert (stored.order_no, stored.sequence) == (None, 0)
        assert set(deliveries(session, consumers[0])) == {event.event_id}


# The relay's claim -----------------------------------------------------------------------


@pytest.fixture(params=["all due", "quotas"])
def claim(request, db):
    """claim_due as the relay calls it: on SQLite for everything due; on PostgreSQL also with
    a quota per consumer (its relay counts tasks in flight)."""
    if request.param == "quotas" and db.engine().dialect.name == "sqlite":
        pytest.skip("the SQLite relay does not count tasks in flight")

    def claim_mine(session, consumers, timeout_s):
        quotas = dict.fromkeys(consumers, 100) if request.param == "quotas" else None
        due = claim_due(session, 500, timeout_s, quotas)
        return [d for d in due if d.consumer in consumers]

    return claim_mine


def test_a_claim_publishes_each_due_copy_once_until_its_redelivery_time(db, consumers, claim):
    first, second = consumers
    [event] = events = [an_event(an_order_no())]
    with db.session() as session:
        writer(consumers, later=LATER).write(session, events)
        before = utcnow()
        due = claim(session, [first, second, LATER], 10.0)
        assert sorted(d.consumer for d in due) == [first, second]  # LATER is not due yet
        assert {d.envelope["event_id"] for d in due} == {event.event_id}
        assert due[0].envelope == event.envelope()
        assert claim(session, [first, second, LATER], 10.0) == []  # pushed out: not due now
        copy = deliveries(session, first)[event.event_id]
        assert copy.published == 1
        assert (
            before + timedelta(seconds=9) < copy.next_attempt_at <= utcnow() + timedelta(seconds=10)
        )


def test_a_copy_published_many_times_waits_no_longer_than_the_capped_backoff(db, consumers, claim):
    first = consumers[0]
    [event] = events = [an_event(an_order_no())]
    with db.session() as session:
        writer(consumers).write(session, events)
        for published, wait in ((1, backoff_s(10.0, 1)), (9, backoff_s(10.0, 9))):
            session.execute(
                update(Delivery)
                .where(Delivery.consumer == first, Delivery.event_id == event.event_id)
                .values(published=published, next_attempt_at=utcnow() - timedelta(seconds=1))
            )
            before = utcnow()
            assert [d.envelope["event_id"] for d in claim(session, [first], 10.0)] == [
                event.event_id
            ]
            session.expire_all()
            copy = deliveries(session, first)[event.event_id]
            assert copy.published == published + 1
            after = copy.next_attempt_at - before
            assert timedelta(seconds=wait - 1) < after <= timedelta(seconds=wait + 1)
    assert backoff_s(10.0, 9) == 160.0  # the cap, not 10 * 2**9


# The consumer's acknowledgements and the dead letters ---------------------------------------


def test_a_recorded_copy_is_done_and_a_failure_after_it_changes_nothing(db, consumers):
    first, second = consumers
    events = written_events(db, consumers)
    ids = [e.event_id for e in events]
    with db.session() as session:
        assert pending_deliveries(session, [first, second]) == 10
        record_done(session, first, ids[:3])
        announce_task_done(session, first)
        session.commit()
        mine = deliveries(session, first)
        assert [mine[i].status for i in ids] == [DeliveryStatus.DONE] * 3 + [
            DeliveryStatus.PENDING
        ] * 2
        assert all(mine[i].done_at is not None for i in ids[:3])
        assert pending_deliveries(session, [first, second]) == 7
        assert pending_deliveries(session, [first]) == 2
        assert record_failure(session, first, ids[0], "late", 3, 1.0) is False
        assert deliveries(session, first)[ids[0]].failures == 0
        assert all(d.status == DeliveryStatus.PENDING for d in deliveries(session, second).values())


def test_failures_back_off_then_park_the_copy_which_a_replay_makes_due_again(db, consumers):
    first = consumers[0]
    [event] = events = [an_event(an_order_no())]
    with db.session() as session:
        writer(consumers).write(session, events)
        before = utcnow()
        assert record_failure(session, first, event.event_id, "boom 1", 3, 2.0) is False
        assert record_failure(session, first, event.event_id, "boom 2", 3, 2.0) is False
        copy = deliveries(session, first)[event.event_id]
        assert (copy.status, copy.failures, copy.last_error) == ("PENDING", 2, "boom 2")
        wait = copy.next_attempt_at - before
        assert timedelta(seconds=backoff_s(2.0, 1)) <= wait < timedelta(seconds=5)
        assert [d for d, _ in dead_deliveries(session) if d.consumer == first] == []

        assert record_failure(session, first, event.event_id, "boom 3", 3, 2.0) is True
        parked = [
            (d.event_id, e.order_no) for d, e in dead_deliveries(session) if d.consumer == first
        ]
        assert parked == [(event.event_id, event.order_no)]
        assert pending_deliveries(session, [first]) == 0

        assert replay_dead(session, consumer=first) == 1
        session.expire_all()
        copy = deliveries(session, first)[event.event_id]
        assert (copy.status, copy.failures, copy.published) == ("PENDING", 0, 0)
        assert copy.next_attempt_at <= utcnow()
        assert pending_deliveries(session, [first]) == 1


def test_a_copy_that_keeps_failing_waits_no_longer_than_the_capped_backoff(db, consumers):
    first = consumers[0]
    [event] = events = [an_event(an_order_no())]
    with db.session() as session:
        writer(consumers).write(session, events)
        session.execute(
            update(Delivery)
            .where(Delivery.consumer == first, Delivery.event_id == event.event_id)
            .values(failures=11)
        )
        before = utcnow()
        assert record_failure(session, first, event.event_id, "again", 50, 1.0) is False
        wait = deliveries(session, first)[event.event_id].next_attempt_at - before
    # The 12th failure waits the cap (16 s), not 2**11 s.
    assert timedelta(seconds=backoff_s(1.0, 11)) <= wait < timedelta(seconds=17)


# Processed messages ------------------------------------------------------------------------


def test_a_consumer_claims_an_event_once_whatever_the_copies(db, consumers):
    first, second = consumers
    ids = [str(uuid.uuid4()) for _ in range(3)]
    with db.session() as session:
        assert claim_all(session, "main", first, [ids[0], ids[1], ids[0]]) == {ids[0], ids[1]}
        assert claim_all(session, "main", first, ids) == {ids[2]}
        assert claim_all(session, "main", first, ids) == set()
        assert claim_all(session, "main", second, ids[:1]) == {ids[0]}  # its own record
        assert claim_all(session, "main", first, []) == set()


# Batch helpers and paging ------------------------------------------------------------------

_rows = Table(
    "test_kernel_rows",
    MetaData(),
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("key", String(32), unique=True),
    Column("kind", String(16)),
    Column("seat", Integer),
    Column("body", String(64), nullable=True),
    UniqueConstraint("kind", "seat"),
)


@pytest.fixture
def rows_session(db):
    with db.session() as session:
        _rows.create(session.connection())
        yield session


def stored(session) -> dict[str, tuple]:
    return {r.key: (r.kind, r.seat, r.body) for r in session.execute(select(_rows))}


def test_inserted_rows_come_back_with_their_ids_and_a_duplicate_is_refused(rows_session):
    session = rows_session
    made = insert_rows(
        session,
        _rows,
        [
            {"key": "a", "kind": "x", "seat": 1, "body": "하나"},
            {"key": "b", "kind": "x", "seat": 2, "body": None},
        ],
        ("key", "id"),
    )
    ids = dict(made)
    assert set(ids) == {"a", "b"} and len(set(ids.values())) == 2
    assert dict(session.execute(select(_rows.c.key, _rows.c.id)).all()) == ids
    assert insert_rows(session, _rows, [], ("id",)) == []
    with pytest.raises(IntegrityError), session.begin_nested():
        insert_rows(session, _rows, [{"key": "a", "kind": "y", "seat": 1, "body": ""}], ("id",))
    assert stored(session) == {"a": ("x", 1, "하나"), "b": ("x", 2, None)}


def test_missing_rows_are_inserted_and_those_there_are_left_as_they_were(rows_session):
    session = rows_session
    insert_missing(session, _rows, [{"key": "a", "kind": "x", "seat": 1, "body": "first"}])
    insert_missing(
        session,
        _rows,
        [
            {"key": "a", "kind": "x", "seat": 1, "body": "second"},  # there: skipped
            {"key": "b", "kind": "x", "seat": 2, "body": "new"},
        ],
    )
    insert_missing(session, _rows, [])
    assert stored(session) == {"a": ("x", 1, "first"), "b": ("x", 2, "new")}


def test_updated_rows_change_only_the_rows_with_their_keys(rows_session):
    session = rows_session
    insert_missing(
        session,
        _rows,
        [{"key": k, "kind": "x", "seat": i, "body": k} for i, k in enumerate("abc")],
    )
    update_rows(
        session,
        _rows,
        "key",
        [{"key": "a", "seat": 10, "body": "A"}, {"key": "c", "seat": 12, "body": None}],
    )
    update_rows(session, _rows, "key", [])
    assert stored(session) == {"a": ("x", 10, "A"), "b": ("x", 1, "b"), "c": ("x", 12, None)}


def test_a_batch_read_finds_exactly_the_rows_among_the_values_and_keys(rows_session):
    session = rows_session
    insert_missing(
        session,
        _rows,
        [
            {"key": k, "kind": kind, "seat": seat, "body": None}
            for k, kind, seat in [("a", "x", 1), ("b", "x", 2), ("c", "y", 1), ("d", "y", 2)]
        ],
    )

    def keys(condition) -> set[str]:
        return set(session.execute(select(_rows.c.key).where(condition)).scalars())

    assert keys(among(session, _rows.c.key, ["a", "c", "zz"])) == {"a", "c"}
    assert keys(among(session, _rows.c.key, [])) == set()
    both = (_rows.c.kind, _rows.c.seat)
    assert keys(among_keys(session, both, [("x", 2), ("y", 1), ("y", 9)])) == {"b", "c"}
    assert keys(among_keys(session, both, [("x", 1)])) == {"a"}


def test_a_page_has_its_rows_in_order_and_the_total_of_all_pages(rows_session):
    session = rows_session
    insert_missing(
        session,
        _rows,
        [
            {"key": f"k{i}", "kind": "x" if i % 2 else "y", "seat": i, "body": None}
            for i in range(7)
        ],
    )
    query = where_given(select(_rows.c.seat), (_rows.c.kind, "x"), (_rows.c.body, None))
    page, total = paged(session, query, _rows.c.seat.desc(), 1, 2)
    assert (page, total) == ([3, 1], 3)
    everything, total = paged(
        session, where_given(select(_rows.c.seat), (_rows.c.kind, "")), _rows.c.seat, 0, 100
    )
    assert (everything, total) == (list(range(7)), 7)


# Retention ----------------------------------------------------------------------------------


def test_the_sweep_deletes_old_done_deliveries_and_records_in_batches_and_nothing_else(
    db, consumers
):
    events = written_events(db, consumers)
    first, second = consumers
    ids = [e.event_id for e in events]
    long_ago = utcnow() - timedelta(days=30)
    d = Delivery.__table__.c
    with db.session() as session:
        claim_all(session, "main", first, ids)
        record_done(session, first, ids[:3])
        session.execute(update(Delivery).where(d.consumer == first).values(done_at=long_ago))
        # DONE but young: kept; PENDING (second's) and old: kept, it is owed.
        record_done(session, first, ids[3:])
        session.execute(update(Delivery).where(d.consumer == second).values(created_at=long_ago))
        processed = PROCESSED["main"]
        session.execute(
            update(processed)
            .where(processed.c.consumer == first, processed.c.event_id.in_(ids[:2]))
            .values(processed_at=long_ago)
        )
        session.commit()

    deleted = prune(
        lambda _bind: db.session(), 86400, batch=2, kinds=(DONE_DELIVERIES, PROCESSED_RECORDS[0])
    )

    assert deleted == {"outbox_deliveries_done": 3, "processed_messages": 2}
    with db.session() as session:
        assert set(deliveries(session, first)) == set(ids[3:])
        assert set(deliveries(session, second)) == set(ids)
        left = session.execute(
            select(processed.c.event_id).where(processed.c.consumer == first)
        ).scalars()
        assert set(left) == set(ids[2:])
