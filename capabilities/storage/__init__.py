"""The ``storage`` capability: JSON documents in namespaces, encrypted at rest, with conditional
writes, listings, batches and a live change feed; for experiences over HTTP and for other
capabilities through :class:`Storage` (``self.require(Storage).namespace("contacts")``)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from twin import Capability, Holding, Migration
from twin.api import Endpoint

from ._store import (
    Change,
    Changes,
    Delete,
    Document,
    Namespace,
    Page,
    Put,
    Store,
    Usage,
    Written,
)

if TYPE_CHECKING:
    from twin.export import Export, Part

PURGE_EVERY = 6 * 3600  # seconds between clean-ups of old tombstones

__all__ = [
    "Change",
    "Changes",
    "Delete",
    "Document",
    "Namespace",
    "Page",
    "Put",
    "Storage",
    "Usage",
    "Written",
]


class Storage(Capability):
    """Documents for every experience and plugin; ``namespace(name)`` gives one namespace."""

    migrations = (
        Migration(
            "create namespaces, documents and folders",
            """
            CREATE TABLE storage_namespaces (
                name TEXT PRIMARY KEY,
                seq INTEGER NOT NULL DEFAULT 0,
                documents INTEGER NOT NULL DEFAULT 0,
                bytes INTEGER NOT NULL DEFAULT 0,
                forgotten INTEGER NOT NULL DEFAULT 0
            );
            CREATE TABLE storage_documents (
                id INTEGER PRIMARY KEY,
                namespace TEXT NOT NULL,
                key_hash BLOB NOT NULL,
                key BLOB NOT NULL,
                body BLOB,
                size INTEGER NOT NULL,
                version INTEGER NOT NULL,
                created REAL NOT NULL,
                updated REAL NOT NULL,
                UNIQUE (namespace, key_hash)
            );
            CREATE INDEX storage_documents_by_version ON storage_documents (namespace, version);
            CREATE TABLE storage_folders (
                folder BLOB NOT NULL,
                document INTEGER NOT NULL REFERENCES storage_documents (id) ON DELETE CASCADE,
                PRIMARY KEY (folder, document)
            ) WITHOUT ROWID;
            CREATE INDEX storage_folders_by_document ON storage_folders (document);
        """,
        ),
    )

    def __init__(self, context: Any) -> None:
        super().__init__(context)
        self.store = Store(context.db, context.box("documents"), context.settings.storage_quota)
        self._purging: asyncio.Task[None] | None = None

    def namespace(self, name: str) -> Namespace:
        """One namespace's documents (the name is checked: ``[a-z][a-z0-9_]{0,39}``)."""
        return self.store.namespace(name)

    async def holdings(self) -> Sequence[Holding]:
        """Each namespace that was ever written to, for the owner's Settings."""
        return [
            Holding(u.namespace, u.documents, u.bytes, u.quota, "documents")
            for u in await self.store.usages()
        ]

    async def export(self, out: Export) -> None:
        """Every namespace and document, in plain JSON (docs/export-format.md, storage)."""
        from ._export import export_storage

        await export_storage(self.store, out)

    async def restore(self, part: Part) -> None:
        """Every namespace back as it was exported: documents, versions, times, deletions and
        counters, so change feeds go on where they were."""
        from ._export import restore_storage

        await restore_storage(self.store, part)

    def routes(self) -> Sequence[Endpoint]:
        from ._http import Routes

        return Routes(self).endpoints()

    async def startup(self) -> None:
        self._purging = asyncio.create_task(self._purge_now_and_then(), name="storage purge")

    async def shutdown(self) -> None:
        if self._purging is not None:
            self._purging.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._purging

    async def _purge_now_and_then(self) -> None:
        while True:
            try:
                await self.store.purge()
            except Exception:  # the next round tries again; the feed stays correct meanwhile
                self.context.log.exception("could not forget old deletions")
            await asyncio.sleep(PURGE_EVERY)
