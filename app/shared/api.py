"""What every context's API shares: the error body of SPEC 8, phone fields, paging."""

from __future__ import annotations

from http import HTTPStatus

from flask import Flask, jsonify
from flask_smorest import Api
from marshmallow import ValidationError, fields

from app.shared.errors import Conflict, DomainError, InvalidInput, NotFound, Unavailable
from app.shared.phone import normalize_mobile

_STATUS = {NotFound: 404, Conflict: 409, InvalidInput: 422, Unavailable: 503}

_MESSAGES = {
    400: "The request could not be read (malformed JSON?); see errors.",
    404: "No such resource.",
    405: "This method is not allowed here.",
    413: "The request body is too large.",
    422: "The request is not valid; see errors.",
    500: "Internal error.",
}


class OnlineStudyApi(Api):
    """flask-smorest's Api, whose error body always carries a message (SPEC 8)."""

    def handle_http_exception(self, error):
        payload, code, headers = super().handle_http_exception(error)
        payload.setdefault("message", _MESSAGES.get(code, error.name))
        return payload, code, headers


def error_body(status: int, message: str, errors: dict | None = None) -> dict:
    body = {"code": status, "status": HTTPStatus(status).phrase, "message": message}
    if errors:
        body["errors"] = errors
    return body


def register_error_handlers(app: Flask) -> None:
    """Domain errors become 4xx/503 in flask-smorest's error body, in one place for all views.

    Everything else (validation, unknown routes, bad JSON) is flask-smorest's own handler."""

    @app.errorhandler(DomainError)
    def _domain_error(exc: DomainError):
        status = next(code for kind, code in _STATUS.items() if isinstance(exc, kind))
        response = jsonify(error_body(status, exc.message))
        response.status_code = status
        if isinstance(exc, Unavailable):
            response.headers["Retry-After"] = str(exc.retry_after_s)
        return response


class KoreanMobile(fields.String):
    """A Korean mobile number, normalized to 010-1234-5678 on load."""

    def _deserialize(self, value, attr, data, **kwargs):
        raw = super()._deserialize(value, attr, data, **kwargs)
        try:
            return normalize_mobile(raw)
        except ValueError as exc:
            raise ValidationError(str(exc)) from None
