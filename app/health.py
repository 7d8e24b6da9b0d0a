"""Liveness and readiness: ready means the database and the broker answer within a short time
and the server has not begun to shut down."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from celery import Celery
from flask.views import MethodView
from flask_smorest import abort
from marshmallow import Schema, fields
from sqlalchemy import text
from sqlalchemy.orm import Session

from app.process import shutting_down
from app.shared.api import Blueprint

CHECK_TIMEOUT_S = 2


class HealthSchema(Schema):
    status = fields.Str(required=True)
    checks = fields.Dict(keys=fields.Str(), values=fields.Str())


def check_database(session_factory: Callable[[], Session]) -> str | None:
    try:
        with session_factory() as session:
            session.execute(text("SELECT 1"))
        return None
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        return f"{exc.__class__.__name__}"


def check_broker(celery: Celery) -> str | None:
    try:
        with celery.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=CHECK_TIMEOUT_S)
        return None
    except Exception as exc:  # noqa: BLE001
        return f"{exc.__class__.__name__}"


def blueprints(main_session: Callable[[], Session], celery: Celery) -> list[Blueprint]:
    """/health/live and /health/ready."""
    health_blp = Blueprint("health", __name__, url_prefix="/health", description="Probes")

    @health_blp.route("/live")
    class Live(MethodView):
        @health_blp.doc(security=[])
        @health_blp.response(200, HealthSchema)
        def get(self) -> dict[str, str]:
            """The process answers."""
            return {"status": "ok"}

    @health_blp.route("/ready")
    class Ready(MethodView):
        @health_blp.doc(security=[])
        @health_blp.response(200, HealthSchema)
        @health_blp.alt_response(503, description="Not ready: `errors` names the failing part")
        def get(self) -> dict[str, Any]:
            """The database and the broker are reachable, and the server is not shutting down;
            503 names the failing part."""
            if shutting_down():
                # Taken out of the load balancer's rotation while it still serves (the drain).
                abort(503, message="not ready: shutting down", errors={"process": "shutting down"})
            failures = {
                name: error
                for name, error in (
                    ("database", check_database(main_session)),
                    ("broker", check_broker(celery)),
                )
                if error
            }
            if failures:
                abort(503, message=f"not ready: {', '.join(failures)}", errors=failures)
            return {"status": "ok", "checks": {"database": "ok", "broker": "ok"}}

    return [health_blp]
