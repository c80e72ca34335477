"""How a capability declares its HTTP API: endpoints with a permission, a body and a response."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from starlette.requests import Request

    from twin.scopes import Principal

Handler = Callable[["Call"], Awaitable[Any]]


@dataclass(frozen=True)
class Endpoint:
    """One route under ``/api/<capability>/``.

    ``permission`` names the capability's permission the caller needs; ``None`` makes the route
    public. ``body`` and ``response`` are msgspec Structs (or types msgspec understands); they
    validate input and describe the route in ``/openapi.json``. ``raw_body`` lists the media types
    the route takes as raw bytes instead of JSON; ``stream_body`` leaves the body unread for the
    handler to stream (``call.request.stream()``), of any media type and size.
    """

    method: str
    path: str
    handler: Handler
    permission: str | None
    summary: str
    body: Any = None
    response: Any = None
    status: int = 200
    raw_body: tuple[str, ...] = ()
    raw_response: str | None = None
    max_body: int | None = None
    stream_body: bool = False
    other_statuses: tuple[int, ...] = ()  # success statuses besides ``status`` (201 on a create)
    allow_locked: bool = False
    audit: bool = False  # record a public route in the access log too
    query: tuple[tuple[str, str], ...] = field(default=())


def _declare(method: str) -> Callable[..., Endpoint]:
    def declare(
        path: str, handler: Handler, *, permission: str | None, summary: str, **options: Any
    ) -> Endpoint:
        return Endpoint(method, path, handler, permission, summary, **options)

    declare.__name__ = method.lower()
    declare.__doc__ = f"Declare a {method} endpoint."
    return declare


get = _declare("GET")
put = _declare("PUT")
post = _declare("POST")
patch = _declare("PATCH")
delete = _declare("DELETE")


async def _unchanged() -> Principal | None:
    return None


@dataclass(frozen=True)
class Call:
    """What a handler receives: the request, who makes it, and the validated body.

    ``recheck()`` authenticates the request's credentials again: a handler that keeps answering
    for long (a live stream) calls it now and then, and stops when it returns None (the token
    was revoked) or a principal that no longer holds what it needs.
    """

    request: Request
    principal: Principal
    body: Any = None
    raw: bytes = b""
    recheck: Callable[[], Awaitable[Principal | None]] = _unchanged

    @property
    def params(self) -> dict[str, Any]:
        return self.request.path_params

    @property
    def query(self) -> Any:
        return self.request.query_params
