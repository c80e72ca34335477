"""The one place where domain errors become HTTP, and where capability endpoints become handlers."""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

import msgspec
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route

from twin.api import Call, Endpoint
from twin.errors import (
    BadInput,
    Conflict,
    Forbidden,
    Gone,
    InUse,
    Invalid,
    InvalidSignature,
    Misdirected,
    NotFound,
    PluginError,
    PreconditionFailed,
    QuotaExceeded,
    RateLimited,
    TooLarge,
    TwinError,
    Unauthorized,
    Unavailable,
    UnsupportedMedia,
    VaultLocked,
    WrongPassphrase,
)
from twin.scopes import PUBLIC, Principal

if TYPE_CHECKING:
    from pathlib import Path

    import jinja2

    from twin.core import Twin

log = logging.getLogger("twin.http")
_json = msgspec.json.Encoder()

STATUS: dict[type[TwinError], int] = {
    Invalid: 422,
    TooLarge: 413,
    UnsupportedMedia: 415,
    BadInput: 400,
    Unauthorized: 401,
    Forbidden: 403,
    WrongPassphrase: 403,
    NotFound: 404,
    Gone: 410,
    Conflict: 409,
    PreconditionFailed: 412,
    QuotaExceeded: 507,
    VaultLocked: 423,
    InUse: 423,
    RateLimited: 429,
    InvalidSignature: 400,
    Misdirected: 421,
    Unavailable: 503,
    PluginError: 500,
}
_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}


def status_of(exc: TwinError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 400


def error_json(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> Response:
    body = _json.encode({"error": {"code": code, "message": message}})
    return Response(body, status, headers=headers, media_type="application/json")


def error_response(exc: TwinError) -> Response:
    status = status_of(exc)
    headers = None
    if status == 401:
        headers = {"WWW-Authenticate": 'Bearer realm="twin"'}
    elif isinstance(exc, RateLimited):
        headers = {"Retry-After": str(exc.retry_after)}
    elif isinstance(exc, PreconditionFailed) and exc.current is not None:
        headers = {"ETag": exc.current}
    return error_json(status, exc.code, exc.message, headers)


def _allowed(request: Request) -> str:
    """Every method the routes of this path take; Starlette's 405 names only the first route's."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        if (
            isinstance(route, Route)
            and route.methods
            and route.matches(request.scope)[0] is not Match.NONE
        ):
            methods |= route.methods
    return ", ".join(sorted(methods))


async def http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    status = exc.status_code
    message = {
        404: f"nothing at {request.url.path}",
        405: f"{request.method} is not allowed on {request.url.path}",
    }.get(status, exc.detail)
    headers = exc.headers
    if status == 405:
        headers = {**(headers or {}), "Allow": _allowed(request)}
    return error_json(status, _HTTP_CODES.get(status, "error"), message, headers)


async def twin_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, TwinError)
    return error_response(exc)


async def server_error(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_json(500, "internal", "the twin failed unexpectedly; its log has the details")


def json_response(value: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(_json.encode(value), status, headers=headers, media_type="application/json")


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to pass ``limit``."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not (declared.isascii() and declared.isdigit()):
            raise BadInput("Content-Length must be a number")
        if len(declared) > 18:  # no body is that large; int() need not parse it all
            raise TooLarge(f"the body is over the limit of {limit} bytes")
        if int(declared) > limit:
            raise TooLarge(f"the body is {int(declared)} bytes; the limit is {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"the body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def decode_body(request: Request, endpoint: Endpoint, limit: int) -> tuple[Any, bytes]:
    if endpoint.stream_body or (endpoint.body is None and not endpoint.raw_body):
        return None, b""
    raw = await read_body(request, endpoint.max_body or limit)
    media = _media_type(request)
    if endpoint.raw_body:
        if media not in endpoint.raw_body:
            raise UnsupportedMedia(f"send the body as one of: {', '.join(endpoint.raw_body)}")
        return None, raw
    if media != "application/json" and not media.endswith("+json"):
        raise UnsupportedMedia("send the body as JSON with Content-Type: application/json")
    if not raw:
        raise BadInput("a JSON body is required")
    try:
        return msgspec.json.decode(raw, type=endpoint.body), raw
    except msgspec.ValidationError as exc:
        raise Invalid(f"the body does not fit: {exc}") from None
    except msgspec.DecodeError as exc:
        raise BadInput(f"the body is not valid JSON: {exc}") from None
    except UnicodeDecodeError:
        raise BadInput("the body is not valid JSON: a string in it is not valid UTF-8") from None
    except RecursionError:
        raise BadInput("the body is not valid JSON: it is nested too deeply") from None


def render(result: Any, endpoint: Endpoint) -> Response:
    if isinstance(result, Response):
        return result
    if result is None:
        return Response(status_code=204)
    return json_response(result, endpoint.status)


def endpoint_handler(
    twin: Twin, cap_id: str, endpoint: Endpoint
) -> Callable[[Request], Awaitable[Response]]:
    """Wrap a capability endpoint: authenticate, authorise, check the lock, decode, log."""
    path = f"/api/{cap_id}{endpoint.path}"
    scope_name = f"{cap_id}:{endpoint.permission}"

    async def handle(request: Request) -> Response:
        principal: Principal = PUBLIC

        async def recheck() -> Principal | None:
            if principal is PUBLIC:
                return PUBLIC
            try:
                return await twin.authenticate(request)
            except Unauthorized:
                return None

        try:
            if endpoint.permission is None:
                twin.limiter.check(f"address {client_address(request)}")
            else:
                try:
                    principal = await twin.authenticate(request)
                except Unauthorized:
                    twin.limiter.check(f"address {client_address(request)}")
                    raise
                twin.limiter.check(principal.label)
                if not principal.allows(cap_id, endpoint.permission):
                    raise Forbidden(
                        f"this needs the scope {scope_name}, which was not granted "
                        f"to {principal.label}"
                    )
            if twin.vault.locked and not endpoint.allow_locked:
                raise VaultLocked(
                    "the twin is locked: unlock it with its passphrase "
                    "(`twin serve` asks for it, or POST /api/twin/unlock)"
                )
            body, raw = await decode_body(request, endpoint, twin.settings.max_body)
            call = Call(request, principal, body, raw, recheck)
            response = render(await endpoint.handler(call), endpoint)
        except TwinError as exc:
            response = error_response(exc)
        if endpoint.permission is not None or endpoint.audit:
            twin.access.record(
                principal.label if principal is not PUBLIC else "anonymous",
                cap_id,
                endpoint.permission or endpoint.handler.__name__,
                request.method,
                path,
                response.status_code,
            )
        return response

    return handle


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


@functools.cache
def templates_in(folder: Path) -> jinja2.Environment:
    """An autoescaping template environment for a door's own pages, made when the first page
    is drawn (jinja2 is not loaded at start-up)."""
    import jinja2

    return jinja2.Environment(loader=jinja2.FileSystemLoader(folder), autoescape=True)
