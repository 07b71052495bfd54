"""flask-smorest, adapted to the contract.

- ``Api``: errors in the contract's envelope, Bearer auth and the envelope in the
  OpenAPI document, ``If-Match`` documented as optional.
- ``Blueprint``: JSON bodies parsed strictly (exact decimals, no NaN), ``If-Match``
  optional, ETags hashed from the body as sent (lists page in core/lists/listing.py),
  ``fields`` trimming what is sent (core/web/sparse.py), ``Last-Modified`` and the
  date preconditions beside the ETag's (core/web/conditions.py).
- ``IdConverter``: ``<id:name>`` path segments, documented as 32-bit ids.
- ``swagger_assets``: Swagger UI's files, served by the service itself (no CDN).

Public hooks are used where flask-smorest has them (``handle_http_exception``,
``check_etag``, ``ERROR_SCHEMA``, ``ARGUMENTS_PARSER``, ``_prepare_response_content``).
What they do not reach is done by overriding private methods: the documented error
responses and If-Match header are registered only in ``_register_*``, the 428 and the
unchecked-ETag warning live in the ETag mixin's ``_check_*``/``_verify_*``, the ETag's
computation in ``_generate_etag`` and ``_set_etag_in_response``, and webargs parses
bodies in ``_raw_load_json``, the hook its ``load_json`` is built on.
tests/api/test_smorest_internals.py fails, naming the method, if an upgrade renames one
of them or changes its parameters.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from datetime import datetime
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, ClassVar, NoReturn, TypeVar, cast

import flask_smorest
import marshmallow as ma
from flask import Blueprint as FlaskBlueprint
from flask import Request, Response, current_app, g, request, send_from_directory
from flask.typing import ResponseReturnValue
from flask_smorest import etag as fs_etag
from flask_smorest.exceptions import NotModified
from flask_smorest.utils import prepare_response, resolve_schema_instance
from swagger_ui_bundle import swagger_ui_path
from typing_extensions import override
from webargs import core
from webargs.flaskparser import FlaskParser, is_json_request
from werkzeug.exceptions import HTTPException
from werkzeug.http import quote_etag
from werkzeug.routing import BaseConverter, ValidationError

from core.web import conditions, errors, sparse
from core.web.body import MalformedBodyError, json_body
from core.web.fields import MAX_ID
from core.web.openapi import ResponseSchema


class JSONParser(FlaskParser):
    """Parses bodies as strict JSON, with numbers that are decimals as exact Decimals.

    ``19.99`` arrives as ``Decimal("19.99")``, never as a float. A missing body is a
    422 (``{}`` is a body: an empty PATCH is a no-op). Input that the
    standard library cannot take (digits beyond Python's limit, nesting deeper than
    its recursion limit, NaN) is malformed JSON: 400, not a crash.
    """

    def handle_error(
        self,
        error: ma.ValidationError,
        req: Request,
        schema: ma.Schema,
        *,
        error_status_code: int | None,
        error_headers: Mapping[str, str] | None,
    ) -> NoReturn:
        errors.refused_early()  # the view never ran: Idempotency-Key keeps no answer
        super().handle_error(
            error, req, schema, error_status_code=error_status_code, error_headers=error_headers
        )

    def _raw_load_json(self, req: Request) -> Any:
        raw = req.get_data(cache=True)
        if not raw:
            # Every body argument is documented as required: none at all is not "{}".
            raise ma.ValidationError("A JSON body is required.")
        if not is_json_request(req):
            return core.missing
        try:
            return json_body()  # the request's one parse, shared with the hooks
        except MalformedBodyError as exc:
            raise json.JSONDecodeError(str(exc), exc.text, 0) from None


class ErrorSchema(ResponseSchema):
    """The error envelope (documentation only)."""

    sometimes = ("errors", "error", "request_id", "trace_id")  # by status, as described

    # One whole error (core/web/openapi.SchemaDoc): the properties' examples are of
    # different errors, and do not go together.
    example: ClassVar[dict[str, Any]] = errors.envelope(404, "Item 7 not found.")

    code = ma.fields.Integer(metadata={"description": "HTTP status code", "example": 404})
    status = ma.fields.String(metadata={"description": "Reason phrase", "example": "Not Found"})
    message = ma.fields.String(
        metadata={"description": "What went wrong", "example": "Item 7 not found."}
    )
    errors = ma.fields.Dict(
        metadata={
            "description": "On 400/422: messages by location and field",
            "example": {"json": {"price": ["Must have at most 2 decimal places."]}},
        }
    )
    error = ma.fields.String(
        metadata={
            "description": "On 401/403: authorization_required, invalid_token, token_expired, "
            "token_revoked, fresh_token_required, user_not_found, forbidden or "
            "insufficient_scope (an API key outside its scopes); on 409: already_exists "
            "(a name, SKU, username or email taken), tag_in_use, user_owns_stores, "
            "last_admin, insufficient_stock, stock_changed, stock_overflow, item_archived, "
            "store_busy, job_not_cancelable, limit_reached, idempotency_key_in_use, or "
            "conflict (another state the change cannot be made in); on 422: "
            "idempotency_key_reused, invalid_reset_token",
            "example": "token_revoked",
        }
    )
    request_id = ma.fields.String(
        metadata={
            "description": "On 5xx: the request's X-Request-ID",
            "example": "3f2b9c0a5d8e4e1f9a7b6c5d4e3f2a1b",
        }
    )
    trace_id = ma.fields.String(
        allow_none=True,
        metadata={
            "description": "On 5xx: the request's OpenTelemetry trace id (null with tracing off)",
            "example": "4bf92f3577b34da6a3ce929d0e0e4736",
        },
    )


# flask-smorest ships no types: to mypy its classes are Any.
class Api(flask_smorest.Api):  # type: ignore[misc]
    ERROR_SCHEMA = ErrorSchema

    def handle_http_exception(self, error: HTTPException) -> ResponseReturnValue:
        return errors.handle_http_exception(error)

    def _register_responses(self) -> None:
        """flask-smorest's error responses, each with an example of its envelope."""
        examples: dict[int, dict[str, Any]] = {
            422: {"errors": {"json": {"price": ["Must have at most 2 decimal places."]}}},
            500: {
                "request_id": "3f2b9c0a5d8e4e1f9a7b6c5d4e3f2a1b",
                "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
            },
            503: {
                "request_id": "3f2b9c0a5d8e4e1f9a7b6c5d4e3f2a1b",
                "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
            },
        }
        for status in HTTPStatus:
            response: dict[str, Any] = {"description": status.phrase}
            if status >= 400:
                response["schema"] = self.ERROR_SCHEMA
                response["example"] = errors.envelope(status) | examples.get(status, {})
            prepare_response(response, self.spec, self.DEFAULT_RESPONSE_CONTENT_TYPE)
            self.spec.components.response(status.name, response, lazy=True)
        response = {
            "description": "Any other error, in the same envelope",
            "schema": self.ERROR_SCHEMA,
        }
        prepare_response(response, self.spec, self.DEFAULT_RESPONSE_CONTENT_TYPE)
        self.spec.components.response(self.DEFAULT_ERROR_RESPONSE_NAME, response, lazy=True)

    def _register_etag_headers(self) -> None:
        # The contract makes If-Match optional: flask-smorest documents it as required.
        self.spec.components.parameter(
            "IF_NONE_MATCH", "header", fs_etag.IF_NONE_MATCH_HEADER, lazy=True
        )
        self.spec.components.parameter(
            "IF_MATCH", "header", {**fs_etag.IF_MATCH_HEADER, "required": False}, lazy=True
        )
        self.spec.components.header("ETAG", fs_etag.ETAG_HEADER, lazy=True)
        for name, what in conditions.DATE_HEADERS.items():
            self.spec.components.parameter(name, "header", what, lazy=True)


F = TypeVar("F", bound=Callable[..., Any])


class Blueprint(flask_smorest.Blueprint):  # type: ignore[misc]
    ARGUMENTS_PARSER = JSONParser()

    if TYPE_CHECKING:
        # flask-smorest ships no types: the decorators the resources use, typed as
        # they behave (each gives back the view or MethodView it is given).
        def route(
            self, rule: str, *, parameters: Any = None, **options: Any
        ) -> Callable[[F], F]: ...

        def arguments(self, schema: Any, **kwargs: Any) -> Callable[[F], F]: ...

        def response(
            self, status_code: int, schema: Any = None, **kwargs: Any
        ) -> Callable[[F], F]: ...

        def alt_response(self, status_code: int, **kwargs: Any) -> Callable[[F], F]: ...

        def doc(self, **kwargs: Any) -> Callable[[F], F]: ...

        def etag(self, obj: F) -> F: ...

        def after_request(self, f: F) -> F: ...

    def _check_precondition(self) -> None:
        """If-Match is optional: without it, a write goes ahead (no 428)."""

    def _verify_check_etag(self) -> None:
        if "If-Match" in request.headers:
            super()._verify_check_etag()

    IF_NONE_MATCH_FAILED = (
        'The resource is as If-None-Match says you have it (or "*": it exists): '
        "nothing was changed."
    )

    def check_etag(self, etag_data: Any, etag_schema: Any = None) -> None:
        """412 when an If-Match header was sent and no longer matches, or an
        If-None-Match was sent and matches (weakly; "*" matches any representation:
        RFC 9110 13.1.2, a change's "only if it is not what I have"). An If-Match
        with no entity-tag one can read (``,``) matches nothing: 412, as any other
        that does not match (Werkzeug's parsed, empty, list would read as no header)."""
        if "If-Match" in request.headers:
            super().check_etag(etag_data, etag_schema)
        if request.if_none_match:
            if etag_schema is not None:
                etag_data = resolve_schema_instance(etag_schema).dump(etag_data)
            if request.if_none_match.contains_weak(self._generate_etag(etag_data)):
                errors.abort(412, message=self.IF_NONE_MATCH_FAILED)

    def check_preconditions(
        self, etag_data: Any, etag_schema: Any, last_modified: datetime | None
    ) -> None:
        """A change's preconditions: If-Match (412 when it does not match), else
        If-Unmodified-Since (412 when changed since ``last_modified``)."""
        self.check_etag(etag_data, etag_schema)
        if last_modified is not None:
            conditions.check_unmodified_since(last_modified)

    @staticmethod
    def set_last_modified(last_modified: datetime) -> None:
        """The read's Last-Modified (core/web/conditions.py), set on the response
        with its ETag and checked against If-Modified-Since."""
        g.last_modified = last_modified

    def _check_not_modified(self, etag: str) -> None:
        """304, carrying the ETag it confirms (RFC 9110 15.4.5).
        If-None-Match compares weakly (RFC 9110 13.1.2: ``W/"x"`` matches ``"x"``);
        If-Match, checked by flask-smorest's ``check_etag``, stays strong. Without
        If-None-Match, If-Modified-Since decides (conditions.not_modified)."""
        if request.method not in self.METHODS_CHECKING_NOT_MODIFIED:
            return
        last_modified = g.get("last_modified")
        if request.if_none_match.contains_weak(etag) or (
            last_modified is not None and conditions.not_modified(last_modified)
        ):
            not_modified = NotModified()
            not_modified.data = {"headers": {"ETag": quote_etag(etag)}}
            raise not_modified

    @staticmethod
    @override
    def _prepare_response_content(data: Any) -> Any:
        """Only the fields the request asked for (``?fields=``), before the body and
        its ETag are made."""
        return sparse.trim(data)

    def _prepare_etag_doc(
        self,
        doc: dict[str, Any],
        doc_info: dict[str, Any],
        *,
        api: Api,
        spec: Any,
        method: str,
        **kwargs: Any,
    ) -> dict[str, Any]:
        doc = super()._prepare_etag_doc(doc, doc_info, api=api, spec=spec, method=method, **kwargs)
        doc.get("responses", {}).pop(428, None)
        if "IF_MATCH" in doc.get("parameters", []):  # a change checks If-None-Match too
            doc["parameters"].append("IF_NONE_MATCH")
        # The date preconditions beside the ETag's: on a read that sends Last-Modified,
        # and on a change that checks them (core/auth/permissions.py).
        ok = doc.get("responses", {}).get(200, {})
        if method.upper() == "GET" and "Last-Modified" in ok.get("headers", {}):
            doc.setdefault("parameters", []).append("IF_MODIFIED_SINCE")
        if doc_info.get("date_preconditions"):
            doc.setdefault("parameters", []).append("IF_UNMODIFIED_SINCE")
        return doc

    # A list's ETag covers its body and the headers that say where it stands.
    ETAG_INCLUDE_HEADERS = ["Link", "X-Pagination", "X-Total-Count"]

    @staticmethod
    @override
    def _generate_etag(etag_data: Any, extra_data: Any = None) -> str:
        """The ETag of the JSON body the data is answered with. check_etag (If-Match on
        a change) dumps the resource again and must arrive at its GET's ETag."""
        response = cast(Response, current_app.json.response(etag_data))  # typed as sansio's
        return _body_etag(response.get_data(), extra_data)

    @override
    def _set_etag_in_response(self, response: Response) -> None:
        """Hashes the body already serialized, instead of serializing the data a
        second time as flask-smorest does."""
        if request.method not in self.METHODS_ALLOWING_SET_ETAG:
            return
        extra = tuple((k, v) for k, v in response.headers if k in self.ETAG_INCLUDE_HEADERS)
        etag = _body_etag(response.get_data(), extra)
        self._check_not_modified(etag)
        response.set_etag(etag)
        if g.get("last_modified") is not None:
            conditions.set_header(response, g.last_modified)


def _body_etag(body: bytes, extra_data: Any) -> str:
    digest = hashlib.sha1(body, usedforsecurity=False)
    if extra_data:
        digest.update(json.dumps(extra_data).encode())
    return digest.hexdigest()


class IdConverter(BaseConverter):
    """``<id:name>``: a positive 32-bit id; anything else is no match (404)."""

    regex = r"[1-9][0-9]{0,9}"
    part_isolating = True

    def to_python(self, value: str) -> int:
        number = int(value)
        if number > MAX_ID:
            raise ValidationError()
        return number

    def to_url(self, value: int) -> str:
        return str(value)


def id_param_schema(_converter: BaseConverter) -> dict[str, Any]:
    return {"type": "integer", "minimum": 1, "maximum": MAX_ID}


swagger_assets = FlaskBlueprint("swagger_assets", __name__)


@swagger_assets.route("/swagger-ui/assets/<path:filename>")
def swagger_asset(filename: str) -> Response:
    """Swagger UI's JavaScript and CSS, from the swagger-ui-bundle package (no CDN)."""
    return send_from_directory(swagger_ui_path, filename, max_age=86400)
