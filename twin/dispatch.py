"""Dispatches ``/api/<capability>/…`` to capability endpoints by capability id, then by path,
and answers cross-origin requests for the API (what sandboxed experience pages make)."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import compile_path
from starlette.types import ASGIApp, Receive, Scope, Send

from twin.http import error_json

Handle = Callable[[Request], Awaitable[Response]]
# No page elsewhere may read these answers: a stranger's site must not guess the passphrase.
SAME_ORIGIN_ONLY = frozenset({"/api/twin/unlock"})


@dataclass
class _Path:
    regex: re.Pattern[str]
    convertors: dict[str, Any]
    methods: dict[str, Handle] = field(default_factory=dict)


class ApiRoutes:
    """The API's routes, grouped by capability id so a request is matched against one
    capability's few paths instead of every route of the twin."""

    def __init__(self) -> None:
        self._by_capability: dict[str, dict[str, _Path]] = {}

    def add(self, capability: str, path: str, method: str, handle: Handle) -> None:
        paths = self._by_capability.setdefault(capability, {})
        full = f"/api/{capability}{path}"
        if full not in paths:
            regex, _, convertors = compile_path(full)
            # whole paths only, and a {key:path} takes every character: with Starlette's own
            # pattern "a\n" would match as "a", and "a\nb" not at all
            paths[full] = _Path(re.compile(regex.pattern, re.DOTALL), convertors)
        paths[full].methods[method] = handle
        if method == "GET":
            paths[full].methods.setdefault("HEAD", handle)
        if path == "/":  # /api/profile answers as /api/profile/ does
            self.add(capability, "", method, handle)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        capability = path[5:].partition("/")[0]
        allowed: set[str] = set()
        for route in self._by_capability.get(capability, {}).values():
            match = route.regex.fullmatch(path)
            if match is None:
                continue
            handle = route.methods.get(scope["method"])
            if handle is None:
                allowed |= route.methods.keys()
                if not route.convertors:  # a path named in full is that resource alone:
                    break  # /api/contacts/invites is not one /api/contacts/{id}
                continue
            scope["path_params"] = {
                name: route.convertors[name].convert(value)
                for name, value in match.groupdict().items()
            }
            response = await handle(Request(scope, receive))
            await response(scope, receive, send)
            return
        if allowed:
            response = error_json(
                405,
                "method_not_allowed",
                f"{scope['method']} is not allowed on {path}",
                {"Allow": ", ".join(sorted(allowed))},
            )
        else:
            response = error_json(404, "not_found", f"nothing at {path}")
        await response(scope, receive, send)


def _open_cors(app: ASGIApp) -> CORSMiddleware:
    return CORSMiddleware(
        app,
        allow_origins=["*"],
        allow_methods=["*"],
        max_age=3600,
        allow_headers=[
            "authorization",
            "content-type",
            "if-match",
            "if-none-match",
            "last-event-id",
            "range",
        ],
        expose_headers=["etag", "last-modified", "location", "content-range", "retry-after"],
    )


class ApiDispatch:
    """Sends ``/api/…`` straight to the API routes (past the page router), and lets any origin
    call the API and read the public document: no cookie is honoured there, only bearer tokens.
    A capability's door (``/dav``) gets its requests untouched, before any of that."""

    def __init__(self, app: ASGIApp, routes: ApiRoutes, doors: dict[str, ASGIApp]) -> None:
        self.app = app
        self.routes = routes
        self.doors = doors  # filled when the capabilities are mounted
        self.api_cors = _open_cors(routes)
        self.public_cors = _open_cors(app)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if self.doors and not path.startswith("/api/"):
            door = self.doors.get("/" + path[1:].partition("/")[0])
            if door is not None:
                await door(scope, receive, send)
                return
        api = path.startswith("/api/")
        if not api and not path.startswith("/.well-known/"):
            await self.app(scope, receive, send)
        elif path not in SAME_ORIGIN_ONLY and any(
            name == b"origin" for name, _ in scope["headers"]
        ):
            await (self.api_cors if api else self.public_cors)(scope, receive, send)
        else:
            await (self.routes if api else self.app)(scope, receive, send)
