"""Documents in namespaces, encrypted at rest: reads, conditional writes, listings and changes.

One row per key holds its latest version; a deleted document stays as a row without a body (a
tombstone) for ``TOMBSTONE_DAYS``, so the change feed can tell clients it went. Keys are found
by a keyed hash; listings go through one row per folder a key is in, so a page costs the same
however large the namespace is.
"""

from __future__ import annotations

import asyncio
import hmac
import sqlite3
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

import msgspec

from twin import BadInput, Gone, NotFound, PreconditionFailed, QuotaExceeded
from twin.db import Database
from twin.settings import human_size
from twin.vault import Box

from ._names import (
    check_body,
    check_key,
    check_namespace,
    check_prefix,
    encode_body,
    folders,
)

TOMBSTONE_DAYS = 30
MAX_BATCH = 100
MAX_PAGE = 1000
PAGE_BYTES = 8 * 1024 * 1024  # a page of bodies ends after this much
RECENT_BYTES = 4 * 1024 * 1024  # decrypted documents kept for reads (see Recent)

Condition = int | Literal["*"] | frozenset[int] | None


@dataclass(frozen=True)
class Document:
    """A stored document: its key, version, last change time and body as written (JSON)."""

    key: str
    version: int
    updated: float
    raw: bytes | None = None  # None when it was listed without bodies

    @property
    def body(self) -> dict[str, Any]:
        """The body, decoded."""
        assert self.raw is not None, "listed without bodies"
        value: dict[str, Any] = msgspec.json.decode(self.raw)
        return value

    @property
    def etag(self) -> str:
        return etag(self.version)


@dataclass(frozen=True)
class Put:
    """Create or replace ``key``; ``body`` is a dict or the JSON bytes of one."""

    key: str
    body: dict[str, Any] | bytes
    if_match: Condition = None
    if_none_match: bool = False


@dataclass(frozen=True)
class Delete:
    """Delete ``key`` (404 if there is none)."""

    key: str
    if_match: Condition = None


@dataclass(frozen=True)
class Written:
    """What one write did: ``created`` is true when the key held no document before."""

    op: str
    key: str
    version: int
    updated: float
    created: bool = False


@dataclass(frozen=True)
class Page:
    """One page of a listing; pass ``cursor`` back for the next (None: this was the last)."""

    items: list[Document]
    cursor: str | None


@dataclass(frozen=True)
class Change:
    """The latest change of one key: ``op`` is "put" or "delete"; ``raw`` the body if asked."""

    seq: int
    key: str
    op: str
    updated: float
    raw: bytes | None = None


@dataclass(frozen=True)
class Changes:
    """Changes after a ``since``, and the ``last_seq`` to ask from next."""

    changes: list[Change]
    last_seq: int
    more: bool


@dataclass(frozen=True)
class Usage:
    namespace: str
    documents: int
    bytes: int
    quota: int
    last_seq: int


def etag(version: int) -> str:
    return f'"{version}"'


def _condition(value: Condition) -> frozenset[int] | Literal["*"] | None:
    if value is None or value == "*":
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return frozenset({value})
    if isinstance(value, frozenset):
        return value
    raise BadInput(f"if_match must be a version number or '*', not {value!r}")


@dataclass(slots=True)  # not frozen: one is made per write, and frozen ones are slower to make
class _Op:
    """A write, checked and sealed, ready for the writer's thread."""

    op: str
    key: str
    key_hash: bytes
    sealed_key: bytes
    folders: tuple[bytes, ...]
    body: bytes | None
    size: int
    if_match: frozenset[int] | Literal["*"] | None
    if_none_match: bool
    raw: bytes | None = None  # the body in clear, for Recent once it is committed


class Feed:
    """Wakes whoever follows a namespace once a change to it is committed."""

    def __init__(self) -> None:
        self._next: dict[str, asyncio.Event] = {}

    def next_change(self, namespace: str) -> asyncio.Event:
        """An event set by the next change in ``namespace``; take it before reading."""
        return self._next.setdefault(namespace, asyncio.Event())

    def changed(self, namespace: str) -> None:
        event = self._next.pop(namespace, None)
        if event is not None:
            event.set()


class Recent:
    """Documents read or written lately, decrypted, within a byte budget: reading one again
    needs neither the database nor the key. Every write of this process passes through
    :meth:`written` once it is committed, so what is kept is never older than the database."""

    def __init__(self, budget: int = RECENT_BYTES) -> None:
        self.budget = budget
        self.writes = 0  # a read that began before a write may not keep what it read
        self._items: OrderedDict[tuple[str, str], Document] = OrderedDict()
        self._size = 0

    def get(self, namespace: str, key: str) -> Document | None:
        found = self._items.get((namespace, key))
        if found is not None:
            self._items.move_to_end((namespace, key))
        return found

    def keep(self, namespace: str, document: Document, seen: int) -> None:
        if seen == self.writes:
            self._put(namespace, document)

    def written(self, namespace: str, ops: Sequence[_Op], results: Sequence[Written]) -> None:
        self.writes += 1
        for op, result in zip(ops, results, strict=True):
            self._drop((namespace, op.key))
            if op.raw is not None:
                self._put(namespace, Document(op.key, result.version, result.updated, op.raw))

    def _put(self, namespace: str, document: Document) -> None:
        size = len(document.raw or b"")
        if size > self.budget // 64:  # large documents would push out many small ones
            return
        self._drop((namespace, document.key))
        self._items[(namespace, document.key)] = document
        self._size += size
        while self._size > self.budget:
            _, old = self._items.popitem(last=False)
            self._size -= len(old.raw or b"")

    def _drop(self, name: tuple[str, str]) -> None:
        old = self._items.pop(name, None)
        if old is not None:
            self._size -= len(old.raw or b"")


class Store:
    """Every namespace's documents in the twin's database; ``namespace(name)`` to use one."""

    def __init__(self, db: Database, box: Box, quota: int) -> None:
        self.db = db
        self.box = box
        self.quota = quota
        self.feed = Feed()
        self.recent = Recent()

    def namespace(self, name: str) -> Namespace:
        return Namespace(self, check_namespace(name))

    async def usages(self) -> list[Usage]:
        """Every namespace that was ever written to, with its usage, in one query."""
        rows = await self.db.fetchall(
            "SELECT name, seq, documents, bytes FROM storage_namespaces ORDER BY name"
        )
        return [_usage(row, self.quota) for row in rows]

    async def purge(self, older_than: float | None = None) -> int:
        """Forget tombstones older than ``older_than`` (default: ``TOMBSTONE_DAYS`` ago)."""
        cutoff = time.time() - TOMBSTONE_DAYS * 86400 if older_than is None else older_than

        def purge(conn: sqlite3.Connection) -> int:
            rows = conn.execute(
                "SELECT namespace, max(version) AS last, count(*) AS n FROM storage_documents "
                "WHERE body IS NULL AND updated < ? GROUP BY namespace",
                (cutoff,),
            ).fetchall()
            for row in rows:
                conn.execute(
                    "UPDATE storage_namespaces SET forgotten = max(forgotten, ?) WHERE name = ?",
                    (row["last"], row["namespace"]),
                )
            conn.execute(
                "DELETE FROM storage_documents WHERE body IS NULL AND updated < ?", (cutoff,)
            )
            return sum(row["n"] for row in rows)

        return await self.db.write(purge)

    # hashing and sealing: keys and bodies never reach the database in clear

    def key_hash(self, namespace: str, key: str) -> bytes:
        return bytes.fromhex(self.box.blind(f"key\0{namespace}\0{key}"))

    def folder_hash(self, namespace: str, folder: str) -> bytes:
        return bytes.fromhex(self.box.blind(f"folder\0{namespace}\0{folder}"))

    def open_key(self, sealed: bytes, key_hash: bytes) -> str:
        return self.box.open_text(sealed, context=b"key" + key_hash)

    def open_body(self, sealed: bytes, key_hash: bytes) -> bytes:
        return self.box.open(sealed, context=b"body" + key_hash)

    def cursor(self, namespace: str, prefix: str, after: int) -> str:
        mac = self.box.blind(f"cursor\0{namespace}\0{prefix}\0{after}")[:16]
        return f"{after}.{mac}"

    def after(self, namespace: str, prefix: str, cursor: str) -> int:
        number, _, mac = cursor.partition(".")
        if number.isascii() and number.isdigit() and len(number) < 19:
            expected = self.cursor(namespace, prefix, int(number))
            if hmac.compare_digest(expected.encode(), cursor.encode()):
                return int(number)
        raise BadInput(
            "the cursor is not one this listing gave out (changed, or from another namespace "
            "or prefix): list again without it"
        )

    def prepare(self, namespace: str, op: Put | Delete) -> _Op:
        key = check_key(op.key)
        key_hash = self.key_hash(namespace, key)
        sealed_key = self.box.seal(key, context=b"key" + key_hash)
        if isinstance(op, Delete):
            return _Op(
                "delete", key, key_hash, sealed_key, (), None, 0, _condition(op.if_match), False
            )
        if isinstance(op.body, (bytes, bytearray, memoryview)):
            raw = bytes(op.body)
            check_body(raw)
        else:
            raw = encode_body(op.body)
        return _Op(
            "put",
            key,
            key_hash,
            sealed_key,
            tuple(self.folder_hash(namespace, f) for f in folders(key)),
            self.box.seal(raw, context=b"body" + key_hash),
            len(key.encode()) + len(raw),
            _condition(op.if_match),
            op.if_none_match,
            raw,
        )


class Namespace:
    """One namespace's documents: what a plugin uses, and what ``/api/storage/`` serves."""

    def __init__(self, store: Store, name: str) -> None:
        self.store = store
        self.name = name

    def __repr__(self) -> str:
        return f"<Namespace {self.name!r}>"

    async def get(self, key: str) -> Document | None:
        check_key(key)
        store = self.store
        recent = store.recent.get(self.name, key)
        if recent is not None:
            return recent
        seen = store.recent.writes
        key_hash = store.key_hash(self.name, key)
        row = await store.db.lookup(
            "SELECT version, updated, body FROM storage_documents "
            "WHERE namespace = ? AND key_hash = ? AND body IS NOT NULL",
            (self.name, key_hash),
        )
        if row is None:
            return None
        document = Document(
            key, row["version"], row["updated"], store.open_body(row["body"], key_hash)
        )
        store.recent.keep(self.name, document, seen)
        return document

    async def put(
        self,
        key: str,
        body: dict[str, Any] | bytes,
        *,
        if_match: Condition = None,
        if_none_match: bool = False,
    ) -> Written:
        """Create or replace; ``if_none_match`` only creates, ``if_match`` only replaces that
        version (``"*"``: any)."""
        return (await self.batch([Put(key, body, if_match, if_none_match)]))[0]

    async def delete(self, key: str, *, if_match: Condition = None) -> Written:
        return (await self.batch([Delete(key, if_match)]))[0]

    async def batch(self, ops: Sequence[Put | Delete]) -> list[Written]:
        """Every write in one transaction: all of them, or (on any refusal) none."""
        if not ops:
            raise BadInput("a batch needs at least one operation")
        if len(ops) > MAX_BATCH:
            raise BadInput(f"a batch holds at most {MAX_BATCH} operations, not {len(ops)}")
        prepared = [self._prepare(op, index, len(ops)) for index, op in enumerate(ops)]
        keys = [op.key for op in prepared]
        if len(set(keys)) != len(keys):
            twice = next(k for k in keys if keys.count(k) > 1)
            raise BadInput(f"the batch names {twice!r} twice: one operation per key")
        name, quota, many = self.name, self.store.quota, len(ops) > 1
        work = asyncio.ensure_future(
            self.store.db.write(lambda conn: _apply(conn, name, prepared, quota, many))
        )
        # once committed, the documents kept for reads and the live streams must learn of it,
        # even if whoever asked for the write has gone meanwhile
        work.add_done_callback(partial(self._committed, prepared))
        return await asyncio.shield(work)

    def _committed(self, prepared: list[_Op], work: asyncio.Future[list[Written]]) -> None:
        if work.cancelled() or work.exception() is not None:
            return
        self.store.recent.written(self.name, prepared, work.result())
        self.store.feed.changed(self.name)

    def _prepare(self, op: Put | Delete, index: int, count: int) -> _Op:
        if not isinstance(op, (Put, Delete)):
            raise BadInput(f"a batch holds Put and Delete operations, not {type(op).__name__}")
        try:
            return self.store.prepare(self.name, op)
        except BadInput as exc:
            if count == 1:
                raise
            exc.message = f"operation {index + 1} ({op.key[:80]}): {exc.message}"
            exc.args = (exc.message,)
            raise

    async def list(
        self, prefix: str = "", *, limit: int = 100, cursor: str | None = None, bodies: bool = False
    ) -> Page:
        """Documents under ``prefix`` (a folder, or "" for all), in the order they were first
        created; stable across pages."""
        check_prefix(prefix)
        if not 1 <= limit <= MAX_PAGE:
            raise BadInput(f"limit must be 1 to {MAX_PAGE}, not {limit}")
        store = self.store
        after = store.after(self.name, prefix, cursor) if cursor else 0
        body = "d.body" if bodies else "NULL"
        rows = await store.db.fetchall(
            f"SELECT d.id, d.key_hash, d.key, d.version, d.updated, {body} AS body "
            "FROM storage_folders f JOIN storage_documents d ON d.id = f.document "
            "WHERE f.folder = ? AND f.document > ? ORDER BY f.document LIMIT ?",
            (store.folder_hash(self.name, prefix), after, limit + 1),
        )
        items: list[Document] = []
        size = 0
        for row in rows[:limit]:
            raw = store.open_body(row["body"], row["key_hash"]) if bodies else None
            key = store.open_key(row["key"], row["key_hash"])
            items.append(Document(key, row["version"], row["updated"], raw))
            size += len(raw or b"")
            if size >= PAGE_BYTES:
                break
        more = len(items) < len(rows)
        last = rows[len(items) - 1]["id"] if items else after
        return Page(items, store.cursor(self.name, prefix, last) if more else None)

    async def changes(self, since: int = 0, *, limit: int = 1000, bodies: bool = False) -> Changes:
        """The latest change of each key changed after ``since``, in order."""
        if since < 0:
            raise BadInput(f"since must be 0 or more, not {since}")
        if not 1 <= limit <= MAX_PAGE:
            raise BadInput(f"limit must be 1 to {MAX_PAGE}, not {limit}")
        name = self.name
        body = "body" if bodies else "NULL"

        def read(conn: sqlite3.Connection) -> tuple[sqlite3.Row | None, list[sqlite3.Row]]:
            space = conn.execute(
                "SELECT seq, forgotten FROM storage_namespaces WHERE name = ?", (name,)
            ).fetchone()
            rows = conn.execute(
                f"SELECT key_hash, key, version, updated, {body} AS body, body IS NULL AS gone "
                "FROM storage_documents WHERE namespace = ? AND version > ? "
                + ("AND body IS NOT NULL " if since == 0 else "")
                + "ORDER BY version LIMIT ?",
                (name, since, limit + 1),
            ).fetchall()
            return space, rows

        space, rows = await self.store.db.read(read)
        last_seq = space["seq"] if space else 0
        if since > last_seq:
            raise BadInput(
                f"since={since} is ahead of this namespace's last change ({last_seq}): "
                "start again from since=0"
            )
        if since and space and since < space["forgotten"]:
            raise Gone(
                f"changes up to {space['forgotten']} are no longer kept (deletions are "
                f"remembered for {TOMBSTONE_DAYS} days): start again from since=0"
            )
        store = self.store
        changes: list[Change] = []
        size = 0
        for row in rows[:limit]:
            key_hash = row["key_hash"]
            raw = store.open_body(row["body"], key_hash) if bodies and not row["gone"] else None
            key = store.open_key(row["key"], key_hash)
            op = "delete" if row["gone"] else "put"
            changes.append(Change(row["version"], key, op, row["updated"], raw))
            size += len(raw or b"")
            if size >= PAGE_BYTES:
                break
        more = len(changes) < len(rows)
        return Changes(changes, changes[-1].seq if more else last_seq, more)

    async def usage(self) -> Usage:
        row = await self.store.db.fetchone(
            "SELECT seq, documents, bytes FROM storage_namespaces WHERE name = ?", (self.name,)
        )
        if row is None:
            return Usage(self.name, 0, 0, self.store.quota, 0)
        return _usage(row, self.store.quota, self.name)


def _usage(row: sqlite3.Row, quota: int, name: str | None = None) -> Usage:
    return Usage(name or row["name"], row["documents"], row["bytes"], quota, row["seq"])


def _refuse(label: str, why: str, version: int | None) -> PreconditionFailed:
    return PreconditionFailed(
        f"{label}: {why}; nothing was written", etag(version) if version is not None else None
    )


def _check(op: _Op, label: str, current: int | None) -> None:
    """Refuse ``op`` if its conditions do not hold for the current version (None: no document)."""
    if op.if_none_match and current is not None:
        raise _refuse(label, f"it already exists (version {current}; If-None-Match)", current)
    if op.if_match == "*" and current is None:
        raise _refuse(label, "there is no such document (If-Match: *)", None)
    if isinstance(op.if_match, frozenset) and current not in op.if_match:
        wanted = ", ".join(str(v) for v in sorted(op.if_match))
        why = f"its version is {current}, not {wanted}" if current else "it does not exist"
        raise _refuse(label, f"{why} (If-Match): read it again", current)
    if op.op == "delete" and current is None:
        raise NotFound(f"{label}: there is no such document to delete")


def _apply(
    conn: sqlite3.Connection, namespace: str, ops: Iterable[_Op], quota: int, many: bool
) -> list[Written]:
    """Check and apply ``ops`` on the writer's thread; an exception undoes all of them."""
    space = conn.execute(
        "SELECT seq, documents, bytes FROM storage_namespaces WHERE name = ?", (namespace,)
    ).fetchone()
    if space is None:
        conn.execute("INSERT INTO storage_namespaces (name) VALUES (?)", (namespace,))
        seq = documents = used = 0
    else:
        seq, documents, used = space["seq"], space["documents"], space["bytes"]
    before = used
    now = time.time()
    results = []
    for index, op in enumerate(ops, start=1):
        label = f"operation {index} ({op.key[:80]})" if many else op.key[:80]
        row = conn.execute(
            "SELECT id, version, size, body IS NULL AS gone FROM storage_documents "
            "WHERE namespace = ? AND key_hash = ?",
            (namespace, op.key_hash),
        ).fetchone()
        current = row["version"] if row is not None and not row["gone"] else None
        _check(op, label, current)
        seq += 1
        if op.op == "delete":
            conn.execute(
                "UPDATE storage_documents SET body = NULL, size = 0, version = ?, updated = ? "
                "WHERE id = ?",
                (seq, now, row["id"]),
            )
            conn.execute("DELETE FROM storage_folders WHERE document = ?", (row["id"],))
            documents -= 1
            used -= row["size"]
            results.append(Written("delete", op.key, seq, now))
            continue
        if current is not None:
            conn.execute(
                "UPDATE storage_documents SET key = ?, body = ?, size = ?, version = ?, "
                "updated = ? WHERE id = ?",
                (op.sealed_key, op.body, op.size, seq, now, row["id"]),
            )
            used += op.size - row["size"]
        else:
            if row is None:
                doc_id = conn.execute(
                    "INSERT INTO storage_documents "
                    "(namespace, key_hash, key, body, size, version, created, updated) "
                    "VALUES (?,?,?,?,?,?,?,?)",
                    (namespace, op.key_hash, op.sealed_key, op.body, op.size, seq, now, now),
                ).lastrowid
            else:  # a tombstone comes back to life, in its old place in listings
                doc_id = row["id"]
                conn.execute(
                    "UPDATE storage_documents SET key = ?, body = ?, size = ?, version = ?, "
                    "created = ?, updated = ? WHERE id = ?",
                    (op.sealed_key, op.body, op.size, seq, now, now, doc_id),
                )
            conn.executemany(
                "INSERT INTO storage_folders (folder, document) VALUES (?, ?)",
                [(folder, doc_id) for folder in op.folders],
            )
            documents += 1
            used += op.size
        results.append(Written("put", op.key, seq, now, created=current is None))
    if used > quota and used > before:
        raise QuotaExceeded(
            f"the namespace {namespace} would hold {used:,} bytes; its quota is {quota:,} bytes "
            f"({human_size(quota)}): delete documents, or ask the twin's operator to raise "
            "--storage-quota"
        )
    conn.execute(
        "UPDATE storage_namespaces SET seq = ?, documents = ?, bytes = ? WHERE name = ?",
        (seq, documents, used, namespace),
    )
    return results
