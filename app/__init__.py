"""onlinestudy: `create_app()` builds the Flask API; nothing happens at import time."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, cast

from flask import Flask
from flask.json.provider import DefaultJSONProvider

if TYPE_CHECKING:
    from app.container import Container


def create_app(container: Container | None = None) -> Flask:
    """The API on `container` (by default the one bootstrap() builds from the environment,
    as gunicorn's `app:create_app()` does)."""
    # Imported here, not at the top: `app` is imported by everything under it (celeryconfig
    # reads app.config), and only the API needs Flask's side.
    from app import (
        docs,
        health,
        models,  # noqa: F401  (all tables on the metadata)
    )
    from app.bootstrap import bootstrap
    from app.evaluation import api as evaluation_api
    from app.learning import api as learning_api
    from app.logging import configure_logging
    from app.mypage import api as mypage_api
    from app.notification import api as notification_api
    from app.observability import HeartbeatCollector, PipelineCollector
    from app.observability import install as install_observability
    from app.orders import api as orders_api
    from app.policies import BY_CONSUMER
    from app.security import install as install_security
    from app.shared.api import OnlineStudyApi, refuse_unstorable_text, register_error_handlers
    from app.tracing import install as install_tracing
    from app.tracing import trace_app

    c = container or bootstrap()
    settings = c.settings
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):  # each gunicorn worker writes its metrics there
        Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]).mkdir(parents=True, exist_ok=True)
    configure_logging(settings.log_level)
    traced = install_tracing("api", settings)  # before any engine is made: they are traced
    app = Flask(__name__)
    app.config.update(
        API_TITLE="onlinestudy",
        API_VERSION="1.0",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/",
        OPENAPI_JSON_PATH="openapi.json",
        JSON_AS_ASCII=False,
        MAX_CONTENT_LENGTH=1024 * 1024,  # larger bodies get 413
        API_SPEC_OPTIONS={
            "components": {
                "securitySchemes": {
                    "bearerAuth": {
                        "type": "http",
                        "scheme": "bearer",
                        "bearerFormat": "JWT",
                        "description": "onlinestudy token --role admin|manager|student",
                    }
                }
            },
            "security": [{"bearerAuth": []}],
        },
    )
    # Korean stays readable in responses (Flask's default provider, typed as the base class).
    cast(DefaultJSONProvider, app.json).ensure_ascii = False
    if traced:
        trace_app(app)
    api = OnlineStudyApi(app)
    register_error_handlers(app)
    refuse_unstorable_text(app)
    pipeline = PipelineCollector(
        c.db.session, c.celery, tuple(BY_CONSUMER), lambda: c.score_chain.breaker.current_state
    )
    install_observability(
        app, pipeline, HeartbeatCollector(settings.heartbeat_files), settings.metrics_token
    )
    # After the metrics: 401s get a request id too.
    limits = install_security(app, settings, c.tokens, c.main_session)
    for blueprint in (
        *orders_api.blueprints(c.orders_uow, c.read_session, c.learning_overloaded, limits),
        *learning_api.blueprints(c.learning_uow),
        *evaluation_api.blueprints(c.evaluation_uow, c.score_chain),
        *notification_api.blueprints(c.notification_uow),
        *mypage_api.blueprints(c.read_session),
        *health.blueprints(c.main_session, c.celery),
    ):
        api.register_blueprint(blueprint)
    app.register_blueprint(docs.blueprint(app.config["API_TITLE"]))
    return app
