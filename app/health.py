"""Liveness and readiness: ready means the database and the broker answer within a short time."""

from __future__ import annotations

from flask import jsonify
from flask.views import MethodView
from flask_smorest import Blueprint
from sqlalchemy import text

from app.bootstrap import container

health_blp = Blueprint("health", __name__, url_prefix="/health", description="Probes")

CHECK_TIMEOUT_S = 2.0


def check_database() -> str | None:
    try:
        with container().main_session() as session:
            session.execute(text("SELECT 1"))
        return None
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        return f"{exc.__class__.__name__}"


def check_broker() -> str | None:
    from workers.celery_app import app as celery

    try:
        with celery.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=CHECK_TIMEOUT_S)
        return None
    except Exception as exc:  # noqa: BLE001
        return f"{exc.__class__.__name__}"


@health_blp.route("/live")
class Live(MethodView):
    def get(self):
        """The process answers."""
        return jsonify(status="ok")


@health_blp.route("/ready")
class Ready(MethodView):
    def get(self):
        """The database and the broker are reachable; 503 names the failing part."""
        failures = {
            name: error
            for name, error in (("database", check_database()), ("broker", check_broker()))
            if error
        }
        if failures:
            response = jsonify(status="unavailable", failing=failures)
            response.status_code = 503
            return response
        return jsonify(status="ok", checks={"database": "ok", "broker": "ok"})
