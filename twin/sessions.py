"""Owner sessions in the browser and the one-time links that start them; only hashes are stored."""

from __future__ import annotations

import secrets
import time

from twin.db import Database
from twin.tokens import secret_hash

SESSION_IDLE = 7 * 24 * 3600
SESSION_ABSOLUTE = 30 * 24 * 3600
LINK_TTL = 3600


class Sessions:
    """Setup links (single use, one hour) and the sessions they open (idle and absolute expiry)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def create_link(self, purpose: str = "setup") -> str:
        secret = secrets.token_urlsafe(32)
        now = time.time()
        await self._db.execute(
            "INSERT INTO twin_links (hash, purpose, created, expires) VALUES (?,?,?,?)",
            (secret_hash(secret), purpose, now, now + LINK_TTL),
        )
        self._db.enqueue("DELETE FROM twin_links WHERE expires < ?", (now - LINK_TTL,))
        return secret

    async def link_valid(self, secret: str, purpose: str = "setup") -> bool:
        row = await self._db.fetchone(
            "SELECT expires, used FROM twin_links WHERE hash = ? AND purpose = ?",
            (secret_hash(secret), purpose),
        )
        return row is not None and row["used"] is None and row["expires"] > time.time()

    async def use_link(self, secret: str, purpose: str = "setup") -> bool:
        """Spend a link; True only for the first use of a valid, unexpired link."""
        now = time.time()
        result = await self._db.execute(
            "UPDATE twin_links SET used = ? WHERE hash = ? AND purpose = ? AND used IS NULL "
            "AND expires > ?",
            (now, secret_hash(secret), purpose, now),
        )
        return result.rowcount == 1

    async def start(self) -> str:
        secret = secrets.token_urlsafe(32)
        now = time.time()
        await self._db.execute(
            "INSERT INTO twin_sessions (hash, created, last_seen, expires) VALUES (?,?,?,?)",
            (secret_hash(secret), now, now, now + SESSION_ABSOLUTE),
        )
        self._db.enqueue(
            "DELETE FROM twin_sessions WHERE expires < ? OR last_seen < ?",
            (now, now - SESSION_IDLE),
        )
        return secret

    async def check(self, secret: str | None) -> bool:
        if not secret or len(secret) > 100:
            return False
        digest = secret_hash(secret)
        row = await self._db.fetchone(
            "SELECT last_seen, expires FROM twin_sessions WHERE hash = ?", (digest,)
        )
        now = time.time()
        if row is None or row["expires"] < now or row["last_seen"] + SESSION_IDLE < now:
            return False
        if now - row["last_seen"] > 60:
            self._db.enqueue("UPDATE twin_sessions SET last_seen = ? WHERE hash = ?", (now, digest))
        return True

    async def end(self, secret: str | None) -> None:
        if secret:
            await self._db.execute(
                "DELETE FROM twin_sessions WHERE hash = ?", (secret_hash(secret),)
            )
