"""onlinestudy: `create_app()` builds the Flask API; nothing happens at import time."""

from __future__ import annotations

import os
from pathlib import Path

from flask import Flask

from app.config import Settings


def create_app(settings: Settings | None = None, container=None) -> Flask:
    from app import models  # noqa: F401  (all tables on the metadata)
    from app.bootstrap import Container
    from app.evaluation.api import evaluations_blp
    from app.health import health_blp
    from app.learning.api import learnings_blp, managers_blp
    from app.logging import configure_logging
    from app.mypage.api import mypage_blp
    from app.notification.api import sms_blp
    from app.observability import install as install_observability
    from app.orders.api import courses_blp, orders_blp
    from app.security import install as install_security
    from app.shared.api import OnlineStudyApi, refuse_nul_characters, register_error_handlers

    settings = settings or Settings.from_env()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):  # each gunicorn worker writes its metrics there
        Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]).mkdir(parents=True, exist_ok=True)
    configure_logging(settings.log_level)
    app = Flask(__name__)
    app.config.update(
        API_TITLE="onlinestudy",
        API_VERSION="1.0",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/",
        OPENAPI_JSON_PATH="openapi.json",
        OPENAPI_SWAGGER_UI_PATH="/docs",
        OPENAPI_SWAGGER_UI_URL="https://cdn.jsdelivr.net/npm/swagger-ui-dist/",
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
    app.json.ensure_ascii = False  # Korean stays readable in responses
    app.extensions["onlinestudy"] = container = container or Container(settings)
    api = OnlineStudyApi(app)
    for blueprint in (
        courses_blp,
        orders_blp,
        managers_blp,
        learnings_blp,
        evaluations_blp,
        sms_blp,
        mypage_blp,
        health_blp,
    ):
        api.register_blueprint(blueprint)
    register_error_handlers(app)
    refuse_nul_characters(app)
    install_observability(app, container)
    install_security(app, settings, container.tokens)  # after: 401s get a request id too
    return app
