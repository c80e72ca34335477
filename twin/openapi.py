"""The OpenAPI 3.1 document of every ``/api`` route, the plugins' included."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import msgspec

from twin.api import Endpoint

_PARAM = re.compile(r"\{([a-zA-Z_][a-zA-Z0-9_]*)(?::[a-z]+)?\}")


class Error(msgspec.Struct):
    code: str
    message: str


class ErrorBody(msgspec.Struct):
    """Every API error: a stable code and a sentence saying what was wrong."""

    error: Error


class Health(msgspec.Struct):
    status: str
    did: str
    version: str
    locked: bool


# Any handler may raise the domain errors (NotFound, Conflict, ...), so every operation declares
# their statuses, not only those with path parameters.
_ERRORS = {
    "400": "Malformed input",
    "401": "No valid credentials",
    "403": "A scope is missing",
    "404": "Not found",
    "409": "Conflicts with the current state",
    "413": "Body too large",
    "415": "Wrong media type",
    "422": "Input of the wrong shape",
    "412": "A condition (If-Match, If-None-Match) does not hold",
    "423": "The twin is locked, or what the request changes is in use",
    "429": "Rate limited",
    "507": "Over the quota",
}


def build(
    capabilities: Iterable[tuple[str, str, Iterable[Endpoint]]], version: str
) -> dict[str, Any]:
    """``capabilities`` is (id, name, endpoints) for each loaded capability."""
    types: list[Any] = [ErrorBody, Health]
    operations: list[tuple[str, str, Endpoint]] = []
    tags = [{"name": "twin", "description": "The twin itself"}]
    for cap_id, name, endpoints in capabilities:
        if cap_id != "twin":
            tags.append({"name": cap_id, "description": name})
        for endpoint in endpoints:
            operations.append((cap_id, f"/api/{cap_id}{endpoint.path}", endpoint))
            types += [t for t in (endpoint.body, endpoint.response) if t is not None]
    schemas, components = msgspec.json.schema_components(
        types, ref_template="#/components/schemas/{name}"
    )
    schema_of = dict(zip(map(id, types), schemas, strict=True))
    error_ref = schema_of[id(ErrorBody)]
    paths: dict[str, dict[str, Any]] = {
        "/api/health": {
            "get": {
                "operationId": "health",
                "summary": "Is the twin up, and which twin is it",
                "tags": ["twin"],
                "security": [],
                "responses": {
                    "200": {
                        "description": "OK",
                        "content": {"application/json": {"schema": schema_of[id(Health)]}},
                    }
                },
            }
        },
    }
    for cap_id, path, endpoint in operations:
        path = _PARAM.sub(r"{\1}", path)
        op: dict[str, Any] = {
            "operationId": f"{cap_id}_{endpoint.handler.__name__}".replace(".", "_"),
            "summary": endpoint.summary,
            "tags": [cap_id],
        }
        params = _PARAM.findall(path)
        if params:
            op["parameters"] = [
                {
                    "name": p,
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string", "minLength": 1},
                }
                for p in params
            ]
        if endpoint.query:
            op.setdefault("parameters", []).extend(
                {
                    "name": n,
                    "in": "query",
                    "required": False,
                    "description": d,
                    "schema": {"type": "string"},
                }
                for n, d in endpoint.query
            )
        if endpoint.permission is None:
            op["security"] = []
        else:
            op["description"] = f"Needs the scope `{cap_id}:{endpoint.permission}`."
        if endpoint.body is not None:
            op["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": schema_of[id(endpoint.body)]}},
            }
        elif endpoint.raw_body or endpoint.stream_body:
            op["requestBody"] = {
                "required": True,
                "content": {
                    media: {"schema": {"type": "string", "format": "binary"}}
                    for media in endpoint.raw_body or ("*/*",)
                },
            }
        responses: dict[str, Any] = {}
        if endpoint.raw_response:
            responses[str(endpoint.status)] = {
                "description": "OK",
                "content": {endpoint.raw_response: {"schema": _raw_schema(endpoint.raw_response)}},
            }
        elif endpoint.response is not None:
            responses[str(endpoint.status)] = {
                "description": "OK",
                "content": {"application/json": {"schema": schema_of[id(endpoint.response)]}},
            }
        else:
            responses["204"] = {"description": "Done"}
        for other in endpoint.other_statuses:
            responses[str(other)] = {**responses[str(endpoint.status)], "description": "Created"}
        for status, text in _ERRORS.items():
            if status in ("401", "403") and endpoint.permission is None:
                continue
            if status in ("413", "415", "422") and "requestBody" not in op:
                continue
            responses[status] = {
                "description": text,
                "content": {"application/json": {"schema": error_ref}},
            }
        op["responses"] = responses
        paths.setdefault(path, {})[endpoint.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "twin",
            "version": version,
            "description": "The local API of a twin: every capability under /api/<id>/.",
        },
        "tags": tags,
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A token from `twin token create`",
                }
            },
        },
        "security": [{"bearer": []}],
    }


# A stream of server-sent events is described event by event, as OpenAPI tools read it.
_EVENT = {
    "type": "object",
    "properties": {
        "event": {"type": "string"},
        "data": {"type": "string"},
        "id": {"type": "string"},
        "retry": {"type": "integer"},
    },
}


def _raw_schema(media: str) -> dict[str, Any]:
    if media == "text/event-stream":
        return _EVENT
    return {"type": "string", "format": "binary"}
