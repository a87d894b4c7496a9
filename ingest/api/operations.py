"""One declaration per HTTP operation: its route, its query validation and its OpenAPI entry.

An `Operation` says what a handler accepts and answers (parameters with their schemas, the
body schema, every response and error status). The router, the query-parameter checks that
run before the handler and `/api/openapi.json` are all generated from it, so the document
cannot promise what the handler does not do, nor the handler answer what the document omits.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ingest.api.common import DEFAULT_LIMIT, MAX_LIMIT
from ingest.api.validation import compile_schema, describe
from ingest.errors import ApiError, BadRequest, ClientGone
from schemas.store.pagination import decode_cursor

log = logging.getLogger(__name__)

Handler = Callable[[Request], Awaitable[Response]]
Schema = dict[str, Any]

# Statuses every operation of a kind can answer, described once.
UNAUTHORIZED = "Missing or unknown API key."
NOT_FOUND = "No such object, or it belongs to another owner."
BAD_REQUEST = "A query parameter does not satisfy its schema, or the body is not JSON; `field` names the parameter."
TOO_LARGE = "Body larger than the configured limit."
BODY_TIMEOUT = "The body did not arrive within the body-read timeout."
INVALID = "The body does not satisfy the schema; `field` names the place."
UNAVAILABLE = "Storage unavailable; retry later (see `Retry-After`)."

_QUERY_KEY = "hookyard.query"


def ref(name: str) -> dict[str, str]:
    """A reference to a component schema."""
    return {"$ref": f"#/components/schemas/{name}"}


@dataclass(frozen=True, slots=True)
class Param:
    """A path or query parameter.

    Query values are converted (`integer`, `boolean`) and checked against `schema` before the
    handler runs; a violation answers 400 naming the parameter. `parse`, when given, checks
    what a schema cannot say (an opaque cursor): a `ValueError` from it answers 400 `problem`.
    Path parameters are described only: a malformed id names nothing, so handlers answer 404.
    """

    name: str
    schema: Schema
    description: str = ""
    where: Literal["query", "path"] = "query"
    parse: Callable[[str], object] | None = None
    problem: str = ""
    validator: Draft202012Validator = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "validator", compile_schema(self.schema))

    def document(self) -> Schema:
        """The OpenAPI parameter object."""
        doc: Schema = {"name": self.name, "in": self.where, "required": self.where == "path", "schema": self.schema}
        if self.description:
            doc["description"] = self.description
        return doc


@dataclass(frozen=True, slots=True)
class Body:
    """The request body: a component schema name or an inline schema, and its media type."""

    schema: Schema | str
    required: bool = True
    media_type: str = "application/json"
    description: str = ""

    @property
    def is_json(self) -> bool:
        """JSON bodies can fail the schema (422); other media types are the handler's own business."""
        return self.media_type == "application/json"

    def document(self) -> Schema:
        """The OpenAPI requestBody object."""
        schema = ref(self.schema) if isinstance(self.schema, str) else self.schema
        doc: Schema = {"required": self.required, "content": {self.media_type: {"schema": schema}}}
        if self.description:
            doc["description"] = self.description
        return doc


@dataclass(frozen=True, slots=True)
class Reply:
    """One documented response: a description, and a schema unless it has no body."""

    description: str
    schema: Schema | str | None = None
    media_type: str = "application/json"

    def document(self) -> Schema:
        """The OpenAPI response object."""
        doc: Schema = {"description": self.description}
        if self.schema is not None:
            schema = ref(self.schema) if isinstance(self.schema, str) else self.schema
            doc["content"] = {self.media_type: {"schema": schema}}
        return doc


def error(description: str) -> Reply:
    """An error response in the one JSON error shape."""
    return Reply(description, "Error")


@dataclass(frozen=True, slots=True)
class Operation:
    """One method on one path, and the handler that serves it."""

    method: str
    path: str
    summary: str
    tag: str
    handler: Handler
    replies: Mapping[int, Reply]
    params: tuple[Param, ...] = ()
    body: Body | None = None
    errors: Mapping[int, Reply] = field(default_factory=dict)
    public: bool = False
    storage: bool = True
    description: str = ""

    def statuses(self) -> dict[int, Reply]:
        """Every status this operation can answer: its replies, the errors its shape implies, its own."""
        implied: dict[int, Reply] = {}
        if not self.public:
            implied[401] = error(UNAUTHORIZED)
        if any(p.where == "query" for p in self.params) or (self.body is not None and self.body.is_json):
            implied[400] = error(BAD_REQUEST)
        if any(p.where == "path" for p in self.params):
            implied[404] = error(NOT_FOUND)
        if self.body is not None:
            implied[408] = error(BODY_TIMEOUT)
            implied[413] = error(TOO_LARGE)
            if self.body.is_json:
                implied[422] = error(INVALID)
        if self.storage:
            implied[503] = error(UNAVAILABLE)
        return {**implied, **self.errors, **self.replies}

    def document(self) -> Schema:
        """The OpenAPI operation object."""
        doc: Schema = {
            "operationId": f"{self.method.lower()}{_camel(self.path)}",
            "summary": self.summary,
            "tags": [self.tag],
        }
        if self.description:
            doc["description"] = self.description
        if self.params:
            doc["parameters"] = [p.document() for p in self.params]
        if self.body is not None:
            doc["requestBody"] = self.body.document()
        doc["responses"] = {str(status): reply.document() for status, reply in sorted(self.statuses().items())}
        if self.public:
            doc["security"] = []
        return doc

    async def endpoint(self, request: Request) -> Response:
        """Check the declared query parameters, then run the handler."""
        request.scope[_QUERY_KEY] = _checked_query(self.params, request)
        try:
            response = await self.handler(request)
        except ClientGone:
            raise  # the client left mid-body: nobody receives an answer to document
        except ApiError as exc:
            self._check_documented(exc.status)
            raise
        self._check_documented(response.status_code)
        return response

    def _check_documented(self, status: int) -> None:
        # A tripwire for drift the fuzz run did not reach: the answer still goes out. The common
        # answers are checked against a set built once, not by building `statuses()` again.
        if status in self.replies:
            return
        if status not in self.statuses():
            log.error("%s %s answered %d, which its declaration does not list", self.method, self.path, status)


def _camel(path: str) -> str:
    words = path.replace("{", "by_").replace("}", "").replace("-", "_").replace(".", "_").split("/")
    return "".join(part[:1].upper() + part[1:] for word in words for part in word.split("_"))


def operation(
    method: str,
    path: str,
    summary: str,
    tag: str,
    replies: Mapping[int, Reply],
    *,
    params: Iterable[Param] = (),
    body: Body | None = None,
    errors: Mapping[int, Reply] | None = None,
    public: bool = False,
    storage: bool = True,
    description: str = "",
) -> Callable[[Handler], Operation]:
    """Declare the operation a handler serves: `@operation("GET", "/api/x", ...)` above it."""

    def declare(handler: Handler) -> Operation:
        return Operation(
            method,
            path,
            summary,
            tag,
            handler,
            dict(replies),
            tuple(params),
            body,
            dict(errors or {}),
            public,
            storage,
            description,
        )

    return declare


def declared_query(request: Request) -> dict[str, Any]:
    """The declared query parameters, converted, checked and parsed (absent ones omitted)."""
    values: dict[str, Any] = request.scope.get(_QUERY_KEY, {})
    return values


def _convert(raw: str, schema: Schema) -> Any:
    kind = schema.get("type")
    if kind == "integer":
        text = raw[1:] if raw.startswith("-") else raw
        return int(raw) if text.isascii() and text.isdigit() and len(text) <= 18 else raw
    if kind == "boolean":
        return {"true": True, "false": False}.get(raw, raw)
    return raw


def _checked_query(params: tuple[Param, ...], request: Request) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for param in params:
        if param.where != "query":
            continue
        raw = request.query_params.get(param.name)
        if raw is None:
            continue
        value = _convert(raw, param.schema)
        problem = best_match(param.validator.iter_errors(value))
        if problem is not None:
            raise BadRequest(f"{param.name} {describe(problem)}", field=param.name)
        if param.parse is not None:
            try:
                value = param.parse(raw)
            except ValueError:
                raise BadRequest(param.problem or f"{param.name} is not valid", field=param.name) from None
        values[param.name] = value
    return values


UUID_SCHEMA: Schema = {"type": "string", "format": "uuid"}
ID = Param("id", UUID_SCHEMA, where="path")
PAGING = (
    Param("limit", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT}, "Page size."),
    Param(
        "cursor",
        {"type": "string"},
        "`next_cursor` of the previous page.",
        parse=decode_cursor,
        problem="cursor is not valid; pass next_cursor from a previous page",
    ),
)


def page_of(item: str) -> Schema:
    """A page of lists: `{"items": [...], "next_cursor": str | null}`."""
    return {
        "type": "object",
        "required": ["items", "next_cursor"],
        "properties": {
            "items": {"type": "array", "items": ref(item)},
            "next_cursor": {"type": ["string", "null"], "description": "Pass as `cursor`."},
        },
    }


def routes(operations: Iterable[Operation]) -> list[Route]:
    """One route per path, dispatching on the method, so a 405 lists every allowed method."""
    by_path: dict[str, dict[str, Operation]] = {}
    for op in operations:
        methods = by_path.setdefault(op.path, {})
        if op.method in methods:
            raise ValueError(f"{op.method} {op.path} is declared twice")
        methods[op.method] = op
    return [_route(path, methods) for path, methods in by_path.items()]


def _route(path: str, methods: dict[str, Operation]) -> Route:
    async def dispatch(request: Request) -> Response:
        method = "GET" if request.method == "HEAD" else request.method
        return await methods[method].endpoint(request)

    return Route(path, dispatch, methods=list(methods))


def paths(operations: Iterable[Operation]) -> dict[str, dict[str, Schema]]:
    """The OpenAPI `paths` object."""
    out: dict[str, dict[str, Schema]] = {}
    for op in operations:
        out.setdefault(op.path, {})[op.method.lower()] = op.document()
    return out
