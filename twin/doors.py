"""Doors: paths outside ``/api/`` that a capability answers itself (WebDAV, public share pages),
and the twin's guards those answers go through (credentials, rate limits, the access log)."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.types import ASGIApp

from twin.errors import PluginError, Unauthorized, VaultLocked
from twin.scopes import Principal

if TYPE_CHECKING:
    from twin.core import Twin

# Paths the core answers (the API, the shell's pages, peers); no capability may mount a door
# on them, or it could answer in the shell's place. tests/test_doors.py checks every shell page
# is here.
RESERVED = (
    "/api",
    "/x",
    "/p2p",
    "/static",
    "/.well-known",
    "/openapi.json",
    "/activity",
    "/auth",
    "/login",
    "/logout",
    "/pair",
    "/settings",
    "/setup",
    "/unlock",
)
DOOR_RATE_FACTOR = 20  # file clients (rclone, a desktop) make many small requests


@dataclass(frozen=True)
class Mount:
    """A door: ``path`` (``/dav``) and everything under it go to ``app``, an ASGI app."""

    path: str
    app: ASGIApp


def check_mounts(capability: str, mounts: object, taken: Mapping[str, str]) -> list[Mount]:
    """The mounts a capability asked for, refused when reserved or already another's."""
    checked = []
    for mount in mounts if isinstance(mounts, (list, tuple)) else [mounts]:
        if not isinstance(mount, Mount):
            raise PluginError(f"mounts() returned {mount!r}, not a twin.doors.Mount")
        path = mount.path
        if not re.fullmatch(r"/[a-z0-9][a-z0-9_-]{0,39}", path):
            raise PluginError(f"a mount is one path segment like /dav, not {path!r}")
        if any(path == r or path.startswith(r + "/") or r.startswith(path + "/") for r in RESERVED):
            raise PluginError(f"{path} belongs to the twin's core; mount the door elsewhere")
        if path in taken:
            raise PluginError(f"{path} is already the door of capability {taken[path]}")
        checked.append(mount)
    return checked


class Door:
    """What a capability's door uses of the twin: who is asking, and whether they may."""

    def __init__(self, twin: Twin) -> None:
        self._twin = twin

    @property
    def locked(self) -> bool:
        return self._twin.vault.locked

    async def authenticate(self, request: Request, *, basic: bool = False) -> Principal:
        """The principal of a bearer token, or with ``basic`` of HTTP Basic credentials whose
        password is a token (any user name); 401 without valid ones."""
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        if basic and scheme.lower() == "basic":
            try:
                decoded = base64.b64decode(value.strip(), validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                raise Unauthorized(
                    "the Basic credentials are not valid base64 of user:token"
                ) from None
            token = decoded.partition(":")[2]
            principal = await self._twin.tokens.authenticate(token)
            if principal is None:
                raise Unauthorized(
                    "that password is not a valid token: create one with "
                    "`twin token create --scope files:*` and use it as the password"
                )
            return principal
        return await self._twin.authenticate(request)

    def check_rate(self, key: str) -> None:
        """Count one request of ``key`` (a principal's label, or ``address <ip>``); 429 past
        the twin's rate limit, which a door gets twenty times of."""
        self._twin.door_limiter.check(key)

    def check_unlocked(self) -> None:
        if self._twin.vault.locked:
            raise VaultLocked("the twin is locked: unlock it with its passphrase first")

    def record(
        self, who: str, capability: str, permission: str, method: str, path: str, status: int
    ) -> None:
        """One line in the owner's access log."""
        self._twin.access.record(who, capability, permission, method, path, status)
