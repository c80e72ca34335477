"""What ``twin export`` takes of storage: each namespace's counters, its documents in the order
listings give them, and the deletions the change feed still remembers; read a page at a time."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from functools import partial
from typing import Any

import msgspec

from twin.export import Export

from ._store import Store

PAGE_ROWS = 500
PAGE_BYTES = 4 * 1024 * 1024  # a page ends after this much, so 1 MiB documents stay few at once
_DOCUMENTS = (  # through the folder "" that every live key is in: in listing order, by index
    "SELECT d.id, d.key_hash, d.key, d.body, d.size, d.version, d.created, d.updated "
    "FROM storage_folders f JOIN storage_documents d ON d.id = f.document "
    "WHERE f.folder = ? AND f.document > ? ORDER BY f.document"
)
_DELETED = (
    "SELECT key_hash, key, 0 AS size, version, created, updated FROM storage_documents "
    "WHERE namespace = ? AND version > ? AND body IS NULL ORDER BY version"
)


async def export_storage(store: Store, out: Export) -> None:
    """``namespaces.json``, then ``documents/<namespace>.jsonl`` for every namespace and
    ``deleted/<namespace>.jsonl`` for those with deletions kept."""
    rows = await store.db.fetchall(
        "SELECT n.name, n.seq, n.documents, n.bytes, n.forgotten, "
        "(SELECT count(*) FROM storage_documents d WHERE d.namespace = n.name "
        "AND d.body IS NULL) AS deleted FROM storage_namespaces n ORDER BY n.name"
    )
    await out.json(
        "namespaces.json",
        {
            "quota": store.quota,
            "namespaces": [
                {
                    "name": row["name"],
                    "last_seq": row["seq"],
                    "documents": row["documents"],
                    "bytes": row["bytes"],
                    "deleted": row["deleted"],
                    "forgotten": row["forgotten"],
                }
                for row in rows
            ],
        },
    )
    for row in rows:
        name = row["name"]
        await out.lines(f"documents/{name}.jsonl", _documents(store, name))
        if row["deleted"]:
            await out.lines(f"deleted/{name}.jsonl", _deleted(store, name))


async def _documents(store: Store, namespace: str) -> AsyncIterator[dict[str, Any]]:
    """Every document of ``namespace``, in the order it was first created (as listings go)."""
    everything = store.folder_hash(namespace, "")
    after = 0
    while True:
        rows = await store.db.read(partial(_page, sql=_DOCUMENTS, params=(everything, after)))
        if not rows:
            return
        for row in rows:
            raw = store.open_body(row["body"], row["key_hash"])
            body = msgspec.json.decode(raw)
            document = {
                "key": store.open_key(row["key"], row["key_hash"]),
                "version": row["version"],
                "created": row["created"],
                "updated": row["updated"],
                "body": body,
            }
            if msgspec.json.encode(body) != raw:  # spacing or number forms a client wrote
                document["text"] = raw.decode("utf-8")
            yield document
        after = rows[-1]["id"]


async def _deleted(store: Store, namespace: str) -> AsyncIterator[dict[str, Any]]:
    """The deletions ``namespace`` still tells its change feed of, in the order they happened."""
    after = 0
    while True:
        rows = await store.db.read(partial(_page, sql=_DELETED, params=(namespace, after)))
        if not rows:
            return
        for row in rows:
            yield {
                "key": store.open_key(row["key"], row["key_hash"]),
                "version": row["version"],
                "created": row["created"],
                "deleted": row["updated"],
            }
        after = rows[-1]["version"]


def _page(conn: sqlite3.Connection, sql: str, params: tuple[Any, ...]) -> list[sqlite3.Row]:
    """The first rows of a query, up to PAGE_ROWS or PAGE_BYTES of stored documents."""
    rows: list[sqlite3.Row] = []
    size = 0
    cursor = conn.execute(sql, params)
    try:
        for row in cursor:
            rows.append(row)
            size += row["size"]
            if len(rows) >= PAGE_ROWS or size >= PAGE_BYTES:
                break
    finally:
        cursor.close()
    return rows
