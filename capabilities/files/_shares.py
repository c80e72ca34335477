"""Share links: a capability URL for one file or folder, with an expiry and an optional
download limit, revocable; what the public pages at ``/s/`` open."""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
import time
from dataclasses import dataclass

from twin import BadInput, Gone, NotFound
from twin.vault import Box

from ._store import FileStore
from ._tree import ROOT, Entry

MAX_DAYS = 365
MAX_SHARES = 10_000


@dataclass(frozen=True)
class Share:
    """One share link; ``url`` is the link itself (whoever has it may download)."""

    id: str
    node: int
    path: str
    name: str
    kind: str
    created: float
    expires: float
    max_downloads: int | None
    downloads: int
    url: str

    @property
    def state(self) -> str:
        if time.time() >= self.expires:
            return "expired"
        if self.max_downloads is not None and self.downloads >= self.max_downloads:
            return "used up"
        return "active"

    @property
    def qr(self) -> str:
        """The link as a QR code: an SVG ``data:`` URI."""
        from twin.account import qr_svg

        return qr_svg(self.url)


def _hash(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


class Shares:
    """The owner's share links."""

    def __init__(self, store: FileStore, box: Box, base_url: str) -> None:
        self.store = store
        self.box = box
        self.base_url = base_url

    def _url(self, secret: str) -> str:
        return f"{self.base_url}/s/{secret}"

    async def create(self, path: str, days: float = 7, max_downloads: int | None = None) -> Share:
        if not 0 < days <= MAX_DAYS:
            raise BadInput(f"a link lasts more than 0 and at most {MAX_DAYS} days, not {days}")
        if max_downloads is not None and not 1 <= max_downloads <= 1_000_000:
            raise BadInput("max_downloads is a number from 1 to 1000000, or null for no limit")
        entry = await self.store.stat(path)
        if not entry.path:
            raise BadInput("the root folder cannot be shared: share a folder in it")
        secret = secrets.token_urlsafe(24)
        share_id = secrets.token_hex(8)
        now = time.time()

        def add(conn: sqlite3.Connection) -> None:
            count = conn.execute("SELECT count(*) FROM files_shares WHERE revoked IS NULL")
            if count.fetchone()[0] >= MAX_SHARES:
                raise BadInput(f"at most {MAX_SHARES} links at once: revoke old ones first")
            conn.execute(
                "INSERT INTO files_shares (id, secret_hash, secret, node, created, expires, "
                "max_downloads) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    share_id,
                    _hash(secret),
                    self.box.seal(secret, context=share_id),
                    entry.id,
                    now,
                    now + days * 86400,
                    max_downloads,
                ),
            )

        await self.store.db.write(add)
        return Share(
            share_id,
            entry.id,
            entry.path,
            entry.name,
            entry.kind,
            now,
            now + days * 86400,
            max_downloads,
            0,
            self._url(secret),
        )

    async def list(self) -> list[Share]:
        """Links not revoked whose file is still there, newest first."""

        def read(conn: sqlite3.Connection) -> list[Share]:
            rows = conn.execute(
                "SELECT s.id, s.node, s.secret, s.created, s.expires, s.max_downloads, "
                "s.downloads, n.folder FROM files_shares s JOIN files_nodes n ON n.id = s.node "
                "WHERE s.revoked IS NULL AND n.trashed IS NULL ORDER BY s.created DESC"
            ).fetchall()
            return [self._share(conn, row) for row in rows]

        return await self.store.db.read(read)

    def _share(self, conn: sqlite3.Connection, row: sqlite3.Row) -> Share:
        path = self.store._path_of(conn, row["node"])
        return Share(
            row["id"],
            row["node"],
            path,
            path.rpartition("/")[2],
            "folder" if row["folder"] else "file",
            row["created"],
            row["expires"],
            row["max_downloads"],
            row["downloads"],
            self._url(self.box.open_text(row["secret"], context=row["id"])),
        )

    async def revoke(self, share_id: str) -> None:
        result = await self.store.db.execute(
            "UPDATE files_shares SET revoked = ? WHERE id = ? AND revoked IS NULL",
            (time.time(), share_id),
        )
        if not result.rowcount:
            raise NotFound(f"there is no link {share_id!r} (or it was revoked already)")

    async def open(self, secret: str) -> tuple[Share, Entry]:
        """The share a link's secret names and the file or folder it shares; Gone when it
        expired, was revoked or used up, NotFound when there never was such a link."""
        if not 16 <= len(secret) <= 64 or not secret.isascii():
            raise NotFound("there is no such link")

        def read(conn: sqlite3.Connection) -> tuple[Share, bool, bool]:
            row = conn.execute(
                "SELECT s.id, s.node, s.secret, s.created, s.expires, s.max_downloads, "
                "s.downloads, n.folder, s.revoked, n.trashed FROM files_shares s "
                "JOIN files_nodes n ON n.id = s.node WHERE s.secret_hash = ?",
                (_hash(secret),),
            ).fetchone()
            if row is None:
                raise NotFound("there is no such link")
            dead = row["revoked"] is not None or row["trashed"] is not None
            reachable = not dead and self._reachable(conn, row["node"])
            return self._share(conn, row), dead, reachable

        share, dead, reachable = await self.store.db.read(read)
        if dead or not reachable:
            raise Gone("this link was revoked, or what it shared was deleted")
        if share.state != "active":
            raise Gone(f"this link has {share.state.replace('used up', 'been used up')}")
        return share, await self.store.stat(share.path)

    def _reachable(self, conn: sqlite3.Connection, node: int) -> bool:
        while node != ROOT:
            row = conn.execute(
                "SELECT parent, trashed FROM files_nodes WHERE id = ?", (node,)
            ).fetchone()
            if row is None or row["trashed"] is not None:
                return False
            node = row["parent"]
        return True

    async def count_download(self, share: Share) -> None:
        """Count one download; Gone if the limit was reached meanwhile."""
        result = await self.store.db.execute(
            "UPDATE files_shares SET downloads = downloads + 1 WHERE id = ? AND revoked IS NULL "
            "AND (max_downloads IS NULL OR downloads < max_downloads) AND expires > ?",
            (share.id, time.time()),
        )
        if not result.rowcount:
            raise Gone("this link has been used up")
