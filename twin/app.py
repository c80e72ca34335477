"""Builds the ASGI app of one twin: the API, the shell, the experiences and the public document."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import msgspec
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from twin.core import Twin
from twin.dispatch import ApiDispatch, ApiRoutes
from twin.errors import TwinError
from twin.guards import SecurityHeaders
from twin.http import (
    client_address,
    endpoint_handler,
    error_response,
    http_exception,
    json_response,
    read_body,
    server_error,
    twin_error,
)
from twin.sessions import setup_line
from twin.settings import Settings
from twin.shell import shell_routes


def create_app(twin: Twin) -> Starlette:
    """The twin's app; its lifespan starts the twin unless the caller already did."""

    async def health(request: Request) -> Response:
        return json_response(
            {"status": "ok", "did": twin.did, "version": twin.version, "locked": twin.vault.locked}
        )

    async def openapi_json(request: Request) -> Response:
        if not spec:  # built on the first request: most twins are never asked, and idle smaller
            from twin import openapi

            spec.append(
                msgspec.json.encode(
                    openapi.build(
                        (
                            (cap_id, item.manifest.name, item.endpoints)
                            for cap_id, item in twin.registry.loaded.items()
                        ),
                        twin.version,
                    )
                )
            )
        return Response(spec[0], media_type="application/json")

    async def inbox(request: Request) -> Response:
        raw = await read_body(request, twin.settings.max_body)
        answer = await twin.peers.inbox.receive(raw, client_address(request))
        if answer.error is not None:
            refusal = error_response(answer.error)
            retry = refusal.headers.get("retry-after")
            headers = {"Retry-After": retry} if retry else None
            return json_response(answer.body, refusal.status_code, headers)
        return json_response(answer.body, 202 if answer.single else 200)

    async def fetch(request: Request) -> Response:
        raw = await read_body(request, twin.settings.max_body)
        content = await twin.peers.inbox.ask(raw, client_address(request))
        return StreamingResponse(content, media_type="application/octet-stream")

    async def well_known(request: Request) -> Response:
        document = await twin.public_document()  # a TwinError (locked) maps to its status
        return json_response(document, headers={"Cache-Control": "max-age=300"})

    spec: list[bytes] = []  # encoded once, when first asked for
    api = ApiRoutes()
    doors: dict[str, ASGIApp] = {}

    def mount() -> None:
        api.add("health", "", "GET", health)
        for cap_id, item in twin.registry.loaded.items():
            for endpoint in item.endpoints:
                api.add(
                    cap_id, endpoint.path, endpoint.method, endpoint_handler(twin, cap_id, endpoint)
                )
            doors.update((m.path, m.app) for m in item.mounts)
        app.router.routes.extend(shell_routes(twin))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if not twin.started:
            await twin.start()
            mount()
        try:
            yield
        finally:
            await twin.stop()

    app = Starlette(
        routes=[
            Route("/openapi.json", openapi_json, methods=["GET"]),
            Route("/.well-known/twin", well_known, methods=["GET"]),
            Route("/p2p/v1/inbox", inbox, methods=["POST"]),
            Route("/p2p/v1/fetch", fetch, methods=["POST"]),
        ],
        middleware=[Middleware(SecurityHeaders), Middleware(ApiDispatch, routes=api, doors=doors)],
        exception_handlers={
            HTTPException: http_exception,
            TwinError: twin_error,
            Exception: server_error,
        },
        lifespan=lifespan,
    )
    if twin.started:
        mount()
    return app


class _Deferred:
    """An app that opens its twin in the lifespan; what ``twin dev``'s reloader imports."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.app: Starlette | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan" and self.app is None:
            passphrase = None
            if self.settings.passphrase_file is not None:
                passphrase = self.settings.passphrase_file.read_text().rstrip("\r\n")
            twin = await Twin.open(self.settings, passphrase)
            await twin.start()
            self.app = create_app(twin)
            secret = await twin.sessions.create_link()
            print(setup_line(self.settings.url, secret), flush=True)
        assert self.app is not None, "the server must run the lifespan (lifespan='on')"
        await self.app(scope, receive, send)


def app_from_environment() -> _Deferred:
    """The twin configured by TWIN_* variables, opened when the server starts."""
    return _Deferred(Settings.resolve())
