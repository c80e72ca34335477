"""Bearer tokens: 256-bit secrets stored only as hashes, each carrying a set of scopes."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twin.db import Database
from twin.errors import BadInput, NotFound
from twin.scopes import Principal
from twin.vault import Box, Vault

TOKEN_PREFIX = "twin_"
MAX_NAME = 64
_LAST_USED_EVERY = 60.0
_RECHECK_AFTER = 5.0  # a token revoked by another process (the CLI) stops working within this


@dataclass(frozen=True)
class TokenInfo:
    """A token as the owner sees it in a listing (never the secret)."""

    id: str
    name: str
    kind: str
    scopes: tuple[str, ...]
    experience: str | None
    created: float
    last_used: float | None


def secret_hash(token: str) -> bytes:
    """How tokens, sessions and links are stored: never the secret, only its SHA-256."""
    return hashlib.sha256(token.encode()).digest()


def check_name(name: str) -> str:
    name = name.strip()
    if not 1 <= len(name) <= MAX_NAME or not name.isprintable():
        raise BadInput(f"a token name is 1 to {MAX_NAME} printable characters")
    return name


class Tokens:
    """Creates, lists, revokes and checks bearer tokens."""

    def __init__(
        self, db: Database, vault: Vault, declared: Callable[[str], frozenset[str]]
    ) -> None:
        self._db = db
        self._vault = vault
        self._declared = declared
        self._cache: dict[bytes, tuple[Principal, float]] = {}
        self._touched: dict[bytes, float] = {}

    def _names(self) -> Box:
        return self._vault.box("twin", "token-names")

    async def create(self, scopes: frozenset[str], name: str) -> tuple[TokenInfo, str]:
        """A new token for the owner's scripts; the secret is returned once and never stored."""
        name = check_name(name)
        token = TOKEN_PREFIX + base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip(
            "="
        )
        token_id = "tok_" + secrets.token_hex(6)
        now = time.time()
        await self._db.execute(
            "INSERT INTO twin_tokens (id, hash, kind, name, scopes, created) VALUES (?,?,?,?,?,?)",
            (
                token_id,
                secret_hash(token),
                "token",
                self._names().seal(name, context=token_id),
                json.dumps(sorted(scopes)),
                now,
            ),
        )
        return TokenInfo(token_id, name, "token", tuple(sorted(scopes)), None, now, None), token

    async def write_experience_token(
        self, conn: Any, experience: str, token: str, scopes: frozenset[str]
    ) -> None:
        """Within the caller's transaction on ``conn``, record the token an experience's pages
        carry (derived from the vault, so only its hash is kept); call ``forget()`` after."""
        token_id = f"exp_{experience}"
        await conn.execute("DELETE FROM twin_tokens WHERE id = ?", (token_id,))
        await conn.execute(
            "INSERT INTO twin_tokens (id, hash, kind, name, scopes, experience, created) "
            "VALUES (?,?,?,?,?,?,?)",
            (
                token_id,
                secret_hash(token),
                "experience",
                self._names().seal(experience, context=token_id),
                json.dumps(sorted(scopes)),
                experience,
                time.time(),
            ),
        )

    def forget(self) -> None:
        """Drop cached lookups after tokens changed, so a removed one stops working at once."""
        self._cache.clear()

    async def authenticate(self, token: str) -> Principal | None:
        """The principal a bearer token stands for, or None when it is unknown or revoked."""
        if not token.startswith(TOKEN_PREFIX) or len(token) > 100:
            return None
        digest = secret_hash(token)
        cached = self._cache.get(digest)
        now = time.monotonic()
        if cached is not None and now - cached[1] < _RECHECK_AFTER:
            return cached[0]
        row = await self._db.fetchone(
            "SELECT id, kind, scopes, experience FROM twin_tokens WHERE hash = ?", (digest,)
        )
        if row is None:
            return None
        scopes = frozenset(json.loads(row["scopes"]))
        if row["kind"] == "experience":
            scopes &= self._declared(row["experience"])
            principal = Principal("experience", row["experience"], scopes)
        else:
            principal = Principal("token", row["id"], scopes)
        if len(self._cache) > 10_000:
            self._cache.clear()
            self._touched.clear()
        self._cache[digest] = (principal, now)
        if now - self._touched.get(digest, -_LAST_USED_EVERY) >= _LAST_USED_EVERY:
            self._touched[digest] = now
            self._db.enqueue(
                "UPDATE twin_tokens SET last_used = ? WHERE id = ?", (time.time(), row["id"])
            )
        return principal

    async def list(self) -> list[TokenInfo]:
        rows = await self._db.fetchall(
            "SELECT id, kind, name, scopes, experience, created, last_used FROM twin_tokens "
            "ORDER BY created"
        )
        box = self._names()
        return [
            TokenInfo(
                r["id"],
                box.open_text(r["name"], context=r["id"]),
                r["kind"],
                tuple(json.loads(r["scopes"])),
                r["experience"],
                r["created"],
                r["last_used"],
            )
            for r in rows
        ]

    async def revoke(self, id_or_name: str) -> TokenInfo:
        """Revoke by id or by name; a name shared by several tokens must be given as an id."""
        matches = [
            t for t in await self.list() if t.kind == "token" and id_or_name in (t.id, t.name)
        ]
        if not matches:
            raise NotFound(f"no token with id or name {id_or_name!r} (see `twin token list`)")
        if len(matches) > 1:
            ids = ", ".join(t.id for t in matches)
            raise BadInput(f"several tokens are named {id_or_name!r}; revoke one by id: {ids}")
        await self.delete(matches[0].id)
        return matches[0]

    async def delete(self, token_id: str) -> bool:
        """Remove one of the owner's tokens (not an experience's); False if there is none."""
        result = await self._db.execute(
            "DELETE FROM twin_tokens WHERE id = ? AND kind = 'token'", (token_id,)
        )
        self.forget()
        return result.rowcount == 1
