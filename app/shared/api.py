"""What every context's API shares: the error body of SPEC 8, phone fields, paging, and
input refused before it reaches a view (app.shared.json_input)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import wraps
from http import HTTPStatus
from typing import Any, TypeVar

import flask_smorest
from flask import Flask, Request, Response, jsonify, request
from flask_smorest import Api, abort
from flask_smorest.pagination import PaginationParameters
from marshmallow import Schema, ValidationError, fields, missing
from sqlalchemy.exc import OperationalError
from webargs.flaskparser import FlaskParser, is_json_request
from werkzeug.exceptions import HTTPException

from app.shared.errors import Conflict, DomainError, InvalidInput, NotFound, Unavailable
from app.shared.json_input import RefusedInput, check_text, read_json
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


class BodyParser(FlaskParser):
    """webargs' parser, reading JSON bodies with read_json: bounded depth and numbers, and
    text a database can store. The one place a body is parsed, after the token and the rate
    limit are checked."""

    def _raw_load_json(self, req: Request) -> Any:
        if not is_json_request(req):
            return missing
        try:
            return read_json(req.get_data(cache=True))
        except RefusedInput as exc:
            abort(exc.status, message=exc.message, errors={"json": [exc.message]})


class Blueprint(flask_smorest.Blueprint):
    """flask-smorest's Blueprint that reads bodies with BodyParser, and whose paging also
    bounds `page` (it bounds only page_size): a page far out would overflow the database's
    OFFSET."""

    ARGUMENTS_PARSER = BodyParser()
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


def refuse_unstorable_text(app: Flask) -> None:
    """Text that a database cannot store (NUL, a lone surrogate) in the path or the query
    string gets a 422 on every route, rather than a failure deep inside a query. Bodies are
    checked as they are read (BodyParser)."""

    @app.before_request
    def _storable_text_only() -> None:
        try:
            check_text(request.path)
            for key, value in request.args.items(multi=True):
                check_text(key)
                check_text(value)
        except RefusedInput as exc:
            abort(exc.status, message=exc.message)
