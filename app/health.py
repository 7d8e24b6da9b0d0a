"""Liveness and readiness: ready means the database and the broker answer within a short time."""

from __future__ import annotations

from flask.views import MethodView
from flask_smorest import abort
from marshmallow import Schema, fields
from sqlalchemy import text

from app.bootstrap import container
from app.shared.api import Blueprint

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


class HealthSchema(Schema):
    status = fields.Str(required=True)
    checks = fields.Dict(keys=fields.Str(), values=fields.Str())


@health_blp.route("/live")
class Live(MethodView):
    @health_blp.doc(security=[])
    @health_blp.response(200, HealthSchema)
    def get(self):
        """The process answers."""
        return {"status": "ok"}


@health_blp.route("/ready")
class Ready(MethodView):
    @health_blp.doc(security=[])
    @health_blp.response(200, HealthSchema)
    @health_blp.alt_response(503, description="Not ready: `errors` names the failing part")
    def get(self):
        """The database and the broker are reachable; 503 names the failing part."""
        failures = {
            name: error
            for name, error in (("database", check_database()), ("broker", check_broker()))
            if error
        }
        if failures:
            abort(503, message=f"not ready: {', '.join(failures)}", errors=failures)
        return {"status": "ok", "checks": {"database": "ok", "broker": "ok"}}
