"""What ``twin export`` takes of files and ``twin import`` puts back: ``index.jsonl`` (every
folder and file, live and in the trash, with its times, properties and where its bytes are),
``shares.json`` (the owner's links), then each file's bytes as they are, at its real path under
``tree/`` (or ``trash/<n>/``); streamed a chunk at a time both ways (docs/export-format.md).

Import keeps each node's id and each content's token, so folder and file ETags, trash item ids
and share links stay what clients and visitors know."""

from __future__ import annotations

import hashlib
import re
import sqlite3
import unicodedata
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from twin import BadInput, Conflict
from twin.archive import check_path as check_entry
from twin.export import Export, Item, Part, seconds, whole

from ._blobs import Blob
from ._paths import check_path, join, split
from ._store import MAX_PROPERTIES, MAX_PROPERTY, FileStore
from ._tree import ROOT, Tree, media_type, node_key

if TYPE_CHECKING:
    from ._shares import Shares

INDEX = "index.jsonl"
SHARES = "shares.json"
PAGE = 1000  # nodes read, or inserted, at once
IMPORT_AHEAD = 2  # chunks of a file sealed and written behind the one being read
_ROWS = (
    "SELECT n.id, n.parent, n.folder, n.size, n.created, n.modified, n.blob, n.name, "
    "n.name_hash, n.trashed, n.trash_root, b.token, b.digests FROM files_nodes n "
    "LEFT JOIN files_blobs b ON b.id = n.blob WHERE "
)
_EXTENSION = re.compile(r"\.[A-Za-z0-9]{1,12}$")
_HEX = re.compile(r"[0-9a-f]+")


# export


async def export_files(store: FileStore, shares: Shares, out: Export) -> None:
    """``index.jsonl``, ``shares.json``, then every file's bytes, in the order the index
    lists them (so an import knows each file before its bytes come)."""
    shared = {row[0] for row in await store.db.fetchall("SELECT DISTINCT node FROM files_shares")}
    walk = _Walk(store, out.folder, shared)
    await out.lines(INDEX, walk.lines())
    await out.json(SHARES, await _links(shares, walk.shared, open=out.open))
    for name, blob, path, token in walk.contents:
        # a content token never names other bytes: a backup that has them takes them as they are
        await out.file(name, _content(store, blob, path), same_as=token)


class _Walk:
    """The tree from the root, breadth first, then each trash item, newest first: one line a
    node. On the way it notes where each file's bytes go and the paths of shared nodes."""

    def __init__(self, store: FileStore, folder: str, shared: set[int]) -> None:
        self.store = store
        self.folder = folder
        self.wanted = shared  # nodes share links point at
        self.shared: dict[int, tuple[str, bool]] = {}  # those found: (path, in the trash)
        self.contents: list[tuple[str, int, str, str]] = []  # (entry, blob id, path, token)
        self._places = _Places(folder)

    async def lines(self) -> AsyncIterator[dict[str, Any]]:
        async for line in self._below(ROOT, "", "tree"):
            yield line
        items = await self.store.db.fetchall(
            "SELECT id, origin FROM files_nodes WHERE trash_root = id "
            "ORDER BY trashed DESC, id DESC"  # an item before those that were in its folders
        )
        for number, (item, origin) in enumerate(items, 1):
            path = self.store.box.open_text(origin, context=b"origin" + node_key(item))
            async for line in self._below(item, path, f"trash/{number}"):
                yield line

    async def _below(self, top: int, path: str, prefix: str) -> AsyncIterator[dict[str, Any]]:
        """The line of node ``top`` (at ``path``) and of everything in it, parents first."""
        rows = await self.store.db.fetchall(_ROWS + "n.id = ?", (top,))
        for line in await self._lines(rows, [path], prefix):
            yield line
        extra: tuple[Any, ...] = ()
        if rows[0]["trashed"] is None:
            where = "n.parent = ? AND n.trashed IS NULL"
        else:
            where, extra = "n.parent = ? AND n.trash_root = ?", (rows[0]["trash_root"],)
        queue = deque([(top, path)] if rows[0]["folder"] else [])
        while queue:
            folder, folder_path = queue.popleft()
            after = 0
            while True:
                rows = await self.store.db.fetchall(
                    _ROWS + where + " AND n.id > ? ORDER BY n.id LIMIT ?",
                    (folder, *extra, after, PAGE),
                )
                paths = [join(folder_path, self._name(row)) for row in rows]
                for line in await self._lines(rows, paths, prefix):
                    yield line
                queue += [(r["id"], p) for r, p in zip(rows, paths, strict=True) if r["folder"]]
                if len(rows) < PAGE:
                    break
                after = rows[-1]["id"]

    def _name(self, row: sqlite3.Row) -> str:
        return self.store.box.open_text(row["name"], context=b"name" + row["name_hash"])

    async def _lines(
        self, rows: list[sqlite3.Row], paths: list[str], prefix: str
    ) -> list[dict[str, Any]]:
        properties = await _properties(self.store, [row["id"] for row in rows])
        lines = []
        for row, path in zip(rows, paths, strict=True):
            line: dict[str, Any] = {
                "id": row["id"],
                "parent": row["parent"],
                "path": path,
                "kind": "folder" if row["folder"] else "file",
                "created": row["created"],
                "modified": row["modified"],
            }
            if not row["folder"]:
                name = self._places.place(f"{prefix}/{path}")
                line["size"] = row["size"]
                line["type"] = media_type(split(path)[1])
                line["content"] = row["token"].hex()
                line["entry"] = f"{self.folder}/{name}"
                if row["digests"] is not None:
                    line["digests"] = self.store.blobs.digests(row["token"], row["digests"])
                self.contents.append((name, row["blob"], path, row["token"].hex()))
            if row["id"] in properties:
                line["properties"] = properties[row["id"]]
            if row["trashed"] is not None:
                line["trashed"] = row["trashed"]
                line["item"] = row["trash_root"]
            if row["id"] in self.wanted:
                self.shared[row["id"]] = (path, row["trashed"] is not None)
            lines.append(line)
        return lines


class _Places:
    """Where each file's bytes go under the part's folder: at its real path, unless an archive
    could not hold that path (over 1,024 characters) or a file system that ignores case and
    accents (an exFAT stick, macOS) would take it for another; then at ``other/<n>``."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.others = 0
        self._taken: dict[str, tuple[str, bool]] = {}  # folded -> (as written, a folder)

    def place(self, name: str) -> str:
        if self._free(name):
            return name
        self.others += 1
        extension = _EXTENSION.search(split(name)[1])
        return f"other/{self.others}{extension.group() if extension else ''}"

    def _free(self, name: str) -> bool:
        try:
            check_entry(f"{self.folder}/{name}")
        except BadInput:
            return False
        parts = name.split("/")
        folders = ["/".join(parts[:end]) for end in range(1, len(parts))]
        if _fold(name) in self._taken or any(
            self._taken.get(_fold(f), (f, True)) != (f, True) for f in folders
        ):
            return False
        for f in folders:
            self._taken.setdefault(_fold(f), (f, True))
        self._taken[_fold(name)] = (name, False)
        return True


def _fold(path: str) -> str:
    return unicodedata.normalize("NFD", path).casefold()


async def _properties(store: FileStore, nodes: list[int]) -> dict[int, dict[str, str]]:
    """The dead (WebDAV) properties of ``nodes``: {node: {"{namespace}name": xml}}."""
    if not nodes:
        return {}
    rows = await store.db.fetchall(
        "SELECT node, name_hash, name, value FROM files_properties "
        f"WHERE node IN ({', '.join('?' * len(nodes))}) ORDER BY node, name_hash",
        nodes,
    )
    found: dict[int, dict[str, str]] = {}
    for node, name_hash, name, value in rows:
        context = name_hash + node_key(node)
        found.setdefault(node, {})[store.box.open_text(name, context=b"property" + context)] = (
            store.box.open(value, context=b"value" + context).decode("utf-8")
        )
    return found


async def _content(store: FileStore, blob_id: int, path: str) -> AsyncIterator[bytes]:
    """A file's bytes as the index saw them (a blob never changes; a replaced one goes)."""
    row = await store.db.lookup(
        "SELECT token, size, cipher, inline FROM files_blobs WHERE id = ?", (blob_id,)
    )
    if row is None:
        # only a serving twin's backup meets this (an export is of a twin at rest)
        raise Conflict(f"{path!r} was replaced while it was copied: the next backup takes it")
    blob = Blob(row["token"], row["size"], row["cipher"], row["inline"])
    async for piece in store.blobs.read(blob, 0, blob.size):
        yield piece


async def _links(
    shares: Shares, found: dict[int, tuple[str, bool]], *, open: bool
) -> list[dict[str, Any]]:
    """Every share link, revoked and expired ones too; its secret only in the archive."""
    rows = await shares.store.db.fetchall(
        "SELECT id, secret, node, created, expires, max_downloads, downloads, revoked "
        "FROM files_shares ORDER BY created, id"
    )
    links = []
    for row in rows:
        if row["node"] not in found:  # what it shared was deleted for good
            continue
        path, in_trash = found[row["node"]]
        link: dict[str, Any] = {
            "id": row["id"],
            "node": row["node"],
            "path": path,
            "in_trash": in_trash,
            "created": row["created"],
            "expires": row["expires"],
            "max_downloads": row["max_downloads"],
            "downloads": row["downloads"],
            "revoked": row["revoked"],
        }
        if not open:  # a bearer credential for the live twin: never in the plain copy
            secret = shares.box.open_text(row["secret"], context=row["id"])
            link["secret"] = secret
            link["url"] = f"{shares.base_url}/s/{secret}"
        links.append(link)
    return links


# import


async def restore_files(store: FileStore, shares: Shares, part: Part) -> None:
    """Read back, into a store that holds nothing yet, what :func:`export_files` wrote."""
    if await store.db.fetchval("SELECT count(*) FROM files_nodes") != 1:
        raise Conflict("this twin holds files already: import into a new twin")
    first = await part.next()
    if first is None or first.name != INDEX:
        raise BadInput(f"the files part does not begin with {part.folder}/{INDEX}: it is damaged")
    index = _Index(store, part.folder)
    number = 0
    async for line in first.lines():
        number += 1
        await index.add(line, number)
    if not index.nodes:
        raise BadInput(f"{index.name} is empty: it lists not even the root folder")
    await index.flush()
    try:
        async for item in part:
            if item.name == SHARES:
                await _restore_links(shares, index, item)
            elif item.path in index.pending:
                await index.content(item)
            else:
                raise BadInput(f"{item.path} is not listed in {index.name}: the export is damaged")
        if index.pending:
            raise BadInput(
                f"{index.name} lists {next(iter(index.pending))}, which the export does not hold"
            )
    finally:
        store.structure_changed()
        store.recent.changed()
        store._used = None  # the usage count grew under it


@dataclass(frozen=True)
class _Node:
    folder: bool
    path: str
    item: int | None  # the trash item it is in; None while live


@dataclass(frozen=True)
class _Row:
    id: int
    parent: int
    name: str
    folder: bool
    size: int
    created: float
    modified: float
    trashed: float | None
    item: int | None
    origin: str | None  # where a trash item's top was
    properties: dict[str, bytes]


@dataclass(frozen=True)
class _Wanted:
    node: int
    token: bytes
    size: int


@dataclass
class _Content:
    """One stored content and how many files share it (copies share one)."""

    size: int
    digests: dict[str, str] | None
    files: int = 0
    blob: int | None = None  # its row, once stored
    sha256: bytes = field(default=b"", repr=False)  # of its bytes, when others share it


class _Index:
    """``index.jsonl`` as it is read: each line checked, its node inserted (a page at a time,
    contents to come), and what every entry after it must hold."""

    def __init__(self, store: FileStore, folder: str) -> None:
        self.store = store
        self.folder = folder
        self.name = f"{folder}/{INDEX}"
        self.nodes: dict[int, _Node] = {}
        self.pending: dict[str, _Wanted] = {}  # entry path -> the file its bytes are
        self.contents: dict[bytes, _Content] = {}
        self._paths: set[tuple[int | None, str]] = set()  # (trash item, path), each once
        self._rows: list[_Row] = []

    async def add(self, line: Any, number: int) -> None:
        where = f"line {number} of {self.name}"
        if not isinstance(line, dict):
            raise BadInput(f"{where} is not an object")
        try:
            row = self._row(line)
        except BadInput as exc:
            raise BadInput(f"{where}: {exc.message}") from None
        self._rows.append(row)
        if len(self._rows) >= PAGE:
            await self.flush()

    def _row(self, line: dict[str, Any]) -> _Row:
        node = whole(line.get("id"), "id", 1)
        if node in self.nodes:
            raise BadInput(f"id {node} is listed twice")
        kind = line.get("kind")
        if kind not in ("folder", "file"):
            raise BadInput(f"kind is 'folder' or 'file', not {kind!r}")
        folder = kind == "folder"
        path = line.get("path")
        if not isinstance(path, str):
            raise BadInput("path must be a string")
        path = check_path(path)
        created = seconds(line.get("created"), "created")
        modified = seconds(line.get("modified"), "modified")
        properties = _check_properties(line.get("properties", {}))
        if not self.nodes:
            if (node, path, folder) != (ROOT, "", True) or line.get("parent") is not None:
                raise BadInput(f'the index begins with the root folder (id {ROOT}, path "")')
            self.nodes[node] = _Node(True, "", None)
            return _Row(node, 0, "", True, 0, created, modified, None, None, None, properties)
        if not path:
            raise BadInput('only the root folder has the path ""')
        parent = whole(line.get("parent"), "parent", 1)
        trashed, item, origin = None, None, None
        if line.get("trashed") is not None:
            trashed = seconds(line["trashed"], "trashed")
            item = whole(line.get("item"), "item", 1)
        above = self.nodes.get(parent)
        if item == node:  # a trash item's top: it goes back into its folder, if that is here
            origin = path
            if above is None or not above.folder:
                parent = ROOT
        elif above is None or not above.folder or above.item != item:
            where = "in the trash item" if item is not None else "live"
            raise BadInput(f"its parent {parent} is no folder listed before it, {where}")
        elif split(path)[0] != above.path:
            raise BadInput(f"{path!r} is not in its folder {above.path or 'the root'!r}")
        if (item, path) in self._paths:
            raise BadInput(f"{path!r} is listed twice")
        size = 0
        if not folder:
            size = self._file(line, node, path)
        self.nodes[node] = _Node(folder, path, item)
        self._paths.add((item, path))
        return _Row(
            node,
            parent,
            split(path)[1],
            folder,
            size,
            created,
            modified,
            trashed,
            item,
            origin,
            properties,
        )

    def _file(self, line: dict[str, Any], node: int, path: str) -> int:
        """A file line's size, after noting the entry that holds its bytes."""
        size = whole(line.get("size"), "size", 0)
        token = _token(line.get("content"))
        entry = line.get("entry")
        if not isinstance(entry, str) or not entry.startswith(f"{self.folder}/"):
            raise BadInput(f"entry is where the file's bytes are, under {self.folder}/")
        check_entry(entry)
        if entry in self.pending or entry in (self.name, f"{self.folder}/{SHARES}"):
            raise BadInput(f"entry {entry} is taken already")
        digests = _check_digests(line.get("digests"))
        content = self.contents.setdefault(token, _Content(size, digests))
        if (content.size, content.digests) != (size, digests):
            raise BadInput(f"content {token.hex()} is another file's, of another size or digests")
        content.files += 1
        self.pending[entry] = _Wanted(node, token, size)
        return size

    async def flush(self) -> None:
        rows, self._rows = self._rows, []
        if rows:
            await self.store.db.write(lambda conn: self._insert(conn, rows))

    def _insert(self, conn: sqlite3.Connection, rows: list[_Row]) -> None:
        store, box = self.store, self.store.box
        for row in rows:
            if row.id == ROOT:
                conn.execute(
                    "UPDATE files_nodes SET created = ?, modified = ? WHERE id = ?",
                    (row.created, row.modified, ROOT),
                )
            else:
                name_hash = store.name_hash(row.parent, row.name)
                origin = None if row.origin is None else store.seal_origin(row.origin, row.id)
                conn.execute(
                    "INSERT INTO files_nodes (id, parent, name_hash, name, folder, size, "
                    "created, modified, trashed, trash_root, origin) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        row.id,
                        row.parent,
                        name_hash,
                        store.seal_name(row.name, name_hash),
                        int(row.folder),
                        row.size,
                        row.created,
                        row.modified,
                        row.trashed,
                        row.item,
                        origin,
                    ),
                )
            node = node_key(row.id)
            for name, value in row.properties.items():
                h = bytes.fromhex(box.blind(f"property\0{name}"))
                conn.execute(
                    "INSERT INTO files_properties VALUES (?, ?, ?, ?)",
                    (
                        row.id,
                        h,
                        box.seal(name, context=b"property" + h + node),
                        box.seal(value, context=b"value" + h + node),
                    ),
                )

    async def content(self, item: Item) -> None:
        """A file's bytes, stored once for all the files that share them."""
        wanted = self.pending.pop(item.path)
        content = self.contents[wanted.token]
        if content.blob is not None:  # a copy of a content stored already
            digest = hashlib.sha256()
            async for piece in _sized(item, wanted.size):
                digest.update(piece)
            if digest.digest() != content.sha256:
                raise BadInput(
                    f"{item.path} does not hold the bytes of the other files with content "
                    f"{wanted.token.hex()}: the export was changed"
                )
            await self.store.db.execute(
                "UPDATE files_nodes SET blob = ? WHERE id = ?", (content.blob, wanted.node)
            )
            return
        hashed = hashlib.sha256() if content.files > 1 else None  # to know its copies by
        body = _sized(item, wanted.size, hashed)
        blob = await _receive(self.store, wanted.token, body, wanted.size, content.digests)
        blobs = self.store.blobs
        try:
            if content.digests is not None and blobs.digests(blob.token, blob.digests) != (
                content.digests
            ):
                raise BadInput(
                    f"{item.path} does not have the MD5 and SHA-1 {self.name} gives: it was changed"
                )

            def commit(conn: sqlite3.Connection) -> int:
                blob_id = Tree(self.store, conn).add_blob(blob)
                conn.execute("UPDATE files_nodes SET blob = ? WHERE id = ?", (blob_id, wanted.node))
                return blob_id

            content.blob = await self.store.db.write(commit)
        except BaseException:
            await blobs.remove([blob.token] if blob.inline is None else [])
            raise
        finally:
            blobs.committed(blob.token)
        if hashed is not None:
            content.sha256 = hashed.digest()


async def _sized(
    item: Item, size: int, digest: hashlib._Hash | None = None
) -> AsyncIterator[bytes]:
    """An entry's bytes, refused unless there are ``size`` of them."""
    seen = 0
    async for piece in item.chunks():
        seen += len(piece)
        if seen > size:
            raise BadInput(f"{item.path} is longer than the {size:,} bytes the index gives it")
        if digest is not None:
            digest.update(piece)
        yield piece
    if seen != size:
        raise BadInput(f"{item.path} is {seen:,} bytes, not the {size:,} the index gives it")


async def _receive(
    store: FileStore,
    token: bytes,
    body: AsyncIterator[bytes],
    size: int,
    digests: dict[str, str] | None,
) -> Blob:
    """``Blobs.receive`` under the token the content had, so its files keep their ETags,
    with two chunks in flight: they keep the disk and a core busy."""
    room = store.room(await store.db.fetchval("SELECT bytes FROM files_usage") or 0)
    return await store.blobs.receive(
        body, size, room, digests=digests is not None, token=token, ahead=IMPORT_AHEAD
    )


async def _restore_links(shares: Shares, index: _Index, item: Item) -> None:
    """The share links; those without their secret (the plain copy's) cannot work again."""
    links = await item.json()
    if not isinstance(links, list):
        raise BadInput(f"{item.path} is not a list of links")
    rows: list[tuple[Any, ...]] = []
    ids: set[str] = set()
    hashes: set[bytes] = set()
    for number, link in enumerate(links, 1):
        where = f"link {number} of {item.path}"
        if not isinstance(link, dict):
            raise BadInput(f"{where} is not an object")
        try:
            row = _link(shares, index, link)
        except BadInput as exc:
            raise BadInput(f"{where}: {exc.message}") from None
        if row is None:
            continue
        if row[0] in ids or row[1] in hashes:
            raise BadInput(f"{where} is listed twice")
        ids.add(row[0])
        hashes.add(row[1])
        rows.append(row)
    if rows:
        await shares.store.db.executemany(
            "INSERT INTO files_shares (id, secret_hash, secret, node, created, expires, "
            "max_downloads, downloads, revoked) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )


def _link(shares: Shares, index: _Index, link: dict[str, Any]) -> tuple[Any, ...] | None:
    share_id = link.get("id")
    if not isinstance(share_id, str) or not 0 < len(share_id) <= 64 or not share_id.isascii():
        raise BadInput("id is 1 to 64 ASCII characters")
    node = whole(link.get("node"), "node", 1)
    if node == ROOT or node not in index.nodes:
        raise BadInput(f"node {node} is not a file or folder {index.name} lists")
    created = seconds(link.get("created"), "created")
    expires = seconds(link.get("expires"), "expires")
    limit = link.get("max_downloads")
    if limit is not None:
        limit = whole(limit, "max_downloads", 1)
    downloads = whole(link.get("downloads"), "downloads", 0)
    revoked = link.get("revoked")
    if revoked is not None:
        revoked = seconds(revoked, "revoked")
    secret = link.get("secret")
    if secret is None:
        return None
    if not isinstance(secret, str) or not 16 <= len(secret) <= 64 or not secret.isascii():
        raise BadInput("secret is 16 to 64 ASCII characters")
    return (
        share_id,
        hashlib.sha256(secret.encode()).digest(),
        shares.box.seal(secret, context=share_id),
        node,
        created,
        expires,
        limit,
        downloads,
        revoked,
    )


def _token(value: Any) -> bytes:
    if not isinstance(value, str) or len(value) != 32 or not _HEX.fullmatch(value):
        raise BadInput(f"content is 32 hex digits, not {value!r}")
    return bytes.fromhex(value)


def _check_digests(value: Any) -> dict[str, str] | None:
    if value is None:
        return None
    if (
        not isinstance(value, dict)
        or set(value) != {"md5", "sha1"}
        or not all(isinstance(v, str) and _HEX.fullmatch(v) for v in value.values())
        or (len(value["md5"]), len(value["sha1"])) != (32, 40)
    ):
        raise BadInput('digests is {"md5": 32 hex digits, "sha1": 40 hex digits}')
    return dict(value)


def _check_properties(value: Any) -> dict[str, bytes]:
    if not isinstance(value, dict):
        raise BadInput('properties is an object of {"{namespace}name": "<xml/>"}')
    if len(value) > MAX_PROPERTIES:
        raise BadInput(f"a file or folder holds at most {MAX_PROPERTIES} properties")
    checked = {}
    for name, xml in value.items():
        try:
            if not isinstance(xml, str) or not 0 < len(name) <= 1024:
                raise ValueError
            name.encode("utf-8")
            data = xml.encode("utf-8")
        except (ValueError, UnicodeError):
            raise BadInput(
                f"property {name[:80]!r} is a name of 1 to 1024 characters and its XML, in UTF-8"
            ) from None
        if len(data) > MAX_PROPERTY:
            raise BadInput(f"property {name[:80]!r} is over {MAX_PROPERTY} bytes")
        checked[name] = data
    return checked
