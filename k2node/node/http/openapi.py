"""The node's HTTP surface as an OpenAPI 3.1 document (`GET /openapi.json`).

The document is built from the router itself: every path and method in it is one the app
registered, and a route registered without a description (route_docs.py) stops the app from
being built, so the two cannot drift apart. Requests with bodies, path parameters and
access rules get the answers they imply (400, 413, 404, 403) added here, once.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web

OPENAPI_PATH = "/openapi.json"
Schema = Mapping[str, Any]
Access = Literal["anyone", "loopback", "admin"]
Status = int | Literal["default"]  # "default": any other answer (another server's)
# what a `*` route answers to, as OpenAPI can name them
ANY_METHOD = ("get", "head", "post", "put", "patch", "delete", "options")
ERROR_BODY: Schema = {
    "type": "object",
    "required": ["message"],
    "properties": {"message": {"type": "string", "maxLength": 300}},
}
ERROR_REF = "#/components/schemas/Error"
_PARAM = re.compile(r"{(\w+)}")


class UndescribedRoute(Exception):
    """A route registered with no description, or a description naming an unknown one."""


@dataclass(frozen=True)
class Operation:
    summary: str
    responses: Mapping[Status, str]
    # media type -> schema of the request body (any body is refused past its size: 413)
    body: Mapping[str, Schema] | None = None
    body_required: bool = False
    query: Mapping[str, Schema] = field(default_factory=dict)
    required_query: tuple[str, ...] = ()
    headers: Mapping[str, Schema] = field(default_factory=dict)
    access: Access = "anyone"
    websocket: bool = False
    # the answer is another server's (a task's own routes), passed on as it is
    passthrough: bool = False


def statuses(op: Operation, path: str) -> dict[Status, str]:
    """Every answer `op` may give at `path`: its own and those its shape implies."""
    found = dict(op.responses)
    refused = [found[400]] if 400 in found else []
    if op.body is not None:
        refused.append("the body cannot be read as sent (its encoding or length)")
        found.setdefault(413, "the body is larger than this route takes")
    if op.websocket:
        refused.append("not a valid WebSocket upgrade request")
        found.setdefault(101, "switched to the WebSocket protocol")
    # aiohttp's HTTP layer answers before any route (in text/plain)
    refused.append("not valid HTTP, or a body in a content encoding this node cannot decode")
    found[400] = "; ".join(refused)
    if _PARAM.search(path):
        found.setdefault(404, "nothing is known by that name, or it is not a path segment")
    if op.access != "anyone":
        found.setdefault(403, "not from this machine (or, for admin calls, without the token)")
    return found


def _responses(op: Operation, path: str, method: str) -> dict[str, Any]:
    answers: dict[str, Any] = {}
    for status, text in sorted(statuses(op, path).items(), key=lambda kv: str(kv[0])):
        answer: dict[str, Any] = {"description": text}
        if isinstance(status, int) and status >= 400 and not op.passthrough and method != "head":
            answer["content"] = {"application/json": {"schema": {"$ref": ERROR_REF}}}
        answers[str(status)] = answer
    return answers


def _operation(
    op: Operation, path: str, method: str, path_params: Mapping[str, Schema]
) -> dict[str, Any]:
    parameters: list[dict[str, Any]] = []
    for name in _PARAM.findall(path):
        if name not in path_params:
            raise UndescribedRoute(f"path parameter {{{name}}} of {path} has no description")
        parameters.append({"name": name, "in": "path", "required": True, **path_params[name]})
    for name, schema in op.query.items():
        required = name in op.required_query
        parameters.append({"name": name, "in": "query", "required": required, "schema": schema})
    for name, schema in op.headers.items():
        parameters.append({"name": name, "in": "header", "schema": schema})
    described: dict[str, Any] = {
        "summary": op.summary,
        "operationId": f"{method} {path}",
        "responses": _responses(op, path, method),
    }
    if parameters:
        described["parameters"] = parameters
    if op.body is not None and method not in ("get", "head"):
        described["requestBody"] = {
            "required": op.body_required,
            "content": {kind: {"schema": dict(schema)} for kind, schema in op.body.items()},
        }
    if op.access == "loopback":
        described["security"] = []
        described["x-loopback-only"] = True
    elif op.access == "admin":
        described["security"] = [{}, {"bearer": []}]  # loopback needs none
    if op.websocket:
        described["x-websocket"] = True
    return described


def document(
    router: web.UrlDispatcher,
    operations: Mapping[tuple[str, str], Operation],
    path_params: Mapping[str, Schema],
    title: str,
    version: str,
) -> dict[str, Any]:
    """The OpenAPI document of what `router` serves; `operations` are keyed by (METHOD,
    canonical path), `*` for a route of every method. A HEAD added for a GET is the GET's."""
    paths: dict[str, dict[str, Any]] = {}
    for route in router.routes():
        method, path = route.method, route.resource.canonical if route.resource else ""
        key = (method, path)
        if method == "HEAD" and key not in operations:
            key = ("GET", path)
        op = operations.get(key)
        if op is None:
            raise UndescribedRoute(f"{method} {path} has no description in route_docs.py")
        item = paths.setdefault(path, {})
        for name in ANY_METHOD if method == "*" else (method.lower(),):
            item[name] = _operation(op, path, name, path_params)
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {
            "schemas": {"Error": ERROR_BODY},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def positional_params(
    methods: Mapping[str, Callable[..., Any]], hints: Mapping[str, Schema], skip: int = 0
) -> dict[str, tuple[list[Schema], int, bool]]:
    """For each method name, from its handler's signature: the schemas of its positional
    parameters (by name in `hints`, anything else), how many are required, and whether
    more may follow. `skip` leading parameters are the server's own (the task's context)."""
    found: dict[str, tuple[list[Schema], int, bool]] = {}
    for name, fn in methods.items():
        params = list(inspect.signature(fn).parameters.values())[skip:]
        fixed = [p for p in params if p.kind is not p.VAR_POSITIONAL]
        required = sum(1 for p in fixed if p.default is p.empty)
        more = any(p.kind is p.VAR_POSITIONAL for p in params)
        found[name] = ([hints.get(p.name, {}) for p in fixed], required, more)
    return found


def call_array(name: str | None, params: tuple[list[Schema], int, bool]) -> dict[str, Any]:
    """A JSON array holding a call's arguments, led by the method's name when given."""
    schemas, required, more = params
    lead: list[Schema] = [{"const": name}] if name is not None else []
    array: dict[str, Any] = {
        "type": "array",
        "minItems": len(lead) + required,
        "items": {} if more else False,
    }
    if lead or schemas:
        array["prefixItems"] = [*lead, *schemas]
    if not more:
        array["maxItems"] = len(lead) + len(schemas)
    return array
