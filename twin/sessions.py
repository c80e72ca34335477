"""Owner sessions in the browser and the one-time links that start them; only hashes are stored."""

from __future__ import annotations

import hashlib
import secrets
import time

from twin.db import Database

SESSION_IDLE = 7 * 24 * 3600
SESSION_ABSOLUTE = 30 * 24 * 3600
LINK_TTL = 3600


def _hash(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


class Sessions:
    """Setup links (single use, one hour) and the sessions they open (idle and absolute expiry)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def create_link(self, purpose: str = "setup") -> str:
        secret = secrets.token_urlsafe(32)
        now = time.time()
        await self._db.execute(
            "INSERT INTO twin_links (hash, purpose, created, expires) VALUES (?,?,?,?)",
            (_hash(secret), purpose, now, now + LINK_TTL),
        )
        self._db.enqueue("DELETE FROM twin_links WHERE expires < ?", (now - LINK_TTL,))
        return secret

    async def link_valid(self, secret: str, purpose: str = "setup") -> bool:
        row = await self._db.fetchone(
            "SELECT expires, used FROM twin_links WHERE hash = ? AND purpose = ?",
            (_hash(secret), purpose),
        )
        return row is not None and row["used"] is None and row["expires"] > time.time()

    async def use_link(self, secret: str, purpose: str = "setup") -> bool:
        """Spend a link; True only for the first use of a valid, unexpired link."""
        now = time.time()
        result = await self._db.execute(
            "UPDATE twin_links SET used = ? WHERE hash = ? AND purpose = ? AND used IS NULL "
            "AND expires > ?",
            (now, _hash(secret), purpose, now),
        )
        return result.rowcount == 1

    async def start(self) -> str:
        secret = secrets.token_urlsafe(32)
        now = time.time()
        await self._db.execute(
            "INSERT INTO twin_sessions (hash, created, last_seen, expires) VALUES (?,?,?,?)",
            (_hash(secret), now, now, now + SESSION_ABSOLUTE),
        )
        self._db.enqueue(
            "DELETE FROM twin_sessions WHERE expires < ? OR last_seen < ?",
            (now, now - SESSION_IDLE),
        )
        return secret

    async def check(self, secret: str | None) -> bool:
        if not secret or len(secret) > 100:
            return False
        digest = _hash(secret)
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
            await self._db.execute("DELETE FROM twin_sessions WHERE hash = ?", (_hash(secret),))
