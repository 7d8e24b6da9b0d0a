"""The floor of POST /orders: what the database work of an order costs under the same gunicorn
settings, with nothing of ours around it.

gunicorn --workers 2 'bench.floor:create_app()'

A bare Flask view runs the API's own two statements for an order (the course read, then the
order row, on the condition that the course has no capacity, with its event, deliveries and
NOTIFY in one statement), compiled by SQLAlchemy once
and executed on a plain psycopg connection. No authentication, validation, rate limit, ORM or
unit of work: the distance from this to `POST /orders` is what those cost, and this over the
hello baseline is what the order's SQL and its round trips cost.
"""

from __future__ import annotations

import json
import os
import secrets
import uuid
from datetime import date

import psycopg
from flask import Flask, jsonify, request
from sqlalchemy.dialects.postgresql import psycopg as pg_dialect

from app.orders.model import Order, OrderStatus
from app.orders.repository import _COURSE_TO_ORDER, UNLIMITED_COURSE
from app.policies import subscribers
from app.shared.db.base import utcnow
from app.shared.db.bulk import column_values
from app.shared.events import EventType
from app.shared.outbox.notices import NOTIFY_CHANNEL, new_work
from app.shared.outbox.writer import _write_all_after

# The columns the API writes for a new order (all of the row's but its generated id).
_COLUMNS = tuple(column_values(Order()))


def _sql(statement) -> str:
    return str(statement.compile(dialect=pg_dialect.dialect()))


def create_app() -> Flask:
    app = Flask(__name__)
    read = _sql(_COURSE_TO_ORDER)
    write = _sql(_write_all_after(Order.__table__, _COLUMNS, None, UNLIMITED_COURSE))
    consumers = list(subscribers(EventType.COURSE_ORDERED))
    url = os.environ["DATABASE_URL"].replace("postgresql+psycopg://", "postgresql://", 1)
    connection: list[psycopg.Connection] = []  # one per gunicorn worker, opened on first use

    @app.post("/orders")
    def order():
        if not connection:
            connection.append(psycopg.connect(url, autocommit=True))
        conn = connection[0]
        body = request.get_json()
        key = request.headers.get("Idempotency-Key")
        course = conn.execute(
            read, {"course_no": body["course_no"], "caller": "", "idempotency_key": key}
        ).fetchone()
        now = utcnow()
        row = {
            "order_no": "O" + secrets.token_hex(6).upper(),
            "course_no": course[0],
            "phone": body["phone"],
            "status": OrderStatus.ORDERED,
            "ordered_at": now,
            "begin_date": date.fromisoformat(body["begin_date"]),
            "end_date": date.fromisoformat(body["end_date"]),
            "score": None,
            "completed_at": None,
            "cancelled_at": None,
            "idempotency_key": key,
            "idempotency_caller": "",
            "request_fingerprint": None,
            "waitlist_ticket": None,
        }
        event_id = str(uuid.uuid4())
        payload = {
            "order_no": row["order_no"],
            "course_no": course[0],
            "course_title": course[1],
            "phone": row["phone"],
            "ordered_at": now.isoformat(),
            "begin_date": body["begin_date"],
            "end_date": body["end_date"],
        }
        conn.execute(
            write,
            {
                **{f"row_{name}": row[name] for name in _COLUMNS},
                "event_ids": [event_id],
                "types": [str(EventType.COURSE_ORDERED)],
                "order_nos": [row["order_no"]],
                "occurred": [now],
                "payloads": [json.dumps(payload)],
                "cids": [None],
                "traces": [None],
                "d_events": [event_id] * len(consumers),
                "d_consumers": consumers,
                "d_due": [now] * len(consumers),
                "now": now,
                "channel": NOTIFY_CHANNEL,
                "payload": new_work(consumers),
            },
        ).fetchall()
        answer = {name: row[name] for name in ("order_no", "course_no", "phone", "status")}
        return jsonify(
            **answer,
            ordered_at=now.isoformat(),
            begin_date=body["begin_date"],
            end_date=body["end_date"],
            score=None,
        ), 201

    @app.get("/health/live")
    def live():
        return jsonify(status="ok")

    return app
