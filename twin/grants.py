"""Grants: which of its declared scopes the owner allowed each experience, and its page token."""

from __future__ import annotations

import base64
import json
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from twin.db import Database
from twin.errors import BadInput
from twin.experiences import Experience
from twin.tokens import TOKEN_PREFIX, Tokens
from twin.vault import Vault, keyed_hash


@dataclass(frozen=True)
class Grant:
    """The scopes an experience may use, as granted by the owner."""

    experience: str
    scopes: frozenset[str]
    nonce: str
    granted: float


class Grants:
    """Grants and revokes experiences' scopes; derives the token each experience page carries."""

    def __init__(self, db: Database, vault: Vault, tokens: Tokens) -> None:
        self._db = db
        self._vault = vault
        self._tokens = tokens

    async def get(self, experience: str) -> Grant | None:
        row = await self._db.fetchone(
            "SELECT experience, scopes, nonce, granted FROM twin_grants WHERE experience = ?",
            (experience,),
        )
        return _grant(row) if row else None

    async def all(self) -> dict[str, Grant]:
        rows = await self._db.fetchall("SELECT experience, scopes, nonce, granted FROM twin_grants")
        return {row["experience"]: _grant(row) for row in rows}

    async def grant(self, experience: Experience, scopes: frozenset[str]) -> Grant:
        """Allow ``scopes`` (a subset of what the experience declared), replacing any earlier."""
        extra = scopes - experience.uses
        if extra:
            raise BadInput(
                f"{experience.id} did not declare {', '.join(sorted(extra))}; "
                f"it declares {', '.join(sorted(experience.uses)) or 'nothing'}"
            )
        grant = Grant(experience.id, scopes, secrets.token_hex(16), time.time())
        token = self.token(grant)

        async def write(conn: Any) -> None:  # the grant and its token, together or not at all
            await conn.execute(
                "INSERT OR REPLACE INTO twin_grants (experience, scopes, nonce, granted) "
                "VALUES (?,?,?,?)",
                (grant.experience, json.dumps(sorted(scopes)), grant.nonce, grant.granted),
            )
            await self._tokens.write_experience_token(conn, experience.id, token, scopes)

        await self._db.transaction(write)
        self._tokens.forget()
        return grant

    async def restore(self, grants: dict[str, Any], experiences: Mapping[str, Experience]) -> None:
        """The grants of an export (``twin/grants.json``), each to an experience installed
        here, for the scopes it still declares, at the time it was first granted."""
        for name, held in grants.items():
            if not isinstance(held, dict) or not isinstance(held.get("scopes"), list):
                raise BadInput(f"twin/grants.json: the grant of {name} has no scopes")
            experience = experiences.get(name)
            if experience is None:
                continue  # not installed here: granted again once it is
            scopes = frozenset(s for s in held["scopes"] if isinstance(s, str)) & experience.uses
            grant = await self.grant(experience, scopes)
            if isinstance(held.get("granted"), int | float):
                await self._db.execute(
                    "UPDATE twin_grants SET granted = ? WHERE experience = ?",
                    (held["granted"], grant.experience),
                )

    async def revoke(self, experience: str) -> None:
        async def remove(conn: Any) -> None:
            await conn.execute("DELETE FROM twin_grants WHERE experience = ?", (experience,))
            await conn.execute("DELETE FROM twin_tokens WHERE id = ?", (f"exp_{experience}",))

        await self._db.transaction(remove)
        self._tokens.forget()

    def token(self, grant: Grant) -> str:
        """The experience's bearer token, derived from the vault so it never needs storing."""
        key = self._vault.key("twin", "experience-tokens")
        digest = keyed_hash(f"{grant.experience}:{grant.nonce}".encode(), key)
        return TOKEN_PREFIX + base64.urlsafe_b64encode(digest).decode().rstrip("=")


def _grant(row) -> Grant:  # type: ignore[no-untyped-def]
    return Grant(
        row["experience"], frozenset(json.loads(row["scopes"])), row["nonce"], row["granted"]
    )
