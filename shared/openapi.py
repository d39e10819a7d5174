"""Building blocks of the OpenAPI 3.1 documents that both processes serve at ``GET /openapi.json``.

Each process declares its operations (:class:`Operation`) next to its
routes (``engine_hub.http.openapi``, ``admin_gateway.http.openapi``); this module
holds what they share:

- the schemas of the wire shapes (:mod:`shared.openapi_schemas`, re-exported here);
- helpers for responses, errors (narrowed to the codes a route can give),
  parameters and request bodies;
- :func:`build_document`, and :func:`router_operations`, which lists what the
  real router serves so a test can hold the document and the router to each
  other in both directions;
- :func:`build_openapi_on_startup` and :func:`openapi_json`, which build the
  document once, when the app starts (from its route table), and serve it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

import attrs
from aiohttp import web

from shared.contract import (
    MAX_JSON_DEPTH,
    ErrorCode,
)

# Re-exported: the processes' route tables take these from here with the other building blocks.
from shared.openapi_schemas import JOB_ID as JOB_ID
from shared.openapi_schemas import Schema, object_schema
from shared.openapi_schemas import contract_schemas as contract_schemas
from shared.openapi_schemas import ref as ref
from shared.web import UNMATCHED_ROUTE

OPENAPI_VERSION: Final = "3.1.0"
#: Operations are keyed by (METHOD, path template) in the router's spelling (``/api/jobs/{id}``).
OperationKey = tuple[str, str]

JSON: Final = "application/json"
HTML: Final = "text/html"
FORM: Final = "application/x-www-form-urlencoded"


# -- responses and parameters ---------------------------------------------------------------


def header(description: str, schema: Schema | None = None, *, required: bool = True) -> dict[str, Any]:
    """Return a response header declaration."""
    return {"description": description, "required": required, "schema": schema or {"type": "string"}}


def response(
    description: str,
    schema: Schema | None = None,
    *,
    media: str | Iterable[str] = JSON,
    headers: Mapping[str, Any] | None = None,
    example: Any = None,
) -> dict[str, Any]:
    """Return a response declaration (no body when ``schema`` is ``None`` and ``media`` is JSON)."""
    out: dict[str, Any] = {"description": description}
    medias = [media] if isinstance(media, str) else list(media)
    if schema is not None or medias != [JSON]:
        content: dict[str, Any] = {}
        for kind in medias:
            entry: dict[str, Any] = {"schema": schema if schema is not None else {"type": "string"}}
            if example is not None and kind == JSON:
                entry["example"] = example
            content[kind] = entry
        out["content"] = content
    if headers:
        out["headers"] = dict(headers)
    return out


@attrs.frozen(kw_only=True)
class ErrorCase:
    """One way a route can fail: HTTP status, error code, when it happens, extra headers, media types."""

    status: int
    code: ErrorCode
    when: str
    headers: Mapping[str, Any] = attrs.field(factory=dict)
    media: tuple[str, ...] = (JSON,)


#: How the engine refuses a plan once the job is known; the gateway passes each on as it is.
PLAN_REFUSALS: Final = (
    ErrorCase(status=400, code=ErrorCode.UNKNOWN_TYPE, when="the job's type left the catalog"),
    ErrorCase(status=409, code=ErrorCode.NO_PLAN, when="the job's type declares no plan"),
    ErrorCase(status=409, code=ErrorCode.NOT_READY, when="the job is not READY"),
    ErrorCase(
        status=429,
        code=ErrorCode.THROTTLED,
        when="the engine runs as many plans at once as it allows",
        headers={
            "Retry-After": header("Seconds to wait before trying again.", {"type": "string", "pattern": "^[0-9]+$"})
        },
    ),
)


def error_schema(codes: Iterable[ErrorCode]) -> Schema:
    """The error body with ``code`` narrowed to ``codes``."""
    return object_schema(
        {"error": {"type": "string"}, "code": {"type": "string", "enum": sorted({str(c) for c in codes})}}
    )


def errors(*cases: ErrorCase) -> dict[str, dict[str, Any]]:
    """Return response declarations for ``cases``, merged per status (codes, reasons and headers united).

    A JSON error body is declared with the codes that status can carry on
    this route; other media types (HTML pages of the panel) get a string.
    """
    by_status: dict[int, list[ErrorCase]] = {}
    for case in cases:
        by_status.setdefault(case.status, []).append(case)
    out: dict[str, dict[str, Any]] = {}
    for status in sorted(by_status):
        group = by_status[status]
        reasons = list(dict.fromkeys(f"`{c.code}`: {c.when}" for c in group))
        headers: dict[str, Any] = {}
        medias: list[str] = []
        for c in group:
            headers.update(c.headers)
            medias.extend(m for m in c.media if m not in medias)
        content = {
            m: {"schema": error_schema(c.code for c in group) if m == JSON else {"type": "string"}} for m in medias
        }
        out[str(status)] = {"description": "; ".join(reasons), "content": content}
        if headers:
            out[str(status)]["headers"] = headers
    return out


def query(name: str, schema: Schema, description: str, *, required: bool = False) -> dict[str, Any]:
    """Return a query parameter declaration."""
    return {"name": name, "in": "query", "required": required, "schema": schema, "description": description}


def path(name: str, schema: Schema, description: str) -> dict[str, Any]:
    """Return a path parameter declaration."""
    return {"name": name, "in": "path", "required": True, "schema": schema, "description": description}


def header_param(name: str, schema: Schema, description: str) -> dict[str, Any]:
    """Return an optional request header declaration."""
    return {"name": name, "in": "header", "required": False, "schema": schema, "description": description}


def body(
    schema: Schema, *, required: bool = True, media: Iterable[str] = (JSON,), example: Any = None
) -> dict[str, Any]:
    """Return a request body declaration accepting ``schema`` in each of ``media``.

    A body taken as JSON is described with the nesting limit (:data:`JSON_DEPTH_NOTE`).
    """
    content: dict[str, Any] = {}
    for kind in media:
        entry: dict[str, Any] = {"schema": schema}
        if example is not None and kind == JSON:
            entry["example"] = example
        content[kind] = entry
    out: dict[str, Any] = {"required": required, "content": content}
    if JSON in content:
        out["description"] = JSON_DEPTH_NOTE
    return out


#: The nesting limit of JSON request bodies, as the documents state it.
JSON_DEPTH_NOTE: Final = (
    f"A JSON body may nest arrays and objects at most {MAX_JSON_DEPTH} levels deep "
    "(`{}` is one level); a deeper one is refused as 400 `invalid_json` before it is decoded."
)


def closed_object(properties: Mapping[str, Schema], *, required: Iterable[str] = ()) -> Schema:
    """A request object with these properties only (unknown fields are refused by the servers)."""
    return object_schema(properties, required=required)


# -- operations and the document --------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Operation:
    """One declared operation: a method on a path template, and everything it can answer.

    ``security`` ``None`` means the document's default; ``[]`` means public.
    """

    method: str
    path: str
    operation_id: str
    summary: str
    responses: Mapping[str, Any]
    description: str = ""
    tags: tuple[str, ...] = ()
    parameters: tuple[Mapping[str, Any], ...] = ()
    request_body: Mapping[str, Any] | None = None
    security: tuple[Mapping[str, list[str]], ...] | None = None

    @property
    def key(self) -> OperationKey:
        """``(METHOD, path)``, as :func:`router_operations` spells it."""
        return (self.method.upper(), self.path)

    def to_json(self) -> dict[str, Any]:
        """Return the OpenAPI Operation Object."""
        out: dict[str, Any] = {"operationId": self.operation_id, "summary": self.summary}
        if self.description:
            out["description"] = self.description
        if self.tags:
            out["tags"] = list(self.tags)
        if self.parameters:
            out["parameters"] = [dict(p) for p in self.parameters]
        if self.request_body is not None:
            out["requestBody"] = dict(self.request_body)
        out["responses"] = {status: dict(resp) for status, resp in self.responses.items()}
        if self.security is not None:
            out["security"] = [dict(s) for s in self.security]
        return out


def build_document(
    *,
    info: Mapping[str, Any],
    operations: Iterable[Operation],
    components: Mapping[str, Any],
    security: Iterable[Mapping[str, list[str]]],
    tags: Iterable[Mapping[str, str]] = (),
    common_headers: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Return the OpenAPI 3.1 document of ``operations``.

    ``common_headers`` are declared on every response. Raises ``ValueError``
    on a duplicate operation or operation id.
    """
    paths: dict[str, dict[str, Any]] = {}
    seen_ids: set[str] = set()
    for op in operations:
        if op.operation_id in seen_ids:
            raise ValueError(f"duplicate operationId {op.operation_id!r}")
        seen_ids.add(op.operation_id)
        item = paths.setdefault(op.path, {})
        if op.method.lower() in item:
            raise ValueError(f"duplicate operation {op.method} {op.path}")
        spec = op.to_json()
        if common_headers:
            for resp in spec["responses"].values():
                resp["headers"] = {**common_headers, **resp.get("headers", {})}
        item[op.method.lower()] = spec
    return {
        "openapi": OPENAPI_VERSION,
        "info": dict(info),
        "tags": [dict(t) for t in tags],
        "security": [dict(s) for s in security],
        "paths": {p: paths[p] for p in sorted(paths)},
        "components": dict(components),
    }


def router_operations(app: web.Application) -> set[OperationKey]:
    """Return every ``(METHOD, path template)`` the app's router serves.

    HEAD routes that aiohttp adds beside a GET (``add_get``, static files)
    are left out: HEAD is answered like GET without a body and is not
    declared separately. A static resource at prefix ``P`` is ``GET P/{path}``.
    """
    found: set[OperationKey] = set()
    gets: set[str] = set()
    heads: list[str] = []
    for route in app.router.routes():
        resource = route.resource
        if resource is None or resource.name == UNMATCHED_ROUTE:
            continue
        if isinstance(resource, web.StaticResource):
            template = resource.canonical.rstrip("/") + "/{path}"
        else:
            template = resource.canonical
        if route.method == "HEAD":
            heads.append(template)
            continue
        if route.method == "GET":
            gets.add(template)
        found.add((route.method, template))
    # A HEAD without a GET on the same path was added on purpose: it must be declared.
    found.update(("HEAD", t) for t in heads if t not in gets)
    return found


#: The served document, encoded once when the app starts.
OPENAPI_DOCUMENT: Final = web.AppKey("openapi_document", bytes)


async def openapi_json(request: web.Request) -> web.Response:
    """``GET /openapi.json``: this process's OpenAPI 3.1 document (built by :func:`build_openapi_on_startup`)."""
    return web.Response(body=request.app[OPENAPI_DOCUMENT], content_type=JSON)


def build_openapi_on_startup(app: web.Application, build: Callable[[web.Application], Mapping[str, Any]]) -> None:
    """Build ``build(app)`` once when the app starts (its route table is complete then) and keep it encoded.

    :func:`openapi_json` serves it; the process declares that handler in its
    route table like any other route.
    """

    async def build_now(app: web.Application) -> None:
        app[OPENAPI_DOCUMENT] = json.dumps(build(app), separators=(",", ":")).encode()

    app.on_startup.append(build_now)
