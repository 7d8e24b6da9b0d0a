"""What every context's API shares: the error body of SPEC 8, phone fields, paging."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import wraps
from http import HTTPStatus
from typing import Any, TypeVar

import flask_smorest
from flask import Flask, Response, jsonify
from flask_smorest import Api, abort
from flask_smorest.pagination import PaginationParameters
from marshmallow import Schema, ValidationError, fields
from sqlalchemy.exc import OperationalError
from werkzeug.exceptions import HTTPException

from app.shared.errors import Conflict, DomainError, InvalidInput, NotFound, Unavailable
from app.shared.phone import normalize_mobile

T = TypeVar("T")

_STATUS: dict[type[DomainError], int] = {
    NotFound: 404,
    Conflict: 409,
    InvalidInput: 422,
    Unavailable: 503,
}

_MESSAGES = {
    400: "The request could not be read (malformed JSON?); see errors.",
    404: "No such resource.",
    405: "This method is not allowed here.",
    413: "The request body is too large.",
    422: "The request is not valid; see errors.",
    500: "Internal error.",
}


class Blueprint(flask_smorest.Blueprint):
    """flask-smorest's Blueprint whose paging also bounds `page` (it bounds only page_size):
    a page far out would overflow the database's OFFSET."""

    MAX_PAGE = 1_000_000

    def arguments(
        self, schema: type[Schema] | Schema, **kwargs: Any
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        # webargs instantiates a schema class on every request, deep-copying its fields; one
        # instance serves them all (the schemas keep no state between loads).
        return super().arguments(schema() if isinstance(schema, type) else schema, **kwargs)

    def paginate(
        self, pager: type[Any] | None = None, **kwargs: Any
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        paginated = super().paginate(pager, **kwargs)

        def decorator(view: Callable[..., Any]) -> Callable[..., Any]:
            @wraps(view)
            def bounded(*args: Any, pagination_parameters: PaginationParameters, **kw: Any) -> Any:
                if pagination_parameters.page > self.MAX_PAGE:
                    abort(
                        422,
                        message="The request is not valid; see errors.",
                        errors={"query": {"page": [f"Must be at most {self.MAX_PAGE}."]}},
                    )
                return view(*args, pagination_parameters=pagination_parameters, **kw)

            return paginated(bounded)

        return decorator


def page(
    pagination: PaginationParameters, fetch: Callable[[int, int], tuple[list[T], int]]
) -> list[T]:
    """The page a paginated view asked for: `fetch(offset, limit)` returns its items and the
    total, which flask-smorest sends in the X-Pagination header."""
    items, pagination.item_count = fetch(pagination.first_item, pagination.page_size)
    return items


class OnlineStudyApi(Api):
    """flask-smorest's Api, whose error body always carries a message (SPEC 8)."""

    def handle_http_exception(
        self, error: HTTPException
    ) -> tuple[dict[str, Any], int, dict[str, str]]:
        payload, code, headers = super().handle_http_exception(error)
        payload.setdefault("message", _MESSAGES.get(code, error.name))
        return payload, code, headers


def error_body(
    status: int, message: str, errors: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {"code": status, "status": HTTPStatus(status).phrase, "message": message}
    if errors:
        body["errors"] = errors
    return body


def register_error_handlers(app: Flask) -> None:
    """Domain errors become 4xx/503 in flask-smorest's error body, in one place for all views.

    Everything else (validation, unknown routes, bad JSON) is flask-smorest's own handler."""

    @app.errorhandler(OperationalError)
    def _database_unavailable(exc: OperationalError) -> Response:
        # A database restart or failover is an outage, not a bug: 503, try again shortly.
        response = jsonify(error_body(503, "the database is unavailable; try again shortly"))
        response.status_code = 503
        response.headers["Retry-After"] = "2"
        return response

    @app.errorhandler(DomainError)
    def _domain_error(exc: DomainError) -> Response:
        status = next(code for kind, code in _STATUS.items() if isinstance(exc, kind))
        body = error_body(status, exc.message)
        if exc.reason:
            body["status"] = exc.reason
        response = jsonify(body)
        response.status_code = status
        if isinstance(exc, Unavailable):
            response.headers["Retry-After"] = str(exc.retry_after_s)
        return response


class KoreanMobile(fields.String):
    """A Korean mobile number, normalized to 010-1234-5678 on load."""

    def _deserialize(
        self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any
    ) -> str:
        raw = super()._deserialize(value, attr, data, **kwargs)
        try:
            return normalize_mobile(raw)
        except ValueError as exc:
            raise ValidationError(str(exc)) from None


def refuse_nul_characters(app: Flask) -> None:
    """PostgreSQL text cannot hold U+0000: refuse it anywhere in a request with a 422 rather
    than fail deep inside a query."""
    from flask import request
    from flask_smorest import abort

    def has_nul(value: object) -> bool:
        if isinstance(value, str):
            return "\x00" in value
        if isinstance(value, dict):
            return any(has_nul(k) or has_nul(v) for k, v in value.items())
        if isinstance(value, list):
            return any(has_nul(v) for v in value)
        return False

    @app.before_request
    def _no_nul() -> None:
        if (
            has_nul(request.path)
            or has_nul(list(request.args.values()))
            or (request.is_json and has_nul(request.get_json(silent=True)))
        ):
            abort(422, message="NUL characters are not accepted")
