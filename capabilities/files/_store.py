"""The file store: reads, streamed writes, folders, moves and copies, the trash, dead properties,
usage and the quota over the tree (``_tree``) and the contents (``_blobs``); every change is
one transaction of the twin's single writer."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import time
from collections import OrderedDict
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping
from pathlib import Path
from typing import Any

from twin import BadInput, Conflict, InUse, NotFound, PreconditionFailed, TooLarge
from twin.db import Database
from twin.vault import Box

from ._blobs import Blob, Blobs, stored_size
from ._paths import check_path, join, split
from ._tree import (
    NODE_QUERY,
    ROOT,
    AlreadyExists,
    Entry,
    TrashItem,
    Tree,
    Usage,
    copy_node,
    entry_of,
    free_name,
    matches,
    node_key,
)

DISK_RESERVE = 256 * 1024 * 1024  # without a quota, this much of the disk stays free
FOLDER_CACHE = 10_000
MAX_PROPERTIES = 256
MAX_PROPERTY = 64 * 1024

RECENT_BYTES = 4 * 1024 * 1024  # small files' decrypted content kept for reads (see Recent)
RECENT_ENTRIES = 4096

__all__ = ["AlreadyExists", "Entry", "FileStore", "TrashItem", "Usage", "data_root"]


class Recent:
    """Files read or written lately: their entries by path, and small contents decrypted by blob
    (a blob's content never changes). Every write of this process passes through here once
    committed, so a kept entry is never older than the database; a read that began before a
    write keeps nothing."""

    def __init__(self, budget: int = RECENT_BYTES) -> None:
        self.budget = budget
        self.writes = 0
        self._entries: OrderedDict[str, Entry] = OrderedDict()
        self._contents: OrderedDict[bytes, bytes] = OrderedDict()
        self._size = 0

    def entry(self, path: str) -> Entry | None:
        return self._entries.get(path)

    def content(self, token: bytes) -> bytes | None:
        return self._contents.get(token)

    def keep(self, entry: Entry, seen: int, content: bytes | None = None) -> None:
        if seen != self.writes:
            return
        self._entries[entry.path] = entry
        self._entries.move_to_end(entry.path)
        if len(self._entries) > RECENT_ENTRIES:
            self._entries.popitem(last=False)
        if content is not None and entry.token not in self._contents:
            self._contents[entry.token] = content
            self._size += len(content)
            while self._size > self.budget:
                _, old = self._contents.popitem(last=False)
                self._size -= len(old)

    def written(self, entry: Entry, content: bytes | None) -> None:
        """A write to ``entry.path`` was committed."""
        self.writes += 1
        self.keep(entry, self.writes, content)

    def changed(self) -> None:
        """Something moved, went or came back: no kept path can be trusted."""
        self.writes += 1
        self._entries.clear()


class FileStore:
    """Every file and folder of the twin; paths are as ``check_path`` accepts them."""

    def __init__(self, db: Database, box: Box, blobs: Blobs, quota: int, trash_days: float) -> None:
        self.db = db
        self.box = box
        self.blobs = blobs
        self.quota = quota  # 0: whatever the disk has free
        self.trash_seconds = trash_days * 86400
        self._writing: set[str] = set()
        self._folders: dict[str, int] = {}  # folder path -> node id, for reads
        self._generation = 0
        self._disk = (-2.0, 0)  # (when, free bytes) of the last look at the disk
        self._used: int | None = None  # bytes used as of the last commit, for checks up front
        self.recent = Recent()

    # names and paths, sealed

    def name_hash(self, parent: int, name: str) -> bytes:
        return bytes.fromhex(self.box.blind(f"name\0{parent}\0{name}"))

    def seal_name(self, name: str, name_hash: bytes) -> bytes:
        return self.box.seal(name, context=b"name" + name_hash)

    def seal_origin(self, path: str, node: int) -> bytes:
        return self.box.seal(path, context=b"origin" + node_key(node))

    def structure_changed(self) -> None:
        """A folder moved, went or came back: forget cached folder paths."""
        self._generation += 1
        self._folders.clear()

    def room(self, used: int) -> int:
        """Bytes a new blob may still take."""
        if self.quota:
            return self.quota - used
        now = time.monotonic()
        if now - self._disk[0] > 1:  # asked on every write: once a second is enough
            self._disk = (now, shutil.disk_usage(self.blobs.root.parent).free)
        return self._disk[1] - DISK_RESERVE

    # reads

    async def _lookup(self, parent: int, name: str) -> sqlite3.Row | None:
        return await self.db.lookup(
            NODE_QUERY + "WHERE n.parent = ? AND n.name_hash = ? AND n.trashed IS NULL",
            (parent, self.name_hash(parent, name)),
        )

    async def find(self, path: str) -> Entry | None:
        """The file or folder at ``path``, or None."""
        path = check_path(path)
        if not path:
            row = await self.db.lookup(NODE_QUERY + "WHERE n.id = ?", (ROOT,))
            assert row is not None
            return entry_of(row, "")
        kept = self.recent.entry(path)
        if kept is not None:
            return kept
        seen = self.recent.writes
        parent_path, name = split(path)
        parent = await self._folder_id(parent_path)
        if parent is None:
            return None
        row = await self._lookup(parent, name)
        if row is None:
            return None
        entry = entry_of(row, path)
        if not entry.is_folder:
            self.recent.keep(entry, seen)
        return entry

    async def _folder_id(self, path: str) -> int | None:
        if not path:
            return ROOT
        cached = self._folders.get(path)
        if cached is not None:
            return cached
        generation = self._generation
        parent = ROOT
        walked = ""
        for name in path.split("/"):
            walked = join(walked, name)
            known = self._folders.get(walked)
            if known is not None:
                parent = known
                continue
            row = await self._lookup(parent, name)
            if row is None or not row["folder"]:
                return None
            parent = row["id"]
            if generation == self._generation:
                if len(self._folders) >= FOLDER_CACHE:
                    self._folders.clear()
                self._folders[walked] = parent
        return parent

    async def stat(self, path: str) -> Entry:
        found = await self.find(path)
        if found is None:
            raise NotFound(f"there is no file or folder {check_path(path)!r}")
        return found

    async def children(self, path: str, *, limit: int = 10_000, after: int = 0) -> list[Entry]:
        """The entries in a folder, in the order they were made."""
        folder = await self.stat(path)
        if not folder.is_folder:
            raise Conflict(f"{folder.path!r} is a file, not a folder")
        rows = await self.db.fetchall(
            "SELECT n.id, n.folder, n.size, n.created, n.modified, b.token, b.cipher, "
            "b.inline IS NOT NULL, n.blob, NULL, b.digests, n.name, n.name_hash FROM files_nodes n "
            "LEFT JOIN files_blobs b "
            "ON b.id = n.blob WHERE n.parent = ? AND n.trashed IS NULL AND n.id > ? "
            "ORDER BY n.id LIMIT ?",
            (folder.id, after, limit),
        )
        return [
            entry_of(
                tuple(row)[:11],
                join(folder.path, self.box.open_text(row[11], context=b"name" + row[12])),
            )
            for row in rows
        ]

    async def walk(self, path: str, *, limit: int) -> list[Entry]:
        """The entry at ``path`` and everything under it, breadth first; 413 past ``limit``."""
        top = await self.stat(path)
        found, queue = [top], [top]
        while queue:
            folder = queue.pop(0)
            if not folder.is_folder:
                continue
            after = 0
            while True:
                page = await self.children(folder.path, after=after, limit=1000)
                found += page
                if len(found) > limit:
                    raise TooLarge(
                        f"{top.path or 'the root'} holds more than {limit} files and folders; "
                        "list it one level at a time (Depth: 1)"
                    )
                queue += [e for e in page if e.is_folder]
                if len(page) < 1000:
                    break
                after = page[-1].id
        return found

    async def read(
        self, entry: Entry, start: int = 0, end: int | None = None
    ) -> AsyncIterator[bytes]:
        """Bytes [start, end) of that version of a file, streamed."""
        end = entry.size if end is None else min(end, entry.size)
        kept = self.recent.content(entry.token) if entry.small else None
        if kept is not None:
            yield kept[start:end]
            return
        inline = entry.inline
        if entry.small and inline is None:
            row = await self.db.lookup(
                "SELECT inline FROM files_blobs WHERE token = ?", (entry.token,)
            )
            if row is None:
                raise NotFound(f"{entry.path!r} changed while it was read: read it again")
            inline = row[0]
        blob = Blob(entry.token, entry.size, entry.cipher, inline)
        if entry.small:
            seen = self.recent.writes
            content = self.blobs.open_inline(blob)
            self.recent.keep(entry, seen, content)
            yield content[start:end]
            return
        async for piece in self.blobs.read(blob, start, end):
            yield piece

    # writes

    async def mkdir(self, path: str, *, parents: bool = False) -> Entry:
        """A new folder; AlreadyExists when the path is taken."""
        path = check_path(path)
        if not path:
            raise AlreadyExists("the root folder always exists")
        parent_path, name = split(path)

        def make(conn: sqlite3.Connection) -> Entry:
            tree = Tree(self, conn)
            if tree.node(path) is not None:
                raise AlreadyExists(f"{path!r} already exists")
            tree.insert(tree.folder(parent_path, create=parents), name, folder=True)
            made = tree.node(path)
            assert made is not None
            return made

        return await self.db.write(make)

    async def write(
        self,
        path: str,
        body: AsyncIterable[bytes],
        *,
        length: int | None = None,
        if_match: str | None = None,
        if_none_match: bool = False,
        parents: bool = False,
        modified: float | None = None,
        digests: bool = False,
    ) -> tuple[Entry, bool]:
        """Store a file's content from a stream; (entry, created). The old content stays whole
        until the new one is complete and committed. ``modified`` keeps the time the file was
        changed where it came from (a sync client's), instead of now; ``digests`` keeps the
        content's MD5 and SHA-1 for clients that compare them (see :meth:`digests`)."""
        path = check_path(path)
        if modified is not None and not 0 <= modified < 2**33:
            raise BadInput(f"a modification time is seconds since 1970, not {modified!r}")
        if not path:
            raise Conflict("the root is a folder; a file needs a name")
        parent_path, name = split(path)
        if not parents and await self._folder_id(parent_path) is None:
            raise Conflict(f"there is no folder {parent_path!r} to put {name!r} in")
        if path in self._writing:
            raise InUse(f"{path!r} is being written by another request: try again when it is done")
        self._writing.add(path)
        try:
            if self._used is None:
                self._used = await self.db.fetchval("SELECT bytes FROM files_usage")
            room = self.room(self._used or 0)
            blob = await self.blobs.receive(body, length, room, digests=digests)

            def commit(conn: sqlite3.Connection) -> tuple[Entry, bool, list[bytes], int | None]:
                tree = Tree(self, conn)
                folder, old = tree.locate(path)
                if old is not None and old.is_folder:
                    raise Conflict(f"{path!r} is a folder")
                if if_none_match and old is not None:
                    raise PreconditionFailed(f"{path!r} already exists", old.etag)
                if if_match is not None and not matches(if_match, old):
                    raise PreconditionFailed(
                        f"{path!r} changed (or is gone) since that version was read",
                        old.etag if old else None,
                    )
                blob_id = tree.add_blob(blob)
                changed = tree.now if modified is None else modified
                if old is None:
                    if folder is None:
                        folder = tree.folder(parent_path, create=parents)
                    node = tree.insert(
                        folder, name, folder=False, blob=blob_id, size=blob.size, modified=changed
                    )
                    created = tree.now
                else:
                    conn.execute(
                        "UPDATE files_nodes SET blob = ?, size = ?, modified = ? WHERE id = ?",
                        (blob_id, blob.size, changed, old.id),
                    )
                    tree.drop_blob_ref(old.blob)
                    node, created = old.id, old.created
                row = (node, 0, blob.size, created, changed, blob.token, blob.cipher)
                made = entry_of(
                    (*row, blob.inline is not None, blob_id, blob.inline, blob.digests), path
                )
                gone = tree.release()
                return made, old is None, gone, tree.used

            try:
                entry, created, gone, self._used = await self.db.write(commit)
                self.recent.written(entry, blob.plain)
            except BaseException:
                await self.blobs.remove([blob.token] if blob.inline is None else [])
                raise
            finally:
                self.blobs.committed(blob.token)
            self.blobs.remove_soon(gone)
            return entry, created
        finally:
            self._writing.discard(path)

    async def _apply(self, change: Any) -> Any:
        """Run a tree change in one transaction, then delete the blob files it freed."""

        def run(conn: sqlite3.Connection) -> tuple[Any, list[bytes], int | None]:
            tree = Tree(self, conn)
            result = change(tree)
            return result, tree.release(), tree.used

        seen = self._generation
        try:
            result, gone, used = await self.db.write(run)
        finally:
            self.recent.changed()
            # The writer forgot the cached folders before its commit; a read in between may
            # have cached the old tree again, so forget once more now that it is committed.
            if self._generation != seen:
                self.structure_changed()
        if used is not None:
            self._used = used
        await self.blobs.remove(gone)
        return result

    async def delete(self, path: str, *, if_match: str | None = None) -> TrashItem:
        """Move a file or folder (with all it holds) to the trash."""
        path = check_path(path)
        if not path:
            raise BadInput("the root folder cannot be deleted")

        def delete(tree: Tree) -> TrashItem:
            entry = tree.node(path)
            if entry is None:
                raise NotFound(f"there is no file or folder {path!r}")
            if if_match is not None and not matches(if_match, entry):
                raise PreconditionFailed(f"{path!r} changed since that version", entry.etag)
            return tree.trash(entry)

        item: TrashItem = await self._apply(delete)
        return item

    async def move(
        self, source: str, target: str, *, overwrite: bool = False
    ) -> tuple[Entry, bool]:
        """Move or rename; (entry at target, whether something there was replaced)."""
        return await self._relocate(source, target, overwrite=overwrite, keep=False)

    async def copy(
        self, source: str, target: str, *, overwrite: bool = False, recursive: bool = True
    ) -> tuple[Entry, bool]:
        """Copy a file, or a folder (with what it holds unless ``recursive`` is false)."""
        return await self._relocate(
            source, target, overwrite=overwrite, keep=True, recursive=recursive
        )

    async def _relocate(
        self, source: str, target: str, *, overwrite: bool, keep: bool, recursive: bool = True
    ) -> tuple[Entry, bool]:
        source, target = check_path(source), check_path(target)
        verb = "copied" if keep else "moved"
        if not source:
            raise BadInput(f"the root folder cannot be {verb}")
        if not target:
            raise BadInput("the root folder cannot be replaced")
        if source == target:
            raise BadInput(f"{source!r} cannot be {verb} onto itself")
        if target.startswith(source + "/"):
            raise BadInput(f"{source!r} cannot be {verb} into itself ({target!r})")
        parent_path, name = split(target)

        def relocate(tree: Tree) -> tuple[Entry, bool]:
            entry = tree.node(source)
            if entry is None:
                raise NotFound(f"there is no file or folder {source!r}")
            folder = tree.folder(parent_path)
            existing = tree.node(target)
            if existing is not None:
                if not overwrite:
                    raise PreconditionFailed(
                        f"{target!r} already exists; ask to overwrite it", existing.etag
                    )
                tree.trash(existing)
            if keep:
                copy_node(tree, entry, folder, name, recursive)
            else:
                name_hash = self.name_hash(folder, name)
                old_parent = tree.conn.execute(
                    "SELECT parent FROM files_nodes WHERE id = ?", (entry.id,)
                ).fetchone()[0]
                tree.conn.execute(
                    "UPDATE files_nodes SET parent = ?, name_hash = ?, name = ? WHERE id = ?",
                    (folder, name_hash, self.seal_name(name, name_hash), entry.id),
                )
                tree.touch(old_parent)
                tree.touch(folder)
                if entry.is_folder:
                    self.structure_changed()
            made = tree.node(target)
            assert made is not None
            return made, existing is not None

        result: tuple[Entry, bool] = await self._apply(relocate)
        return result

    def digests(self, entry: Entry) -> dict[str, str]:
        """A file's content digests, {"md5": hex, "sha1": hex}, for clients that compare
        them; {} for a folder, or a file written without them."""
        return self.blobs.digests(entry.token, entry.digests) if entry.token else {}

    # dead properties (WebDAV PROPPATCH)

    async def properties(self, entry: Entry) -> dict[str, bytes]:
        rows = await self.db.fetchall(
            "SELECT name_hash, name, value FROM files_properties WHERE node = ?", (entry.id,)
        )
        node = node_key(entry.id)
        return {
            self.box.open_text(name, context=b"property" + h + node): self.box.open(
                value, context=b"value" + h + node
            )
            for h, name, value in rows
        }

    async def set_properties(
        self, entry: Entry, set: Mapping[str, bytes], remove: Iterable[str]
    ) -> None:
        """Set and remove dead properties, all or nothing."""
        node = node_key(entry.id)
        sealed = []
        for name, value in set.items():
            if len(value) > MAX_PROPERTY:
                raise TooLarge(f"a property value is at most {MAX_PROPERTY} bytes")
            if len(name) > 1024:
                raise BadInput("a property name is at most 1024 characters")
            h = bytes.fromhex(self.box.blind(f"property\0{name}"))
            sealed.append(
                (
                    h,
                    self.box.seal(name, context=b"property" + h + node),
                    self.box.seal(value, context=b"value" + h + node),
                )
            )
        gone = [bytes.fromhex(self.box.blind(f"property\0{name}")) for name in remove]

        def apply(conn: sqlite3.Connection) -> None:
            if (
                conn.execute("SELECT 1 FROM files_nodes WHERE id = ?", (entry.id,)).fetchone()
                is None
            ):
                raise NotFound(f"{entry.path!r} is gone")
            conn.executemany(
                "DELETE FROM files_properties WHERE node = ? AND name_hash = ?",
                [(entry.id, h) for h in gone],
            )
            conn.executemany(
                "INSERT OR REPLACE INTO files_properties VALUES (?, ?, ?, ?)",
                [(entry.id, h, n, v) for h, n, v in sealed],
            )
            count = conn.execute(
                "SELECT count(*) FROM files_properties WHERE node = ?", (entry.id,)
            ).fetchone()[0]
            if count > MAX_PROPERTIES:
                raise TooLarge(f"a file or folder holds at most {MAX_PROPERTIES} properties")

        await self.db.write(apply)

    # the trash

    async def trash(self) -> list[TrashItem]:
        rows = await self.db.fetchall(
            "SELECT t.id, t.folder, t.trashed, t.origin, (SELECT coalesce(sum(size), 0) FROM "
            "files_nodes WHERE trash_root = t.id) FROM files_nodes t WHERE t.trash_root = t.id "
            "ORDER BY t.trashed DESC"
        )
        items = []
        for node, folder, trashed, origin, size in rows:
            path = self.box.open_text(origin, context=b"origin" + node_key(node))
            items.append(
                TrashItem(
                    node,
                    path.rpartition("/")[2],
                    path,
                    "folder" if folder else "file",
                    size,
                    trashed,
                    trashed + self.trash_seconds,
                )
            )
        return items

    async def restore(self, item: int) -> Entry:
        """Put a trash item back where it was (renamed if that name is taken now, into the
        root if its folder is gone)."""
        _trash_item(item)

        def restore(tree: Tree) -> Entry:
            row = tree.conn.execute(
                "SELECT parent, origin FROM files_nodes WHERE id = ? AND trash_root = id", (item,)
            ).fetchone()
            if row is None:
                raise NotFound(f"there is no item {item} in the trash")
            parent, origin = row
            path = self.box.open_text(origin, context=b"origin" + node_key(item))
            alive = tree.conn.execute(
                "SELECT 1 FROM files_nodes WHERE id = ? AND trashed IS NULL", (parent,)
            ).fetchone()
            parent_path = split(path)[0] if alive else ""
            if not alive:
                parent = ROOT
            elif tree.node(parent_path) is None:  # moved since: find its path again
                parent_path = self._path_of(tree.conn, parent)
            name = free_name(tree, parent_path, split(path)[1])
            name_hash = self.name_hash(parent, name)
            tree.conn.execute(
                "UPDATE files_nodes SET parent = ?, name_hash = ?, name = ?, origin = NULL "
                "WHERE id = ?",
                (parent, name_hash, self.seal_name(name, name_hash), item),
            )
            tree.conn.execute(
                "UPDATE files_nodes SET trashed = NULL, trash_root = NULL WHERE trash_root = ?",
                (item,),
            )
            tree.touch(parent)
            self.structure_changed()
            back = tree.node(join(parent_path, name))
            assert back is not None
            return back

        entry: Entry = await self._apply(restore)
        return entry

    def _path_of(self, conn: sqlite3.Connection, node: int) -> str:
        names = []
        while node != ROOT:
            parent, sealed, name_hash = conn.execute(
                "SELECT parent, name, name_hash FROM files_nodes WHERE id = ?", (node,)
            ).fetchone()
            names.append(self.box.open_text(sealed, context=b"name" + name_hash))
            node = parent
        return "/".join(reversed(names))

    async def forget(self, item: int) -> None:
        """Delete one trash item for good."""
        _trash_item(item)

        def forget(tree: Tree) -> None:
            if (
                tree.conn.execute(
                    "SELECT 1 FROM files_nodes WHERE id = ? AND trash_root = id", (item,)
                ).fetchone()
                is None
            ):
                raise NotFound(f"there is no item {item} in the trash")
            tree.purge(item)

        await self._apply(forget)

    async def empty(self, older_than: float | None = None) -> int:
        """Delete trash items for good (those trashed before ``older_than``, or all)."""

        def empty(tree: Tree) -> int:
            rows = tree.conn.execute(
                "SELECT id FROM files_nodes WHERE trash_root = id AND trashed < ?",
                (time.time() + 1 if older_than is None else older_than,),
            ).fetchall()
            for (item,) in rows:
                tree.purge(item)
            return len(rows)

        removed: int = await self._apply(empty)
        return removed

    async def purge(self) -> int:
        """Delete what has been in the trash longer than the trash keeps things."""
        return await self.empty(time.time() - self.trash_seconds)

    # usage and upkeep

    async def usage(self) -> Usage:
        def count(conn: sqlite3.Connection) -> Usage:
            used = conn.execute("SELECT bytes FROM files_usage").fetchone()[0]
            files, folders, trash_items, trash_bytes = conn.execute(
                "SELECT count(*) FILTER (WHERE trashed IS NULL AND folder = 0), "
                "count(*) FILTER (WHERE trashed IS NULL AND folder = 1) - 1, "
                "count(*) FILTER (WHERE trash_root = id), "
                "coalesce(sum(size) FILTER (WHERE trashed IS NOT NULL), 0) FROM files_nodes"
            ).fetchone()
            free = shutil.disk_usage(self.blobs.root.parent).free
            quota = self.quota or used + max(free - DISK_RESERVE, 0)
            return Usage(used, quota, files, folders, trash_items, trash_bytes, free)

        return await self.db.read(count)

    async def sweep(self) -> tuple[int, int]:
        """Remove blob files nothing refers to (left by a crash mid-upload)."""
        rows = await self.db.fetchall("SELECT token FROM files_blobs WHERE inline IS NULL")
        known = {row[0] for row in rows}
        return await asyncio.to_thread(self.blobs.sweep, known.__contains__)

    async def check(self) -> list[str]:
        """Problems with the stored files: content files missing or of the wrong size (files
        nothing refers to are not problems: an upload may be under way; the sweep takes
        what a crash left). Empty when all is well."""
        rows = await self.db.fetchall("SELECT token, size FROM files_blobs WHERE inline IS NULL")

        def look() -> list[str]:
            problems = []
            for token, size in rows:
                expected = stored_size(size)
                path = self.blobs.path(token)
                try:
                    actual = path.stat().st_size
                except FileNotFoundError:
                    problems.append(f"content file {path.name} is missing")
                    continue
                if actual != expected:
                    problems.append(f"content file {path.name} is {actual} bytes, not {expected}")
            return problems

        return await asyncio.to_thread(look)


def _trash_item(item: int) -> None:
    """A trash item's id is a node's (a positive 64-bit number); any other is none of them."""
    if not 0 < item < 2**63:
        raise NotFound(f"there is no item {item} in the trash")


def data_root(data_dir: Path) -> Path:
    return data_dir / "files"
