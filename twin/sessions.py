"""Owner sessions in the browser and the one-time links that lead to a passkey; only hashes of
their secrets are stored, and device names are sealed in the vault."""

from __future__ import annotations

import secrets
import sqlite3
import time
from dataclasses import dataclass
from typing import Any

from twin.db import Database
from twin.tokens import secret_hash
from twin.vault import Vault

SESSION_IDLE = 7 * 24 * 3600
SESSION_ABSOLUTE = 30 * 24 * 3600
LINK_TTL = {"setup": 3600, "pair": 600}  # seconds: a setup link, a pairing link
RECENT = 600  # a sign-in this fresh may add and remove passkeys
DEAD_LINK = (
    "this link was used or has expired; run `twin access link` on the twin's machine for a "
    "fresh setup link, or add this device from a signed-in one"
)


def setup_line(base_url: str, secret: str) -> str:
    """How a setup link is printed on the twin's machine."""
    return f"Create your passkey (the link works once, for one hour): {base_url}/setup/{secret}"


@dataclass(frozen=True)
class Session:
    """One signed-in browser, as the owner sees it in the settings."""

    id: str
    passkey: str | None
    device: str | None
    created: float
    last_seen: float
    expires: float

    @property
    def recent(self) -> bool:
        """Signed in with a passkey within ``RECENT`` seconds: enough to change the passkeys,
        so that a stolen cookie alone cannot add one of its own or remove the owner's."""
        return time.time() - self.created < RECENT


class DeviceNames:
    """Names of devices, sealed in the vault. While the twin is locked a new name waits in
    memory and is sealed when it unlocks; a name is what the owner wrote, so never in clear."""

    def __init__(self, db: Database, vault: Vault, table: str, column: str) -> None:
        self._db = db
        self._vault = vault
        self._table = table
        self._column = column
        self._waiting: dict[str, str] = {}

    def seal(self, row_id: str, name: str) -> bytes | None:
        if self._vault.locked:
            self._waiting[row_id] = name
            return None
        return self._vault.box("twin", "device-names").seal(name, context=row_id)

    def open(self, row_id: str, sealed: bytes | None) -> str | None:
        if sealed is None or self._vault.locked:
            return self._waiting.get(row_id)
        return self._vault.box("twin", "device-names").open_text(sealed, context=row_id)

    async def flush(self) -> None:
        """Seal the names that waited for the vault to unlock."""
        waiting, self._waiting = self._waiting, {}
        await self._db.executemany(
            f"UPDATE {self._table} SET {self._column} = ? WHERE id = ? AND {self._column} IS NULL",
            [(self.seal(row_id, name), row_id) for row_id, name in waiting.items()],
        )


class Sessions:
    """Links (setup: one hour; pairing a device: ten minutes; each works once) and the browser
    sessions a passkey opens (idle and absolute expiry)."""

    def __init__(self, db: Database, vault: Vault) -> None:
        self._db = db
        self.names = DeviceNames(db, vault, "twin_sessions", "device")

    async def create_link(self, purpose: str = "setup") -> str:
        secret = secrets.token_urlsafe(32)
        now = time.time()
        await self._db.execute(
            "INSERT INTO twin_links (hash, purpose, created, expires) VALUES (?,?,?,?)",
            (secret_hash(secret), purpose, now, now + LINK_TTL[purpose]),
        )
        self._db.enqueue("DELETE FROM twin_links WHERE expires < ?", (now - 3600,))
        return secret

    async def link_purpose(self, secret: str) -> str | None:
        """What a link is for ("setup" or "pair"), or None when it is unknown, used or expired."""
        if not secret or len(secret) > 100:
            return None
        row = await self._db.fetchone(
            "SELECT purpose, expires, used FROM twin_links WHERE hash = ?", (secret_hash(secret),)
        )
        if row is None or row["used"] is not None or row["expires"] <= time.time():
            return None
        return str(row["purpose"])

    @staticmethod
    async def spend_link(conn: Any, secret: str) -> bool:
        """Within the caller's transaction, spend a link; True only for the first use of a
        valid, unexpired link."""
        now = time.time()
        result = await conn.execute(
            "UPDATE twin_links SET used = ? WHERE hash = ? AND used IS NULL AND expires > ?",
            (now, secret_hash(secret), now),
        )
        return bool(result.rowcount == 1)

    async def start(self, passkey: str | None, device: str) -> str:
        """Open a session for a browser that just proved a passkey; returns the cookie's secret."""
        secret = secrets.token_urlsafe(32)
        session_id = secrets.token_hex(12)
        now = time.time()
        await self._db.execute(
            "INSERT INTO twin_sessions (hash, id, passkey, device, created, last_seen, expires) "
            "VALUES (?,?,?,?,?,?,?)",
            (
                secret_hash(secret),
                session_id,
                passkey,
                self.names.seal(session_id, device),
                now,
                now,
                now + SESSION_ABSOLUTE,
            ),
        )
        self._db.enqueue(
            "DELETE FROM twin_sessions WHERE expires < ? OR last_seen < ?",
            (now, now - SESSION_IDLE),
        )
        return secret

    async def check(self, secret: str | None) -> Session | None:
        """The live session a cookie's secret belongs to, or None."""
        if not secret or len(secret) > 100:
            return None
        digest = secret_hash(secret)
        row = await self._db.fetchone("SELECT * FROM twin_sessions WHERE hash = ?", (digest,))
        now = time.time()
        if row is None or row["expires"] < now or row["last_seen"] + SESSION_IDLE < now:
            return None
        if now - row["last_seen"] > 60:
            self._db.enqueue("UPDATE twin_sessions SET last_seen = ? WHERE hash = ?", (now, digest))
        return self._session(row)

    def _session(self, row: sqlite3.Row) -> Session:
        return Session(
            id=row["id"],
            passkey=row["passkey"],
            device=self.names.open(row["id"], row["device"]),
            created=row["created"],
            last_seen=row["last_seen"],
            expires=row["expires"],
        )

    async def all(self) -> list[Session]:
        """Live sessions, the most recently used first."""
        now = time.time()
        rows = await self._db.fetchall(
            "SELECT * FROM twin_sessions WHERE expires >= ? AND last_seen >= ? "
            "ORDER BY last_seen DESC",
            (now, now - SESSION_IDLE),
        )
        return [self._session(row) for row in rows]

    async def end(self, secret: str | None) -> None:
        if secret:
            await self._db.execute(
                "DELETE FROM twin_sessions WHERE hash = ?", (secret_hash(secret),)
            )

    async def end_by_id(self, session_id: str) -> bool:
        result = await self._db.execute("DELETE FROM twin_sessions WHERE id = ?", (session_id,))
        return result.rowcount == 1

    async def end_for_passkey(self, passkey: str) -> None:
        await self._db.execute("DELETE FROM twin_sessions WHERE passkey = ?", (passkey,))
