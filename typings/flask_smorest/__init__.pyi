"""The part of flask-smorest 0.47.0 that onlinestudy uses, typed: the library ships no types.

Decorators that register documentation give the view back unchanged; those that parse a request
(`arguments`, `paginate`) pass the view extra arguments, so they give back a plain callable.
"""

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import flask
from marshmallow import Schema
from webargs.flaskparser import abort as abort
from werkzeug.exceptions import HTTPException

_T = TypeVar("_T")
_View = Callable[..., Any]

class Blueprint(flask.Blueprint):
    description: str
    def __init__(self, name: str, import_name: str, *args: Any, **kwargs: Any) -> None: ...
    def route(
        self,
        rule: str,
        *,
        parameters: list[Any] | None = None,
        tags: list[str] | None = None,
        **options: Any,
    ) -> Callable[[_T], _T]: ...
    def arguments(
        self,
        schema: type[Schema] | Schema,
        *,
        location: str = "json",
        content_type: str | None = None,
        required: bool = True,
        description: str | None = None,
        example: Any = None,
        examples: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> Callable[[_View], _View]: ...
    def response(
        self,
        status_code: int | str,
        schema: type[Schema] | Schema | None = None,
        *,
        content_type: str | None = None,
        description: str | None = None,
        example: Any = None,
        examples: Mapping[str, Any] | None = None,
        headers: Mapping[str, Any] | None = None,
    ) -> Callable[[_T], _T]: ...
    def alt_response(
        self,
        status_code: int | str,
        response: str | None = None,
        *,
        schema: type[Schema] | Schema | None = None,
        content_type: str | None = None,
        description: str | None = None,
        example: Any = None,
        examples: Mapping[str, Any] | None = None,
        headers: Mapping[str, Any] | None = None,
        success: bool = False,
    ) -> Callable[[_T], _T]: ...
    def paginate(
        self,
        pager: type[Any] | None = None,
        *,
        page: int | None = None,
        page_size: int | None = None,
        max_page_size: int | None = None,
    ) -> Callable[[_View], _View]: ...
    @staticmethod
    def doc(**kwargs: Any) -> Callable[[_T], _T]: ...

class Api:
    def __init__(
        self,
        app: flask.Flask | None = None,
        *,
        spec_kwargs: Mapping[str, Any] | None = None,
        config_prefix: str = "",
    ) -> None: ...
    def init_app(
        self, app: flask.Flask, *, spec_kwargs: Mapping[str, Any] | None = None
    ) -> None: ...
    def register_blueprint(
        self, blp: Blueprint, *, parameters: list[Any] | None = None, **options: Any
    ) -> None: ...
    def handle_http_exception(
        self, error: HTTPException
    ) -> tuple[dict[str, Any], int, dict[str, str]]: ...
