"""The file tree's rows: the schema, what a file or folder looks like to clients, and one write
transaction's view of the tree (on the writer's thread).

A node is a file or a folder under a parent. Its name is sealed, and found by a keyed hash of
(parent, name), so equal names in different folders look different on disk. A file points at
a blob (see ``_blobs``); copies share blobs, and a blob goes when no node refers to it. Deleting
moves a node, with everything under it, to the trash: its rows stay, marked with the time and
the trash item (the top node) they belong to, until restored or purged.
"""

from __future__ import annotations

import functools
import mimetypes
import sqlite3
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from twin import Conflict, QuotaExceeded, TooLarge
from twin.settings import human_size

from ._blobs import Blob
from ._paths import check_name, join, split

if TYPE_CHECKING:
    from ._store import FileStore

ROOT = 1
MAX_COPY = 100_000  # nodes one copy may create

_NOW = "(julianday('now') - 2440587.5) * 86400.0"
MIGRATIONS_SQL = f"""
CREATE TABLE files_blobs (
    id INTEGER PRIMARY KEY,
    token BLOB NOT NULL UNIQUE,
    size INTEGER NOT NULL,
    cipher INTEGER NOT NULL,
    inline BLOB,
    created REAL NOT NULL
);
CREATE TABLE files_nodes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    parent INTEGER,
    name_hash BLOB NOT NULL,
    name BLOB NOT NULL,
    folder INTEGER NOT NULL,
    blob INTEGER REFERENCES files_blobs (id),
    size INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    modified REAL NOT NULL,
    trashed REAL,
    trash_root INTEGER,
    origin BLOB
);
CREATE UNIQUE INDEX files_nodes_by_name ON files_nodes (parent, name_hash) WHERE trashed IS NULL;
CREATE INDEX files_nodes_by_parent ON files_nodes (parent);
CREATE INDEX files_nodes_by_blob ON files_nodes (blob);
CREATE INDEX files_nodes_by_trash ON files_nodes (trash_root) WHERE trash_root IS NOT NULL;
CREATE TABLE files_properties (
    node INTEGER NOT NULL REFERENCES files_nodes (id) ON DELETE CASCADE,
    name_hash BLOB NOT NULL,
    name BLOB NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (node, name_hash)
) WITHOUT ROWID;
CREATE TABLE files_usage (id INTEGER PRIMARY KEY CHECK (id = 1), bytes INTEGER NOT NULL);
INSERT INTO files_usage VALUES (1, 0);
INSERT INTO files_nodes (id, parent, name_hash, name, folder, created, modified)
    VALUES ({ROOT}, NULL, x'', x'', 1, {_NOW}, {_NOW});
"""

NODE_QUERY = (
    "SELECT n.id, n.folder, n.size, n.created, n.modified, b.token, b.cipher, "
    "b.inline IS NOT NULL AS small, n.blob, b.inline, b.digests FROM files_nodes n "
    "LEFT JOIN files_blobs b ON b.id = n.blob "
)


class AlreadyExists(Conflict):
    """Something already has that path (a MKCOL or a new folder)."""


@dataclass(frozen=True)
class Entry:
    """A file or folder as clients see it."""

    id: int
    path: str
    name: str
    kind: str  # "file" or "folder"
    size: int
    created: float
    modified: float
    etag: str
    media_type: str
    token: bytes = field(default=b"", repr=False, compare=False)
    cipher: int = field(default=0, repr=False, compare=False)
    small: bool = field(default=False, repr=False, compare=False)
    blob: int | None = field(default=None, repr=False, compare=False)
    inline: bytes | None = field(default=None, repr=False, compare=False)  # sealed small content
    digests: bytes | None = field(default=None, repr=False, compare=False)  # see FileStore.digests

    @property
    def is_folder(self) -> bool:
        return self.kind == "folder"


@dataclass(frozen=True)
class TrashItem:
    """Something deleted, kept until ``purge_at``: ``path`` is where it was."""

    id: int
    name: str
    path: str
    kind: str
    size: int
    trashed: float
    purge_at: float


@dataclass(frozen=True)
class Usage:
    used: int
    quota: int
    files: int
    folders: int
    trash_items: int
    trash_bytes: int
    disk_free: int


@functools.lru_cache(maxsize=512)
def _media_type_of(extension: str) -> str:
    guessed, _ = mimetypes.guess_type("x" + extension, strict=False)
    return guessed or "application/octet-stream"


def media_type(name: str) -> str:
    """The media type a file's name suggests (by its extension)."""
    dot = name.rfind(".")
    return _media_type_of(name[dot:].lower() if dot > 0 else "")


def entry_of(row: sqlite3.Row | tuple[Any, ...], path: str) -> Entry:
    node, folder, size, created, modified, token, cipher, small, blob, inline, digests = tuple(row)
    name = path.rpartition("/")[2]
    if folder:
        tag = f'"d{node}.{int(modified * 1000)}"'
        return Entry(node, path, name, "folder", 0, created, modified, tag, "")
    return Entry(
        node,
        path,
        name,
        "file",
        size,
        created,
        modified,
        f'"{token.hex()[:24]}"',
        media_type(name),
        token,
        cipher,
        bool(small),
        blob,
        inline,
        digests,
    )


def etag_matches(header: str, etag: str) -> bool:
    """Whether an If-Match or If-None-Match value ("*", or ETags separated by commas) names
    ``etag`` (weak comparison: W/ is ignored)."""
    if header.strip() == "*":
        return True
    plain = etag.removeprefix("W/")
    return any(tag.strip().removeprefix("W/") == plain for tag in header.split(","))


def matches(condition: str, entry: Entry | None) -> bool:
    return entry is not None and etag_matches(condition, entry.etag)


class Tree:
    """The tree as one write transaction sees it (runs on the writer's thread)."""

    def __init__(self, store: FileStore, conn: sqlite3.Connection) -> None:
        self.store = store
        self.conn = conn
        self.now = time.time()
        self.released: set[int] = set()  # blobs that may have lost their last node
        self.used: int | None = None  # the usage count, when this transaction changed it

    def node(self, path: str) -> Entry | None:
        return self.locate(path)[1]

    def locate(self, path: str) -> tuple[int | None, Entry | None]:
        """The id of the folder ``path`` would be in (None: there is no such folder), and
        what is at ``path``, in one walk from the root."""
        if not path:
            row = self.conn.execute(NODE_QUERY + "WHERE n.id = ?", (ROOT,)).fetchone()
            return None, entry_of(row, "")
        parent = ROOT
        parts = path.split("/")
        for depth, name in enumerate(parts):
            row = self.conn.execute(
                NODE_QUERY + "WHERE n.parent = ? AND n.name_hash = ? AND n.trashed IS NULL",
                (parent, self.store.name_hash(parent, name)),
            ).fetchone()
            if row is None:
                return (parent if depth == len(parts) - 1 else None), None
            if depth < len(parts) - 1 and not row[1]:
                return None, None  # a file where a folder should be
            if depth < len(parts) - 1:
                parent = row[0]
        return parent, entry_of(row, path)

    def folder(self, path: str, *, create: bool = False) -> int:
        """The id of the folder at ``path``; Conflict when it is missing or a file."""
        found = self.node(path)
        if found is None and create and path:
            parent_path, name = split(path)
            return self.insert(self.folder(parent_path, create=True), name, folder=True)
        if found is None:
            raise Conflict(f"there is no folder {path!r}: create it first")
        if not found.is_folder:
            raise Conflict(f"{path!r} is a file, not a folder")
        return found.id

    def insert(
        self,
        parent: int,
        name: str,
        *,
        folder: bool,
        blob: int | None = None,
        size: int = 0,
        modified: float | None = None,
    ) -> int:
        name_hash = self.store.name_hash(parent, name)
        cursor = self.conn.execute(
            "INSERT INTO files_nodes (parent, name_hash, name, folder, blob, size, created, "
            "modified) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                parent,
                name_hash,
                self.store.seal_name(name, name_hash),
                int(folder),
                blob,
                size,
                self.now,
                self.now if modified is None else modified,
            ),
        )
        self.touch(parent)
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def touch(self, folder: int) -> None:
        self.conn.execute("UPDATE files_nodes SET modified = ? WHERE id = ?", (self.now, folder))

    def add_blob(self, blob: Blob) -> int:
        after = self.used = self.conn.execute(
            "UPDATE files_usage SET bytes = bytes + ? RETURNING bytes", (blob.size,)
        ).fetchone()[0]
        # Another upload may have taken the room meanwhile (a refusal rolls the count back too).
        # Without a quota the disk is the limit, and the content is on it already.
        room = self.store.room(after - blob.size)
        if self.store.quota and blob.size > room:
            raise QuotaExceeded(
                f"this upload needs {human_size(blob.size)}, but only "
                f"{human_size(max(room, 0))} is left in the twin's files: delete files or "
                "empty the trash, or raise --files-quota"
            )
        cursor = self.conn.execute(
            "INSERT INTO files_blobs (token, size, cipher, inline, digests, created) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (blob.token, blob.size, blob.cipher, blob.inline, blob.digests, self.now),
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def trash(self, entry: Entry) -> TrashItem:
        """Move a node and everything under it to the trash, as one trash item."""
        self.conn.execute(
            "WITH RECURSIVE below(id) AS (SELECT id FROM files_nodes WHERE parent = ? AND "
            "trashed IS NULL UNION ALL SELECT n.id FROM files_nodes n JOIN below ON "
            "n.parent = below.id WHERE n.trashed IS NULL) "
            "UPDATE files_nodes SET trashed = ?, trash_root = ? WHERE id IN below",
            (entry.id, self.now, entry.id),
        )
        self.conn.execute(
            "UPDATE files_nodes SET trashed = ?, trash_root = id, origin = ? WHERE id = ?",
            (self.now, self.store.seal_origin(entry.path, entry.id), entry.id),
        )
        parent = self.conn.execute(
            "SELECT parent FROM files_nodes WHERE id = ?", (entry.id,)
        ).fetchone()[0]
        self.touch(parent)
        self.store.structure_changed()
        size = self.conn.execute(
            "SELECT coalesce(sum(size), 0) FROM files_nodes WHERE trash_root = ?", (entry.id,)
        ).fetchone()[0]
        return TrashItem(
            entry.id,
            entry.name,
            entry.path,
            entry.kind,
            size,
            self.now,
            self.now + self.store.trash_seconds,
        )

    def drop_blob_ref(self, blob: int | None) -> None:
        if blob is not None:
            self.released.add(blob)

    def release(self) -> list[bytes]:
        """Forget blobs no node refers to any more; their files' tokens, to delete after."""
        gone = []
        for blob in self.released:
            if self.conn.execute("SELECT 1 FROM files_nodes WHERE blob = ?", (blob,)).fetchone():
                continue
            row = self.conn.execute(
                "DELETE FROM files_blobs WHERE id = ? RETURNING token, size, inline IS NULL",
                (blob,),
            ).fetchone()
            if row is None:
                continue
            self.used = self.conn.execute(
                "UPDATE files_usage SET bytes = bytes - ? RETURNING bytes", (row[1],)
            ).fetchone()[0]
            if row[2]:
                gone.append(row[0])
        return gone

    def purge(self, item: int) -> None:
        rows = self.conn.execute(
            "DELETE FROM files_nodes WHERE trash_root = ? RETURNING blob", (item,)
        ).fetchall()
        for (blob,) in rows:
            self.drop_blob_ref(blob)

    def subtree(self, top: int) -> list[sqlite3.Row]:
        """Every live node under ``top`` (parents before children), for a copy."""
        rows = self.conn.execute(
            "WITH RECURSIVE below(id, depth) AS (SELECT id, 0 FROM files_nodes WHERE parent = ? "
            "AND trashed IS NULL UNION ALL SELECT n.id, depth + 1 FROM files_nodes n JOIN below "
            "ON n.parent = below.id WHERE n.trashed IS NULL LIMIT ?) "
            "SELECT n.id, n.parent, n.name_hash, n.name, n.folder, n.blob, n.size, n.created, "
            "n.modified FROM below JOIN files_nodes n ON n.id = below.id ORDER BY below.depth",
            (top, MAX_COPY + 1),
        ).fetchall()
        if len(rows) > MAX_COPY:
            raise TooLarge(f"a copy makes at most {MAX_COPY} files and folders at once")
        return rows

    def copy_properties(self, source: int, target: int) -> None:
        box, was, now = self.store.box, node_key(source), node_key(target)
        for name_hash, name, value in self.conn.execute(
            "SELECT name_hash, name, value FROM files_properties WHERE node = ?", (source,)
        ).fetchall():
            name = box.seal(
                box.open(name, context=b"property" + name_hash + was),
                context=b"property" + name_hash + now,
            )
            value = box.seal(
                box.open(value, context=b"value" + name_hash + was),
                context=b"value" + name_hash + now,
            )
            self.conn.execute(
                "INSERT INTO files_properties VALUES (?, ?, ?, ?)", (target, name_hash, name, value)
            )


def node_key(node: int) -> bytes:
    return node.to_bytes(8, "big")


def free_name(tree: Tree, parent_path: str, name: str) -> str:
    if tree.node(join(parent_path, name)) is None:
        return name
    stem, dot, ext = name.rpartition(".")
    if not stem:
        stem, dot, ext = name, "", ""
    for n in range(1, 1000):
        label = " (restored)" if n == 1 else f" (restored {n})"
        candidate = check_name(f"{stem}{label}{dot}{ext}"[-255:])
        if tree.node(join(parent_path, candidate)) is None:
            return candidate
    raise Conflict(f"{name!r} cannot be restored: too many files have its name")


def copy_node(tree: Tree, entry: Entry, folder: int, name: str, recursive: bool) -> None:
    conn = tree.conn
    row = conn.execute("SELECT blob, size FROM files_nodes WHERE id = ?", (entry.id,)).fetchone()
    top = tree.insert(folder, name, folder=entry.is_folder, blob=row[0], size=row[1])
    tree.copy_properties(entry.id, top)
    if not (entry.is_folder and recursive):
        return
    mapping = {entry.id: top}
    for node in tree.subtree(entry.id):
        child_name = tree.store.box.open_text(node["name"], context=b"name" + node["name_hash"])
        made = tree.insert(
            mapping[node["parent"]],
            child_name,
            folder=bool(node["folder"]),
            blob=node["blob"],
            size=node["size"],
        )
        mapping[node["id"]] = made
        tree.copy_properties(node["id"], made)
