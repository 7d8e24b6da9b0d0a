"""/docs: Swagger UI over /openapi.json, its files served by the API itself from the pinned
swagger-ui-bundle-v2 package, so the page works without internet and runs no third-party
script on the API's origin (where users paste their tokens into the Authorize dialog)."""

from __future__ import annotations

from html import escape

from flask import Blueprint, Response, abort, send_from_directory, url_for
from swagger_ui_bundle import swagger_ui_path

# The folder is named after the Swagger UI version (swagger-ui-5.31.0): its files never change
# under one URL, so browsers may keep them.
VERSION_DIR = swagger_ui_path.name
ASSETS = frozenset({"swagger-ui.css", "swagger-ui-bundle.js", "favicon-32x32.png"})

# Only this origin's files; no inline script or style. Swagger UI's icons are data: URIs.
PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

# The spec's URL travels in a data attribute, not an inline script, so the CSP needs no hash.
# validatorUrl null: Swagger UI would otherwise send the spec to a public validator.
START_JS = """window.addEventListener("load", function () {
  var root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.dataset.specUrl,
    dom_id: "#swagger-ui",
    validatorUrl: null,
    deepLinking: true
  });
});
"""


def blueprint(title: str) -> Blueprint:
    docs = Blueprint("docs", __name__)

    @docs.get("/docs")
    def page() -> Response:
        def asset(name: str) -> str:
            return escape(url_for("docs.asset", version=VERSION_DIR, name=name))

        html = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{escape(title)}</title>
<link rel="stylesheet" href="{asset("swagger-ui.css")}">
<link rel="icon" type="image/png" href="{asset("favicon-32x32.png")}">
</head>
<body>
<div id="swagger-ui" data-spec-url="{escape(url_for("api-docs.openapi_json"))}"></div>
<script src="{asset("swagger-ui-bundle.js")}"></script>
<script src="{escape(url_for("docs.start"))}"></script>
</body>
</html>
"""
        return Response(html, mimetype="text/html", headers={"Content-Security-Policy": PAGE_CSP})

    @docs.get("/docs/start.js")
    def start() -> Response:
        return Response(START_JS, mimetype="text/javascript")

    @docs.get("/docs/<version>/<name>")
    def asset(version: str, name: str) -> Response:
        if version != VERSION_DIR or name not in ASSETS:
            abort(404)
        response = send_from_directory(swagger_ui_path, name)
        response.headers["Cache-Control"] = "public, max-age=31536000, immutable"
        return response

    return docs
