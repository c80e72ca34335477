"""The ``files`` capability: the twin's files and folders, encrypted at rest, over
``/api/files/``, WebDAV at ``/dav/``, and public share links at ``/s/``; other capabilities
reach it through :class:`Files` (``self.require(Files).store``)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.types import ASGIApp, Receive, Scope, Send

from twin import Capability, Holding, Migration
from twin.api import Endpoint
from twin.doors import Mount

from ._blobs import Blobs
from ._store import FileStore, data_root
from ._tree import MIGRATIONS_SQL, AlreadyExists, Entry, TrashItem, Usage

if TYPE_CHECKING:
    from twin.export import Export, Part

UPKEEP_EVERY = 6 * 3600  # seconds between purges of the old trash and left-over content

__all__ = ["AlreadyExists", "Entry", "FileStore", "Files", "TrashItem", "Usage"]


class Files(Capability):
    """Files and folders for every experience, WebDAV client and plugin."""

    migrations = (
        Migration("create nodes, blobs, properties and usage", MIGRATIONS_SQL),
        Migration(
            "create share links",
            """
            CREATE TABLE files_shares (
                id TEXT PRIMARY KEY,
                secret_hash BLOB NOT NULL UNIQUE,
                secret BLOB NOT NULL,
                node INTEGER NOT NULL REFERENCES files_nodes (id) ON DELETE CASCADE,
                created REAL NOT NULL,
                expires REAL NOT NULL,
                max_downloads INTEGER,
                downloads INTEGER NOT NULL DEFAULT 0,
                revoked REAL
            );
            CREATE INDEX files_shares_by_node ON files_shares (node);
            """,
        ),
        Migration(
            "keep content digests",
            "ALTER TABLE files_blobs ADD COLUMN digests BLOB",
        ),
    )

    def __init__(self, context: Any) -> None:
        super().__init__(context)
        settings = context.settings
        blobs = Blobs(data_root(settings.data_dir), context.box("content"))
        self.store = FileStore(
            context.db, context.box("tree"), blobs, settings.files_quota, settings.trash_days
        )
        from ._shares import Shares

        self.shares = Shares(self.store, context.box("shares"), settings.url)
        self._upkeep: asyncio.Task[None] | None = None

    def routes(self) -> Sequence[Endpoint]:
        from ._http import Routes

        return Routes(self).endpoints()

    def mounts(self) -> Sequence[Mount]:
        from ._share import share_app

        return [Mount("/dav", _DavOnFirstUse(self)), Mount("/s", share_app(self))]

    async def holdings(self) -> Sequence[Holding]:
        usage = await self.store.usage()
        if not usage.used and not usage.files and not usage.folders:
            return []
        return [Holding("files", usage.files, usage.used, usage.quota, "files")]

    async def check(self, data_dir: Path) -> list[str]:
        """Problems with the files kept in ``data_dir`` (content missing or damaged)."""
        blobs = Blobs(data_root(data_dir), self.store.blobs.box)
        return await FileStore(self.db, self.store.box, blobs, 0, 1).check()

    async def export(self, out: Export) -> None:
        """``index.jsonl``, ``shares.json`` and every file's bytes at its real path, live ones
        under ``tree/`` and those in the trash under ``trash/`` (docs/export-format.md)."""
        from ._export import export_files

        await export_files(self.store, self.shares, out)

    async def restore(self, part: Part) -> None:
        """Every folder and file back as it was exported: names, bytes, times, properties,
        ETags, the trash and the share links (those whose secret the export holds)."""
        from ._export import restore_files

        await restore_files(self.store, self.shares, part)

    async def startup(self) -> None:
        self._upkeep = asyncio.create_task(self._upkeep_now_and_then(), name="files upkeep")

    async def shutdown(self) -> None:
        await self.store.blobs.settle()
        self.store.blobs.close()
        if self._upkeep is not None:
            self._upkeep.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._upkeep

    async def _upkeep_now_and_then(self) -> None:
        while True:
            try:
                removed, freed = await self.store.sweep()
                if removed:
                    self.context.log.info(
                        "removed %d left-over content files (%d bytes) of uploads cut short",
                        removed,
                        freed,
                    )
                if not self.context.vault.locked:
                    await self.store.purge()
            except Exception:  # the next round tries again
                self.context.log.exception("could not clean up the files")
            await asyncio.sleep(UPKEEP_EVERY)


class _DavOnFirstUse:
    """The WebDAV door, imported when a client first knocks: a twin nobody mounts over WebDAV
    never loads it (its XML and locks), and idles smaller."""

    def __init__(self, capability: Files) -> None:
        self.capability = capability
        self.app: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.app is None:
            from ._dav import dav_app

            self.app = dav_app(self.capability)
        await self.app(scope, receive, send)
