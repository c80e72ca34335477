"""What ``twin export`` takes of storage and ``twin import`` puts back: each namespace's
counters, its documents in the order listings give them, and the deletions the change feed
still remembers; read a page at a time, and written back a page at a time.

Import keeps every version, time and counter, so a sync client's ``since`` from before the move
(and the ``410 gone`` for one older than what is remembered) means the same after it."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import msgspec

from twin import BadInput, Conflict, QuotaExceeded
from twin.export import Export, Part, seconds, whole
from twin.settings import human_size

from ._names import check_namespace, encode_body
from ._store import Delete, Put, Store

NAMESPACES = "namespaces.json"
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
        NAMESPACES,
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


# import


@dataclass(frozen=True)
class _Space:
    """A namespace as ``namespaces.json`` gives it."""

    name: str
    last_seq: int
    documents: int
    bytes: int
    deleted: int
    forgotten: int


async def restore_storage(store: Store, part: Part) -> None:
    """Read back, into a store that holds nothing yet, what :func:`export_storage` wrote:
    ``namespaces.json``, then each namespace's documents and (if it has any) deletions."""
    if await store.db.fetchval("SELECT count(*) FROM storage_namespaces"):  # each write adds one
        raise Conflict("this twin holds storage documents already: import into a new twin")
    first = await part.next()
    if first is None or first.name != NAMESPACES:
        raise BadInput(
            f"the storage part does not begin with {part.folder}/{NAMESPACES}: it is damaged"
        )
    spaces = _namespaces(await first.json(), first.path, store.quota)
    for space in spaces:
        restoring = _Namespace(store, space, first.path)
        item = await part.expect(f"documents/{space.name}.jsonl")
        async for where, line in item.numbered():
            await restoring.add(line, where, deleted=False)
        if space.deleted:
            item = await part.expect(f"deleted/{space.name}.jsonl")
            async for where, line in item.numbered():
                await restoring.add(line, where, deleted=True)
        await restoring.finish()
    if (extra := part.peek()) is not None:
        raise BadInput(
            f"{part.folder}/{extra} belongs to no namespace {first.path} lists (or not "
            "there): the export is damaged"
        )


def _namespaces(value: Any, path: str, quota: int) -> list[_Space]:
    if not isinstance(value, dict) or not isinstance(value.get("namespaces"), list):
        raise BadInput(f'{path} is not an object with a list of "namespaces"')
    spaces: list[_Space] = []
    for number, entry in enumerate(value["namespaces"], 1):
        try:
            space = _space(entry)
            if spaces and space.name <= spaces[-1].name:
                raise BadInput("the namespaces are listed once each, in order of name")
        except BadInput as exc:
            raise BadInput(f"namespace {number} of {path}: {exc.message}") from None
        if space.bytes > quota:
            raise QuotaExceeded(
                f"the namespace {space.name} holds {space.bytes:,} bytes; this twin's storage "
                f"quota is {quota:,} bytes ({human_size(quota)}): start it with a larger "
                "--storage-quota, then import again"
            )
        spaces.append(space)
    return spaces


def _space(entry: Any) -> _Space:
    if not isinstance(entry, dict):
        raise BadInput("it is not an object")
    name = entry.get("name")
    if not isinstance(name, str):
        raise BadInput("name must be a string")
    space = _Space(
        check_namespace(name),
        whole(entry.get("last_seq"), "last_seq", 0),
        whole(entry.get("documents"), "documents", 0),
        whole(entry.get("bytes"), "bytes", 0),
        whole(entry.get("deleted"), "deleted", 0),
        whole(entry.get("forgotten"), "forgotten", 0),
    )
    if space.forgotten > space.last_seq or space.documents + space.deleted > space.last_seq:
        raise BadInput(
            f"last_seq {space.last_seq} is less than its forgotten changes or its documents "
            "and deletions"
        )
    return space


@dataclass(frozen=True)
class _Row:
    where: str  # the line it came from, for a refusal
    key: str
    key_hash: bytes
    sealed_key: bytes
    body: bytes | None  # None: a deletion (a tombstone)
    size: int
    version: int
    created: float
    updated: float
    folders: tuple[bytes, ...]


@dataclass
class _Namespace:
    """One namespace as its lines are read: each checked and sealed as a write would be, then
    inserted a page at a time with its version and times as they were."""

    store: Store
    space: _Space
    listed_in: str  # namespaces.json's path
    documents: int = 0
    bytes: int = 0
    deleted: int = 0
    _rows: list[_Row] = field(default_factory=list)
    _pending: int = 0

    async def add(self, line: Any, where: str, *, deleted: bool) -> None:
        try:
            row = self._row(line, where, deleted)
        except BadInput as exc:
            raise BadInput(f"{where}: {exc.message}") from None
        if deleted:
            self.deleted += 1
        else:
            self.documents += 1
            self.bytes += row.size
        self._rows.append(row)
        self._pending += row.size
        if len(self._rows) >= PAGE_ROWS or self._pending >= PAGE_BYTES:
            await self._flush()

    def _row(self, line: Any, where: str, deleted: bool) -> _Row:
        if not isinstance(line, dict):
            raise BadInput("it is not an object")
        key = line.get("key")
        if not isinstance(key, str):
            raise BadInput("key must be a string")
        version = whole(line.get("version"), "version", 1)
        if version > self.space.last_seq:
            raise BadInput(f"version {version} is past the namespace's last_seq")
        created = seconds(line.get("created"), "created")
        name = self.space.name
        if deleted:
            gone = self.store.prepare(name, Delete(key))
            updated = seconds(line.get("deleted"), "deleted")
            return _Row(
                where, key, gone.key_hash, gone.sealed_key, None, 0, version, created, updated, ()
            )
        updated = seconds(line.get("updated"), "updated")
        body = line.get("body")
        if not isinstance(body, dict):
            raise BadInput("body must be a JSON object")
        text = line.get("text")
        if text is None:
            raw = encode_body(body, "the body")
        elif not isinstance(text, str):
            raise BadInput("text, if there, is the document as a client wrote it: a string")
        else:
            try:
                raw = text.encode("utf-8")
            except UnicodeEncodeError:
                raise BadInput("text is not valid UTF-8") from None
        op = self.store.prepare(name, Put(key, raw))
        if msgspec.json.decode(raw) != body:  # NaN, or a text that is another document
            what = (
                "body holds what JSON cannot (NaN, Infinity)"
                if text is None
                else "text is not body"
            )
            raise BadInput(f"{what}: it is not the document that was exported")
        assert op.body is not None
        return _Row(
            where,
            key,
            op.key_hash,
            op.sealed_key,
            op.body,
            op.size,
            version,
            created,
            updated,
            op.folders,
        )

    async def _flush(self) -> None:
        rows, self._rows, self._pending = self._rows, [], 0
        if rows:
            await self.store.db.write(partial(_insert, namespace=self.space.name, rows=rows))

    async def finish(self) -> None:
        """The namespace's counters, once its lines agree with them."""
        await self._flush()
        space = self.space
        found = (self.documents, self.bytes, self.deleted)
        if found != (space.documents, space.bytes, space.deleted):
            raise BadInput(
                f"{self.listed_in} gives {space.name} {space.documents} documents of "
                f"{space.bytes:,} bytes and {space.deleted} deletions; the export holds "
                f"{found[0]} of {found[1]:,} bytes and {found[2]}: it is damaged"
            )
        await self.store.db.write(partial(_counters, space=space))
        self.store.feed.changed(space.name)


def _insert(conn: sqlite3.Connection, namespace: str, rows: list[_Row]) -> None:
    for row in rows:
        try:
            cursor = conn.execute(
                "INSERT INTO storage_documents "
                "(namespace, key_hash, key, body, size, version, created, updated) "
                "VALUES (?,?,?,?,?,?,?,?)",
                (
                    namespace,
                    row.key_hash,
                    row.sealed_key,
                    row.body,
                    row.size,
                    row.version,
                    row.created,
                    row.updated,
                ),
            )
        except sqlite3.IntegrityError:
            raise BadInput(f"{row.where}: the key {row.key[:80]!r} is listed twice") from None
        conn.executemany(
            "INSERT INTO storage_folders (folder, document) VALUES (?, ?)",
            [(folder, cursor.lastrowid) for folder in row.folders],
        )


def _counters(conn: sqlite3.Connection, space: _Space) -> None:
    twice = conn.execute(
        "SELECT version FROM storage_documents WHERE namespace = ? "
        "GROUP BY version HAVING count(*) > 1 LIMIT 1",
        (space.name,),
    ).fetchone()
    if twice is not None:
        raise BadInput(
            f"version {twice[0]} of the namespace {space.name} is given to two documents: "
            "the export is damaged"
        )
    conn.execute(
        "INSERT INTO storage_namespaces (name, seq, documents, bytes, forgotten) "
        "VALUES (?,?,?,?,?)",
        (space.name, space.last_seq, space.documents, space.bytes, space.forgotten),
    )
