"""What every context's API shares: the error body of SPEC 8, phone fields, paging."""

from __future__ import annotations

from http import HTTPStatus

from flask import Flask, jsonify
from marshmallow import ValidationError, fields
from werkzeug.exceptions import HTTPException

from app.shared.errors import Conflict, DomainError, InvalidInput, NotFound, Unavailable
from app.shared.phone import normalize_mobile

_STATUS = {NotFound: 404, Conflict: 409, InvalidInput: 422, Unavailable: 503}


def error_body(status: int, message: str, errors: dict | None = None) -> dict:
    body = {"code": status, "status": HTTPStatus(status).phrase, "message": message}
    if errors:
        body["errors"] = errors
    return body


def register_error_handlers(app: Flask) -> None:
    """Domain errors become 4xx/503 in flask-smorest's error body, in one place for all views."""

    @app.errorhandler(DomainError)
    def _domain_error(exc: DomainError):
        status = next(code for kind, code in _STATUS.items() if isinstance(exc, kind))
        response = jsonify(error_body(status, exc.message))
        response.status_code = status
        if isinstance(exc, Unavailable):
            response.headers["Retry-After"] = str(exc.retry_after_s)
        return response

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        # Errors raised outside flask-smorest (unknown route, wrong method, bad JSON) get the
        # same body as those it raises.
        data = getattr(exc, "data", None) or {}
        body = error_body(exc.code or 500, data.get("message") or exc.description or "")
        if data.get("messages"):
            body["errors"] = data["messages"]
        response = jsonify(body)
        response.status_code = exc.code or 500
        for name, value in (getattr(exc, "data", None) or {}).get("headers", {}).items():
            response.headers[name] = value
        return response


class KoreanMobile(fields.String):
    """A Korean mobile number, normalized to 010-1234-5678 on load."""

    def _deserialize(self, value, attr, data, **kwargs):
        raw = super()._deserialize(value, attr, data, **kwargs)
        try:
            return normalize_mobile(raw)
        except ValueError as exc:
            raise ValidationError(str(exc)) from None
