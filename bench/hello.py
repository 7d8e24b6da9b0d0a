"""The hello-JSON baseline: the smallest Flask app, served by gunicorn like the API.

gunicorn --workers 2 'bench.hello:create_app()'
"""

from __future__ import annotations

from flask import Flask, jsonify


def create_app() -> Flask:
    app = Flask(__name__)

    @app.get("/hello")
    def hello():
        return jsonify(hello="world")

    @app.get("/health/live")
    def live():
        return jsonify(status="ok")

    return app
