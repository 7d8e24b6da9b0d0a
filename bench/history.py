"""A year of history, preloaded before the benchmark measures again: N orders' worth of the rows
the system would have written for them, in set-based SQL (INSERT ... SELECT generate_series).

Each order `g` (0 .. N-1) is one of three stories, fixed by `g % 4`: completed with a final
score (two in four), cancelled after its learning started (one in four), or still learning (one
in four); it has `k` interim evaluation records. From that story every table gets the rows the
code would have written: the events of the order with their per-order sequences, one DONE
delivery per subscribed consumer (app.policies) and its processed-messages record (in the
consumer's database) for each event the deduplication window still holds, the order, its
learning and evaluation (and records), its My page row as the projection folds those events,
and one SENT SMS per event that sends one. Timestamps spread
over the year before `now`; phones (three orders each, each of another course) are in the app's
normalized form, 010-1000-0000 onwards, apart from the phones the benchmark orders with; event
ids are time-ordered UUIDs, as the app makes them. Table and column names come from the app's
SQLAlchemy metadata; a NOT NULL column the preload does not fill stops it with the column's
name.

Both databases derive the same orders and events from the same SQL and parameters (the random
part of an event id is a hash of its order and sequence), so the notification database gets its
SMS and records without copying rows between servers.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg
from sqlalchemy import Table

from app import models  # noqa: F401 - every table in the metadata
from app.evaluation.model import Evaluation, EvaluationRecord
from app.learning.model import Learning, Manager
from app.mypage.model import MyPageRow
from app.notification.model import SmsMessage
from app.notification.templates import TEMPLATES
from app.orders.model import Course, Order
from app.policies import POLICIES
from app.shared.events import EventType
from app.shared.idempotency import PROCESSED
from app.shared.outbox.tables import Delivery, DeliveryStatus, OrderSequence, OutboxEvent
from app.shared.retention import prune_before
from app.shared.states import EvaluationStatus, LearningStatus, OrderStatus, SmsStatus

E = EventType
COURSES = 40
MANAGERS = 30
ORDERS_PER_PHONE = 3
PHONE_PREFIX = 1000  # 010-1000-0000 onwards; the benchmark's own orders use 2000 and up
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
SENDER = "console"  # the default SMS provider's name (app.notification.senders.ConsoleSender)


@dataclass(frozen=True)
class Loaded:
    orders: int
    seconds: dict[str, float]
    rows: dict[str, int]


def iso(column: str) -> str:
    """The SQL of datetime.isoformat() of an aware UTC timestamp, as the events carry it."""
    return f"(to_char(({column}) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US') || '+00:00')"


# The orders, one row each: the story and every fact the rows below derive from it. The
# parameters: n, base (order numbers already given by earlier preloads), now, and the first
# ids of orders, learnings, evaluations, managers.
ORDERS_SQL = f"""
CREATE TEMP TABLE hist_orders AS
WITH o AS (
    SELECT g,
           CASE g %% 4 WHEN 2 THEN 'cancelled' WHEN 3 THEN 'open' ELSE 'completed' END AS story,
           %(now)s::timestamptz - make_interval(secs => 365 * 86400.0 * (%(n)s - g) / %(n)s)
               - make_interval(secs => 3600 + g %% 997) AS ordered_at,
           g / {ORDERS_PER_PHONE} AS p,
           (g / 4) %% 3 AS r
    FROM generate_series(0, %(n)s - 1) AS g
)
SELECT g, story, ordered_at,
       'O' || upper(lpad(to_hex(((g + %(base)s) * 1099511627791) & 281474976710655), 12, '0'))
           AS order_no,
       '010-' || ({PHONE_PREFIX} + p / 10000) || '-' || lpad((p %% 10000)::text, 4, '0')
           AS phone,
       'HC' || lpad((g %% {COURSES})::text, 3, '0') AS course_no,
       '지난 강좌 ' || (g %% {COURSES}) AS course_title,
       %(first_manager)s + g %% {MANAGERS} AS manager_id,
       '지난매니저' || lpad((g %% {MANAGERS})::text, 2, '0') AS manager_name,
       %(first_order)s + g AS order_id,
       %(first_learning)s + g AS learning_id,
       %(first_evaluation)s + g AS evaluation_id,
       CASE story WHEN 'completed' THEN 1 + r WHEN 'cancelled' THEN r %% 2 ELSE r END AS k,
       60 + (g * 11) %% 41 AS final_score,
       (ordered_at + interval '7 days')::date AS begin_date,
       (ordered_at + interval '97 days')::date AS end_date,
       -- The steps of the story, a day apart at most, all before now.
       least(interval '1 day', (%(now)s::timestamptz - ordered_at) / 8) AS step
FROM o
"""

# The events of each order: sequence, type, time, payload, correlation id (a request's id:
# the order's, a record's, the final score's or the cancel's).
EVENTS_SQL = f"""
CREATE TEMP TABLE hist_events AS
WITH ev AS (
    SELECT o.*, 1 AS seq, '{E.COURSE_ORDERED}' AS event_type, o.ordered_at AS at,
           NULL::int AS score
    FROM hist_orders o
    UNION ALL
    SELECT o.*, 2, '{E.LEARNING_STARTED}', o.ordered_at + interval '1.5 seconds', NULL
    FROM hist_orders o
    UNION ALL
    SELECT o.*, 2 + i, '{E.EVALUATION_RECORDED}', o.ordered_at + o.step * i,
           50 + (o.g * 13 + i * 7) %% 51
    FROM hist_orders o, generate_series(1, o.k) AS i
    UNION ALL
    SELECT o.*, 3 + o.k, '{E.ORDER_COMPLETED}', o.ordered_at + o.step * (o.k + 1), o.final_score
    FROM hist_orders o WHERE o.story = 'completed'
    UNION ALL
    SELECT o.*, 4 + o.k, '{E.FINAL_EVALUATION_REGISTERED}',
           o.ordered_at + o.step * (o.k + 1) + interval '40 milliseconds', o.final_score
    FROM hist_orders o WHERE o.story = 'completed'
    UNION ALL
    SELECT o.*, 3 + o.k, '{E.COURSE_ORDER_CANCELLED}', o.ordered_at + o.step * (o.k + 1), NULL
    FROM hist_orders o WHERE o.story = 'cancelled'
    UNION ALL
    SELECT o.*, 4 + o.k, '{E.LEARNING_CANCELLED}',
           o.ordered_at + o.step * (o.k + 1) + interval '300 milliseconds', NULL
    FROM hist_orders o WHERE o.story = 'cancelled'
)
SELECT g, order_no, phone, seq, event_type, at,
       -- A version 7 UUID as the app makes them (app.shared.events.time_ordered_uuid): the
       -- event's time in milliseconds, then bits of a hash of the order and sequence.
       substr(k.ts, 1, 8) || '-' || substr(k.ts, 9, 4) || '-7' || substr(k.h, 1, 3) || '-8'
           || substr(k.h, 4, 3) || '-' || substr(k.h, 7, 12) AS event_id,
       md5('request:' || (g + %(base)s) || ':' || CASE
           WHEN event_type IN ('{E.COURSE_ORDERED}', '{E.LEARNING_STARTED}') THEN 1
           WHEN event_type IN ('{E.FINAL_EVALUATION_REGISTERED}',
                               '{E.LEARNING_CANCELLED}') THEN seq - 1
           ELSE seq END) AS correlation_id,
       score,
       CASE event_type
       WHEN '{E.COURSE_ORDERED}' THEN json_build_object(
           'order_no', order_no, 'course_no', course_no, 'course_title', course_title,
           'phone', phone, 'ordered_at', {iso("at")}, 'begin_date', begin_date::text,
           'end_date', end_date::text)
       WHEN '{E.LEARNING_STARTED}' THEN json_build_object(
           'learning_id', learning_id, 'order_no', order_no, 'course_no', course_no,
           'course_title', course_title, 'phone', phone, 'manager_id', manager_id,
           'manager_name', manager_name, 'started_at', {iso("at")})
       WHEN '{E.EVALUATION_RECORDED}' THEN json_build_object(
           'evaluation_id', evaluation_id, 'order_no', order_no, 'phone', phone,
           'course_no', course_no, 'score', score, 'comment', '잘하고 있어요',
           'recorded_at', {iso("at")})
       WHEN '{E.ORDER_COMPLETED}' THEN json_build_object(
           'order_no', order_no, 'course_no', course_no, 'phone', phone, 'score', score,
           'completed_at', {iso("at")})
       WHEN '{E.FINAL_EVALUATION_REGISTERED}' THEN json_build_object(
           'evaluation_id', evaluation_id, 'order_no', order_no, 'phone', phone,
           'course_no', course_no, 'score', score)
       WHEN '{E.COURSE_ORDER_CANCELLED}' THEN json_build_object(
           'order_no', order_no, 'course_no', course_no, 'phone', phone,
           'cancelled_at', {iso("at")})
       WHEN '{E.LEARNING_CANCELLED}' THEN json_build_object(
           'learning_id', learning_id, 'order_no', order_no, 'phone', phone,
           'cancelled_at', {iso("at" + " - interval '1 millisecond'")})
       END AS payload
FROM ev, LATERAL (
    SELECT md5('history:' || (g + %(base)s) || ':' || seq) AS h,
           lpad(to_hex((extract(epoch FROM at) * 1000)::bigint), 12, '0') AS ts
) AS k
"""


def subscriptions_sql() -> str:
    """(event_type, consumer, bind) of every policy, as a VALUES list."""
    rows = [
        f"('{event_type}', '{policy.consumer}', '{policy.bind}')"
        for policy in POLICIES
        for event_type in policy.events
    ]
    return "(VALUES " + ", ".join(rows) + ") AS s(event_type, consumer, bind)"


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def sms_text_sql() -> str:
    """The SMS text of each event type, app.notification.templates rendered in SQL."""
    cases = []
    for event_type, template in TEMPLATES.items():
        parts = []
        for i, piece in enumerate(re.split(r"\{(\w+)\}", template)):
            if i % 2 == 0:
                if piece:
                    parts.append(_quote(piece))
            elif piece == "order_no":
                parts.append("e.order_no")
            else:
                parts.append(f"coalesce(e.payload->>'{piece}', '')")
        cases.append(f"WHEN '{event_type}' THEN " + " || ".join(parts))
    return "CASE e.event_type " + " ".join(cases) + " END"


def insert_sql(table: Table, values: dict[str, str], source: str) -> str:
    """INSERT INTO table (columns) SELECT values FROM source, checked against the metadata: a
    column the table lacks, or a NOT NULL column with neither a value nor a server default,
    stops the preload with its name."""
    unknown = set(values) - set(table.c.keys())
    missing = [
        c.name
        for c in table.c
        if c.name not in values
        and not c.nullable
        and c.server_default is None
        and not (c.primary_key and c.autoincrement is not False and len(table.primary_key) == 1)
    ]
    if unknown or missing:
        raise RuntimeError(
            f"the history preload does not match {table.name}: "
            f"unknown {sorted(unknown)}, not filled {missing}"
        )
    columns = ", ".join(values)
    return f"INSERT INTO {table.name} ({columns}) SELECT {', '.join(values.values())} {source}"


def _t(model) -> Table:
    return model.__table__


def _next_id(conn: psycopg.Connection, table: Table) -> int:
    return conn.execute(f"SELECT coalesce(max(id), 0) + 1 FROM {table.name}").fetchone()[0]


def _advance_sequence(conn: psycopg.Connection, table: Table) -> None:
    """Ids given explicitly: the serial goes on after them."""
    conn.execute(
        f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), "
        f"(SELECT max(id) FROM {table.name}))"
    )


def main_statements(p: dict) -> list[tuple[str, str]]:
    """(label, SQL) for the main database, run after hist_orders and hist_events exist."""
    ended = "o.ordered_at + o.step * (o.k + 1)"
    return [
        (
            "courses",
            insert_sql(
                _t(Course),
                {
                    "course_no": "'HC' || lpad(c::text, 3, '0')",
                    "title": "'지난 강좌 ' || c",
                    "description": "'a course of the past year'",
                    "category": "'history'",
                    "price": "10000 + 1000 * c",
                    "active": "true",
                    "created_at": "%(now)s::timestamptz - interval '400 days'",
                },
                f"FROM generate_series(0, {COURSES - 1}) AS c",
            ),
        ),
        (
            "managers",
            insert_sql(
                _t(Manager),
                {
                    "id": "%(first_manager)s + m",
                    "name": "'지난매니저' || lpad(m::text, 2, '0')",
                    "phone": "'010-5999-' || lpad(m::text, 4, '0')",
                    "active": "true",
                    "created_at": "%(now)s::timestamptz - interval '400 days'",
                    "started_count": "coalesce(started.n, 0)",
                },
                f"FROM generate_series(0, {MANAGERS - 1}) AS m LEFT JOIN (SELECT manager_id, "
                "count(*) AS n FROM hist_orders WHERE story = 'open' GROUP BY manager_id) "
                "AS started ON started.manager_id = %(first_manager)s + m",
            ),
        ),
        (
            "orders",
            insert_sql(
                _t(Order),
                {
                    "id": "o.order_id",
                    "order_no": "o.order_no",
                    "course_no": "o.course_no",
                    "phone": "o.phone",
                    "status": (
                        f"CASE o.story WHEN 'completed' THEN '{OrderStatus.COMPLETED}' "
                        f"WHEN 'cancelled' THEN '{OrderStatus.CANCELLED}' "
                        f"ELSE '{OrderStatus.ORDERED}' END"
                    ),
                    "ordered_at": "o.ordered_at",
                    "begin_date": "o.begin_date",
                    "end_date": "o.end_date",
                    "score": "CASE WHEN o.story = 'completed' THEN o.final_score END",
                    "completed_at": f"CASE WHEN o.story = 'completed' THEN {ended} END",
                    "cancelled_at": f"CASE WHEN o.story = 'cancelled' THEN {ended} END",
                    "idempotency_key": "md5('key:' || (o.g + %(base)s))",
                    "request_fingerprint": (
                        "md5('body:' || (o.g + %(base)s)) || md5('fp:' || (o.g + %(base)s))"
                    ),
                },
                "FROM hist_orders o ORDER BY o.g",
            ),
        ),
        (
            "learnings",
            insert_sql(
                _t(Learning),
                {
                    "id": "o.learning_id",
                    "order_no": "o.order_no",
                    "course_no": "o.course_no",
                    "course_title": "o.course_title",
                    "phone": "o.phone",
                    "status": (
                        f"CASE o.story WHEN 'completed' THEN '{LearningStatus.COMPLETED}' "
                        f"WHEN 'cancelled' THEN '{LearningStatus.CANCELLED}' "
                        f"ELSE '{LearningStatus.STARTED}' END"
                    ),
                    "manager_id": "o.manager_id",
                    "manager_name": "o.manager_name",
                    "opened_at": "o.ordered_at + interval '1.5 seconds'",
                    "started_at": "o.ordered_at + interval '1.5 seconds'",
                    "completed_at": (
                        f"CASE WHEN o.story = 'completed' "
                        f"THEN {ended} + interval '250 milliseconds' END"
                    ),
                    "cancelled_at": (
                        f"CASE WHEN o.story = 'cancelled' "
                        f"THEN {ended} + interval '299 milliseconds' END"
                    ),
                },
                "FROM hist_orders o ORDER BY o.g",
            ),
        ),
        (
            "evaluations",
            insert_sql(
                _t(Evaluation),
                {
                    "id": "o.evaluation_id",
                    "order_no": "o.order_no",
                    "learning_id": "o.learning_id",
                    "phone": "o.phone",
                    "course_no": "o.course_no",
                    "manager_id": "o.manager_id",
                    "status": (
                        f"CASE o.story WHEN 'completed' THEN '{EvaluationStatus.FINAL}' "
                        f"WHEN 'cancelled' THEN '{EvaluationStatus.CANCELLED}' "
                        f"ELSE '{EvaluationStatus.IN_PROGRESS}' END"
                    ),
                    "final_score": "CASE WHEN o.story = 'completed' THEN o.final_score END",
                    "opened_at": "o.ordered_at + interval '1.7 seconds'",
                    "finalized_at": (
                        f"CASE WHEN o.story = 'completed' "
                        f"THEN {ended} + interval '40 milliseconds' END"
                    ),
                    "cancelled_at": (
                        f"CASE WHEN o.story = 'cancelled' "
                        f"THEN {ended} + interval '500 milliseconds' END"
                    ),
                },
                "FROM hist_orders o ORDER BY o.g",
            ),
        ),
        (
            "evaluation records",
            insert_sql(
                _t(EvaluationRecord),
                {
                    "evaluation_id": "o.evaluation_id",
                    "score": "e.score",
                    "comment": "e.payload->>'comment'",
                    "recorded_at": "e.at",
                },
                f"FROM hist_events e JOIN hist_orders o USING (g) "
                f"WHERE e.event_type = '{E.EVALUATION_RECORDED}' ORDER BY e.at",
            ),
        ),
        (
            "events",
            insert_sql(
                _t(OutboxEvent),
                {
                    "event_id": "e.event_id",
                    "event_type": "e.event_type",
                    "order_no": "e.order_no",
                    "sequence": "e.seq",
                    "occurred_at": "e.at",
                    "payload": "e.payload",
                    "correlation_id": "e.correlation_id",
                },
                "FROM hist_events e ORDER BY e.at",
            ),
        ),
        (
            "order sequences",
            insert_sql(
                _t(OrderSequence),
                {"order_no": "e.order_no", "last_sequence": "max(e.seq)"},
                "FROM hist_events e GROUP BY e.order_no",
            ),
        ),
        (
            "deliveries",
            insert_sql(
                _t(Delivery),
                {
                    "event_id": "e.event_id",
                    "consumer": "s.consumer",
                    "status": f"'{DeliveryStatus.DONE}'",
                    "published": "1",
                    "failures": "0",
                    "next_attempt_at": "e.at",
                    "created_at": "e.at",
                    "done_at": "e.at + interval '120 milliseconds'",
                },
                f"FROM hist_events e JOIN {subscriptions_sql()} USING (event_type) "
                f"WHERE {IN_WINDOW} ORDER BY e.at, s.consumer",
            ),
        ),
        ("processed messages", processed_sql("main")),
        (
            "My page",
            insert_sql(
                _t(MyPageRow),
                {
                    "order_no": "o.order_no",
                    "phone": "o.phone",
                    "course_no": "o.course_no",
                    "course_title": "o.course_title",
                    "order_status": (
                        f"CASE o.story WHEN 'completed' THEN '{OrderStatus.COMPLETED}' "
                        f"WHEN 'cancelled' THEN '{OrderStatus.CANCELLED}' "
                        f"ELSE '{OrderStatus.ORDERED}' END"
                    ),
                    "learning_status": (
                        f"CASE o.story WHEN 'completed' THEN '{LearningStatus.COMPLETED}' "
                        f"WHEN 'cancelled' THEN '{LearningStatus.CANCELLED}' "
                        f"ELSE '{LearningStatus.STARTED}' END"
                    ),
                    "manager_name": "o.manager_name",
                    "evaluation_status": (
                        f"CASE o.story WHEN 'completed' THEN '{EvaluationStatus.FINAL}' "
                        f"WHEN 'cancelled' THEN '{EvaluationStatus.CANCELLED}' "
                        f"ELSE '{EvaluationStatus.IN_PROGRESS}' END"
                    ),
                    "latest_score": "last.score",
                    "final_score": "CASE WHEN o.story = 'completed' THEN o.final_score END",
                    "ordered_at": "o.ordered_at",
                    "begin_date": "o.begin_date",
                    "end_date": "o.end_date",
                    "updated_at": "last.updated_at",
                    # The sequence of the event that last set each part (app.mypage.projection).
                    "order_seq": "CASE o.story WHEN 'open' THEN 1 ELSE last.seq - "
                    "CASE o.story WHEN 'cancelled' THEN 1 ELSE 0 END END",
                    "learning_seq": "CASE o.story WHEN 'open' THEN 2 ELSE last.seq END",
                    "evaluation_seq": "CASE o.story WHEN 'open' THEN 2 ELSE last.seq END",
                    "score_seq": "CASE WHEN o.k > 0 THEN 2 + o.k ELSE 0 END",
                },
                "FROM hist_orders o JOIN (SELECT e.g, max(e.seq) AS seq, max(e.at) AS "
                "updated_at, (array_agg(e.score ORDER BY e.seq DESC) FILTER (WHERE "
                f"e.event_type = '{E.EVALUATION_RECORDED}'))[1] AS score FROM hist_events e "
                "GROUP BY e.g) AS last USING (g) ORDER BY o.g",
            ),
        ),
    ]


# The retention sweep has deleted the deliveries and processed records of the events older than
# the deduplication window: the preload writes only those of younger ones.
IN_WINDOW = "e.at >= %(kept_since)s::timestamptz"


def processed_sql(bind: str) -> str:
    table = PROCESSED[bind]
    return insert_sql(
        table,
        {
            "consumer": "s.consumer",
            "event_id": "e.event_id",
            "processed_at": "e.at + interval '100 milliseconds'",
        },
        f"FROM hist_events e JOIN {subscriptions_sql()} USING (event_type) "
        # In key order: the index grows at its end instead of at random pages.
        f"WHERE s.bind = '{bind}' AND {IN_WINDOW} ORDER BY s.consumer, e.event_id",
    )


def notification_statements(p: dict) -> list[tuple[str, str]]:
    return [
        (
            "SMS",
            insert_sql(
                _t(SmsMessage),
                {
                    "id": "%(first_sms)s + row_number() OVER (ORDER BY e.at, e.event_id) - 1",
                    "event_id": "e.event_id",
                    "event_type": "e.event_type",
                    "phone": "e.phone",
                    "order_no": "e.order_no",
                    "message": sms_text_sql(),
                    "status": f"'{SmsStatus.SENT}'",
                    "provider": f"'{SENDER}'",
                    # The console sender answers with the message's idempotency key
                    # (app.notification.model.idempotency_key).
                    "provider_message_id": "'onlinestudy-sms-' || left(encode(sha256("
                    "convert_to(e.event_id || '/' || e.phone, 'UTF8')), 'hex'), 32)",
                    "attempts": "1",
                    "created_at": "e.at + interval '110 milliseconds'",
                    "sent_at": "e.at + interval '130 milliseconds'",
                },
                "FROM hist_events e WHERE e.event_type IN ("
                + ", ".join(f"'{t}'" for t in TEMPLATES)
                + ") ORDER BY e.at, e.event_id",
            ),
        ),
        ("processed messages", processed_sql("notification")),
    ]


MAIN_TABLES = (
    Course,
    Manager,
    Order,
    Learning,
    Evaluation,
    EvaluationRecord,
    OutboxEvent,
    OrderSequence,
    Delivery,
    MyPageRow,
)


def _load(
    conn: psycopg.Connection, statements: list[tuple[str, str]], p: dict, log
) -> dict[str, tuple[int, float]]:
    """Run one database's statements in one transaction; (rows, seconds) per label."""
    out = {}
    with conn.transaction():
        # A bulk load: big sorts and temporary tables in memory, no wait for the WAL at each
        # commit, no foreign-key trigger per row (the rows are consistent by construction).
        conn.execute("SET LOCAL temp_buffers = '1GB'")
        conn.execute("SET LOCAL jit = off")  # compiling costs more than it saves here
        conn.execute("SET LOCAL work_mem = '256MB'")
        conn.execute("SET LOCAL maintenance_work_mem = '512MB'")
        conn.execute("SET LOCAL synchronous_commit = off")
        conn.execute("SET LOCAL session_replication_role = replica")
        t = time.perf_counter()
        conn.execute(ORDERS_SQL, p)
        conn.execute(EVENTS_SQL, p)
        conn.execute("ANALYZE hist_orders")
        conn.execute("ANALYZE hist_events")
        out["orders and events planned"] = (0, round(time.perf_counter() - t, 1))
        tables = sorted({re.match(r"INSERT INTO (\w+)", sql)[1] for _label, sql in statements})
        t = time.perf_counter()
        rebuild = _drop_secondary_indexes(conn, tables)
        for label, sql in statements:
            t = time.perf_counter()
            count = conn.execute(sql, p).rowcount
            out[label] = (count, round(time.perf_counter() - t, 1))
            log(f"  history: {count:,} {label} in {out[label][1]} s")
        t = time.perf_counter()
        for ddl in rebuild:
            conn.execute(ddl)
        took = round(time.perf_counter() - t, 1)
        out["indexes rebuilt"] = (len(rebuild), took)
        log(f"  history: {len(rebuild)} indexes and constraints rebuilt in {took} s")
        conn.execute("DROP TABLE hist_events")
        conn.execute("DROP TABLE hist_orders")
    return out


def _drop_secondary_indexes(conn: psycopg.Connection, tables: list[str]) -> list[str]:
    """Drop the indexes, unique and foreign-key constraints of `tables` but their primary
    keys; return the DDL that makes them again. Built once from sorted rows, an index costs a
    fraction of what millions of inserts at random places in it cost."""
    constraints = conn.execute(
        "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid), contype "
        "FROM pg_constraint WHERE conrelid = ANY(%s::regclass[]) AND contype IN ('u', 'f') "
        "ORDER BY contype = 'u'",  # foreign keys first: they lean on the unique ones
        (tables,),
    ).fetchall()
    indexes = conn.execute(
        "SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid) FROM pg_index i "
        "WHERE i.indrelid = ANY(%s::regclass[]) AND NOT i.indisprimary "
        "AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)",
        (tables,),
    ).fetchall()
    for table, name, _definition, _kind in constraints:
        conn.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
    for name, _definition in indexes:
        conn.execute(f"DROP INDEX {name}")
    return [
        *(definition for _name, definition in indexes),
        *(
            f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}'
            for table, name, definition, _kind in reversed(constraints)
        ),
    ]


def preload(
    main_url: str,
    notification_url: str,
    orders: int,
    now: datetime | None = None,
    log: Callable[[str], None] = print,
    vacuum: bool = True,
    dedup_window_s: float | None = None,
) -> Loaded:
    """Load `orders` orders of history into both databases, then VACUUM ANALYZE what it
    loaded (the server may run no autovacuum: a year-old database would have been vacuumed
    and analyzed many times over). With a `dedup_window_s`, the deliveries and processed
    records are those the retention sweep would have kept; without, every one. Nothing else
    may write while it runs (it gives ids)."""
    now = now or datetime.now(UTC)
    kept_since = prune_before(dedup_window_s, now) if dedup_window_s is not None else EPOCH
    started = time.perf_counter()
    seconds: dict[str, float] = {}
    rows: dict[str, int] = {}
    with (
        psycopg.connect(main_url, autocommit=True) as main,
        psycopg.connect(notification_url, autocommit=True) as notification,
    ):
        base = main.execute(
            f"SELECT count(*) FROM {_t(Course).name} WHERE course_no LIKE 'HC%'"
        ).fetchone()[0]
        if base:
            raise RuntimeError("history is already loaded into this database")
        p = {
            "n": orders,
            "base": 0,
            "now": now,
            "kept_since": kept_since,
            "first_order": _next_id(main, _t(Order)),
            "first_learning": _next_id(main, _t(Learning)),
            "first_evaluation": _next_id(main, _t(Evaluation)),
            "first_manager": _next_id(main, _t(Manager)),
            "first_sms": _next_id(notification, _t(SmsMessage)),
        }
        # The two databases load at once, each on its own server process.
        with ThreadPoolExecutor(2) as pool:
            done = [
                pool.submit(_load, conn, statements, p, log)
                for conn, statements in (
                    (main, main_statements(p)),
                    (notification, notification_statements(p)),
                )
            ]
            for bind, future in zip(("main", "notification"), done, strict=True):
                for label, (count, took) in future.result().items():
                    key = label if bind == "main" else f"{label} ({bind})"
                    rows[key], seconds[key] = count, took
        for model in (Order, Learning, Evaluation, Manager):
            _advance_sequence(main, _t(model))
        _advance_sequence(notification, _t(SmsMessage))
        if vacuum:
            t = time.perf_counter()
            for model in MAIN_TABLES:
                main.execute(f"VACUUM ANALYZE {_t(model).name}")
            main.execute(f"VACUUM ANALYZE {PROCESSED['main'].name}")
            notification.execute(f"VACUUM ANALYZE {_t(SmsMessage).name}")
            notification.execute(f"VACUUM ANALYZE {PROCESSED['notification'].name}")
            seconds["vacuum analyze"] = round(time.perf_counter() - t, 1)
            log(f"  history: VACUUM ANALYZE in {seconds['vacuum analyze']} s")
    seconds["total"] = round(time.perf_counter() - started, 1)  # the databases load at once
    return Loaded(orders, seconds, rows)
