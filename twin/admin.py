"""The core's own capability, ``twin``: the owner's view of capabilities, experiences, grants,
tokens and the access log, plus unlocking; built on the same plugin API as any other."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import msgspec

from twin import api
from twin.api import Call, Endpoint
from twin.capability import Capability, Context
from twin.errors import BadInput, Forbidden, NotFound
from twin.http import client_address
from twin.manifest import parse_manifest
from twin.schema import MIGRATIONS
from twin.scopes import beyond, parse_scopes
from twin.tokens import MAX_NAME

if TYPE_CHECKING:
    from twin.core import Twin
    from twin.registry import Builtin

MANIFEST = parse_manifest(
    {
        "id": "twin",
        "name": "Twin",
        "version": "1.0.0",
        "description": "The twin itself: its capabilities, experiences, grants, tokens and "
        "access log.",
        "permissions": {
            "read": {
                "description": "See which capabilities and experiences are installed, what "
                "each may use and the access log"
            },
            "admin": {
                "description": "Create and revoke tokens and grant or withdraw experiences' access"
            },
        },
    },
    "twin core",
)

Scope = Annotated[str, msgspec.Meta(max_length=81)]


class PermissionInfo(msgspec.Struct):
    name: str
    description: str
    obsolete: bool


class CapabilityInfo(msgspec.Struct):
    id: str
    name: str
    version: str
    description: str
    permissions: list[PermissionInfo]
    requires: list[str]
    source: str


class Failure(msgspec.Struct):
    id: str
    reason: str


class Overview(msgspec.Struct):
    did: str
    version: str
    url: str
    locked: bool
    capabilities: list[CapabilityInfo]
    failed: list[Failure]


class ExperienceInfo(msgspec.Struct):
    id: str
    name: str
    description: str
    uses: list[str]
    granted: list[str]
    url: str


class GrantRequest(msgspec.Struct, forbid_unknown_fields=True):
    scopes: Annotated[list[Scope], msgspec.Meta(max_length=64)]


class TokenRequest(msgspec.Struct, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_NAME)]
    scopes: Annotated[list[Scope], msgspec.Meta(min_length=1, max_length=64)]


class TokenInfoOut(msgspec.Struct):
    id: str
    name: str
    kind: str
    scopes: list[str]
    experience: str | None
    created: float
    last_used: float | None


class NewToken(msgspec.Struct):
    token: str
    info: TokenInfoOut


class AccessEntry(msgspec.Struct):
    """Uses of one permission by one principal with one outcome, counted over one minute."""

    id: int
    at: float
    first: float
    count: int
    principal: str
    capability: str
    permission: str
    method: str
    route: str
    status: int
    outcome: str


class UnlockRequest(msgspec.Struct, forbid_unknown_fields=True):
    passphrase: Annotated[str, msgspec.Meta(min_length=1, max_length=1024)]


class Unlocked(msgspec.Struct):
    locked: bool


def _whole(raw: str, digits: int) -> bool:
    # isdigit() alone lets through "²" and numbers too long for int() or for SQLite.
    return raw.isascii() and raw.isdigit() and len(raw) <= digits


def _limit(call: Call) -> int:
    raw = call.query.get("limit", "100")
    if not _whole(raw, 4) or not 1 <= int(raw) <= 1000:
        raise BadInput("limit must be a whole number from 1 to 1000")
    return int(raw)


class AdminCapability(Capability):
    """The owner's API over the twin itself; it owns the core's tables."""

    migrations = MIGRATIONS

    def __init__(self, context: Context, twin: Twin) -> None:
        super().__init__(context)
        self.twin = twin

    def routes(self) -> Sequence[Endpoint]:
        return [
            api.get(
                "/",
                self.overview,
                permission="read",
                response=Overview,
                summary="The twin's did, version and capabilities, loaded and failed",
            ),
            api.get(
                "/experiences",
                self.experiences,
                permission="read",
                response=list[ExperienceInfo],
                summary="Installed experiences, what each declares and what was granted",
            ),
            api.put(
                "/grants/{experience}",
                self.grant,
                permission="admin",
                body=GrantRequest,
                response=ExperienceInfo,
                summary="Grant an experience some of its declared scopes",
            ),
            api.delete(
                "/grants/{experience}",
                self.revoke_grant,
                permission="admin",
                summary="Withdraw everything granted to an experience",
            ),
            api.get(
                "/tokens",
                self.list_tokens,
                permission="admin",
                response=list[TokenInfoOut],
                summary="Tokens and experience tokens (never their secrets)",
            ),
            api.post(
                "/tokens",
                self.create_token,
                permission="admin",
                body=TokenRequest,
                response=NewToken,
                status=201,
                summary="Create a bearer token; its secret is shown this once",
            ),
            api.delete(
                "/tokens/{token_id}",
                self.revoke_token,
                permission="admin",
                summary="Revoke a token by id",
            ),
            api.get(
                "/access-log",
                self.access_log,
                permission="read",
                response=list[AccessEntry],
                query=(
                    ("limit", "How many entries, 1 to 1000 (default 100)"),
                    ("before", "Entries older than this id"),
                ),
                summary="Who used which permission, when, with what outcome; newest first",
            ),
            api.post(
                "/unlock",
                self.unlock,
                permission=None,
                body=UnlockRequest,
                response=Unlocked,
                allow_locked=True,
                audit=True,
                summary="Unlock a twin whose key is sealed with a passphrase",
            ),
        ]

    async def overview(self, call: Call) -> Overview:
        registry = self.twin.registry
        return Overview(
            self.twin.did,
            self.twin.version,
            self.twin.settings.url,
            self.twin.vault.locked,
            capabilities(self.twin),
            [Failure(k, v) for k, v in sorted(registry.failed.items())],
        )

    async def experiences(self, call: Call) -> list[ExperienceInfo]:
        grants = await self.twin.grants.all()
        return [
            self._experience(exp_id, grants.get(exp_id))
            for exp_id in sorted(self.twin.registry.experiences)
        ]

    def _experience(self, exp_id: str, grant: Any) -> ExperienceInfo:
        exp = self.twin.registry.experiences[exp_id]
        granted = sorted(grant.scopes & exp.uses) if grant else []
        return ExperienceInfo(
            exp.id, exp.name, exp.description, sorted(exp.uses), granted, f"/x/{exp.id}/"
        )

    def _find(self, exp_id: str) -> Any:
        exp = self.twin.registry.experiences.get(exp_id)
        if exp is None:
            raise NotFound(f"no experience {exp_id!r} is installed")
        return exp

    async def grant(self, call: Call) -> ExperienceInfo:
        exp = self._find(call.params["experience"])
        scopes = parse_scopes(call.body.scopes, self.twin.registry.manifests)
        self._hold(call, scopes)
        grant = await self.twin.grants.grant(exp, scopes)
        return self._experience(exp.id, grant)

    @staticmethod
    def _hold(call: Call, scopes: frozenset[str]) -> None:
        """No token hands on, to a token or an experience, a scope it does not hold itself."""
        extra = beyond(scopes, call.principal.scopes)
        if extra:
            raise Forbidden(
                f"a token can only hand on scopes it holds itself; "
                f"{call.principal.label} does not hold {', '.join(extra)}"
            )

    async def revoke_grant(self, call: Call) -> None:
        exp = self._find(call.params["experience"])
        await self.twin.grants.revoke(exp.id)

    async def list_tokens(self, call: Call) -> list[TokenInfoOut]:
        return [_token_out(t) for t in await self.twin.tokens.list()]

    async def create_token(self, call: Call) -> NewToken:
        scopes = parse_scopes(call.body.scopes, self.twin.registry.manifests)
        self._hold(call, scopes)
        info, secret = await self.twin.tokens.create(scopes, call.body.name)
        return NewToken(secret, _token_out(info))

    async def revoke_token(self, call: Call) -> None:
        token_id = call.params["token_id"]
        if not await self.twin.tokens.delete(token_id):
            raise NotFound(f"no token with id {token_id!r}")

    async def access_log(self, call: Call) -> list[AccessEntry]:
        before = call.query.get("before")
        if before is not None and not _whole(before, 18):
            raise BadInput("before must be an entry id (a whole number)")
        rows = await self.twin.access.entries(
            limit=_limit(call), before=None if before is None else int(before)
        )
        return [AccessEntry(**row) for row in rows]

    async def unlock(self, call: Call) -> Unlocked:
        await self.twin.unlock_remotely(
            call.body.passphrase, f"address {client_address(call.request)}"
        )
        return Unlocked(False)


def capabilities(twin: Twin) -> list[CapabilityInfo]:
    return [
        CapabilityInfo(
            m.id,
            m.name,
            m.version,
            m.description,
            [PermissionInfo(p.name, p.description, p.obsolete) for p in m.permissions.values()],
            list(m.requires),
            item.source,
        )
        for m, item in ((item.manifest, item) for item in twin.registry.loaded.values())
    ]


def _token_out(info: Any) -> TokenInfoOut:
    return TokenInfoOut(
        info.id,
        info.name,
        info.kind,
        list(info.scopes),
        info.experience,
        info.created,
        info.last_used,
    )


def admin_builtin(twin: Twin) -> Builtin:
    return (lambda context: AdminCapability(context, twin), MANIFEST, Path(__file__).parent)
