"""Peak memory and time of `onlinestudy mypage rebuild` over N orders' event log, on PostgreSQL.

    .venv/bin/python -m bench.rebuild_memory --orders 1000000

Makes a scratch database, migrates it, writes the events of N orders straight in SQL (the
payloads the projection reads; a quarter cancelled, half completed with a final score, a
quarter still learning), then runs the command as a separate process and reports its peak RSS
(the kernel's ru_maxrss) and wall time, and the event log's size per order.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import psycopg

PG_URL = os.environ.get("TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432")

# One order's events by its number g: seq 1 CourseOrdered, 2 LearningStarted, then by g % 4:
# 0 cancelled (CourseOrderCancelled, LearningCancelled), 1 and 2 completed (EvaluationRecorded,
# FinalEvaluationRegistered, OrderCompleted), 3 in progress (EvaluationRecorded).
EVENTS_SQL = """
WITH orders AS (
  SELECT g, 'B' || lpad(to_hex(g), 11, '0') AS order_no,
         '010-' || (2000 + g %% 3000) || '-' || lpad((g %% 10000)::text, 4, '0') AS phone,
         timestamptz '2025-01-01' + g * interval '30 second' AS at
  FROM generate_series(%(first)s::int, %(last)s::int) AS g
), events AS (
  SELECT o.*, e.sequence, e.event_type, e.payload
  FROM orders o
  CROSS JOIN LATERAL (VALUES
    (1, 'CourseOrdered', jsonb_build_object('order_no', o.order_no, 'course_no', 'PY101',
        'course_title', '파이썬 입문', 'phone', o.phone, 'ordered_at', o.at,
        'begin_date', '2026-12-01', 'end_date', '2027-02-28')),
    (2, 'LearningStarted', jsonb_build_object('learning_id', o.g, 'order_no', o.order_no,
        'course_no', 'PY101', 'course_title', '파이썬 입문', 'phone', o.phone,
        'manager_id', 1 + o.g %% 50, 'manager_name', '김매니저', 'started_at', o.at))
  ) AS e(sequence, event_type, payload)
  UNION ALL
  SELECT o.*, e.sequence, e.event_type, e.payload
  FROM orders o
  CROSS JOIN LATERAL (VALUES
    (3, 'CourseOrderCancelled', jsonb_build_object('order_no', o.order_no, 'course_no', 'PY101',
        'phone', o.phone, 'cancelled_at', o.at)),
    (4, 'LearningCancelled', jsonb_build_object('learning_id', o.g, 'order_no', o.order_no,
        'phone', o.phone, 'cancelled_at', o.at))
  ) AS e(sequence, event_type, payload) WHERE o.g %% 4 = 0
  UNION ALL
  SELECT o.*, e.sequence, e.event_type, e.payload
  FROM orders o
  CROSS JOIN LATERAL (VALUES
    (3, 'EvaluationRecorded', jsonb_build_object('evaluation_id', o.g, 'order_no', o.order_no,
        'phone', o.phone, 'course_no', 'PY101', 'score', 70, 'comment', '좋아요',
        'recorded_at', o.at)),
    (4, 'FinalEvaluationRegistered', jsonb_build_object('evaluation_id', o.g,
        'order_no', o.order_no, 'phone', o.phone, 'course_no', 'PY101', 'score', 88)),
    (5, 'OrderCompleted', jsonb_build_object('order_no', o.order_no, 'course_no', 'PY101',
        'phone', o.phone, 'score', 88, 'completed_at', o.at))
  ) AS e(sequence, event_type, payload) WHERE o.g %% 4 IN (1, 2)
  UNION ALL
  SELECT o.*, 3, 'EvaluationRecorded', jsonb_build_object('evaluation_id', o.g,
        'order_no', o.order_no, 'phone', o.phone, 'course_no', 'PY101', 'score', 60,
        'comment', '', 'recorded_at', o.at)
  FROM orders o WHERE o.g %% 4 = 3
)
INSERT INTO outbox_events (event_id, event_type, order_no, sequence, occurred_at, payload)
SELECT md5(order_no || '/' || sequence)::uuid::text, event_type, order_no, sequence,
       at + sequence * interval '1 second', payload::json
FROM events
"""


def scratch_database(name: str) -> str:
    with psycopg.connect(f"{PG_URL}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"{PG_URL}/{name}"


def fill(url: str, orders: int, chunk: int = 100_000) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for first in range(1, orders + 1, chunk):
            last = min(orders, first + chunk - 1)
            conn.execute(EVENTS_SQL, {"first": first, "last": last})
        conn.execute("VACUUM ANALYZE outbox_events")


def run_measured(argv: list[str], env: dict[str, str]) -> tuple[float, int, str]:
    """Wall seconds, peak RSS in KiB and the output of a child process."""
    started = time.perf_counter()
    child = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert child.stdout is not None
    output = child.stdout.read().decode()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{output}")
    return time.perf_counter() - started, usage.ru_maxrss, output


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=100_000)
    parser.add_argument("--keep", action="store_true", help="Keep the scratch database.")
    args = parser.parse_args()
    name = f"onlinestudy_rebuild_{args.orders}"
    url = scratch_database(name)
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "NOTIFICATION_DATABASE_URL": url,
        "CELERY_BROKER_URL": os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/15"),
        "JWT_SECRET": "rebuild-benchmark-secret-0123456789abcdef0123456789",
    }
    onlinestudy = os.path.join(os.path.dirname(sys.executable), "onlinestudy")
    run_measured([onlinestudy, "db", "upgrade"], env)
    started = time.perf_counter()
    fill(url, args.orders)
    filled_s = time.perf_counter() - started
    with psycopg.connect(url) as conn:
        events, log_bytes = conn.execute(
            "SELECT count(*), pg_total_relation_size('outbox_events') FROM outbox_events"
        ).fetchone()
    seconds, peak_kib, output = run_measured([onlinestudy, "mypage", "rebuild"], env)
    result = {
        "orders": args.orders,
        "events": events,
        "event_log_bytes_per_order": round(log_bytes / args.orders),
        "fill_s": round(filled_s, 1),
        "rebuild_s": round(seconds, 1),
        "rebuild_peak_rss_mib": round(peak_kib / 1024, 1),
        "rebuild_output": output.strip().splitlines()[-1],
    }
    print(json.dumps(result, ensure_ascii=False))
    if not args.keep:
        with psycopg.connect(f"{PG_URL}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
