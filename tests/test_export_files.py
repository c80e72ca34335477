"""What `twin export` takes of files and `twin import` puts back: every folder and file at its
real name in the plain folder, and, through the encrypted archive into a new twin with the same
keys, the same listings, bytes, times, ETags, properties, trash and share links; big files
stream both ways, and a damaged export is refused with a message saying what is wrong."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from test_peers_core import twin_with
from twin_capabilities.files import Files

from twin import BadInput, Conflict
from twin.archive import ArchiveReader, ArchiveWriter
from twin.core import Twin, initialize
from twin.export import Entries, Export, Folder
from twin.settings import Settings

pytestmark = pytest.mark.anyio
MIB = 1024 * 1024
XML = {"Content-Type": "application/xml"}
ALLPROP = b'<D:propfind xmlns:D="DAV:"><D:allprop/></D:propfind>'
CHECKSUMS = (
    b'<D:propfind xmlns:D="DAV:" xmlns:oc="http://owncloud.org/ns">'
    b"<D:prop><oc:checksums/></D:prop></D:propfind>"
)
LONG = "/".join(["x" * 120] * 9)  # over the 1,024 characters an archive's path may have


def files_of(twin: Twin) -> Files:
    capability = twin.registry.loaded["files"].capability
    assert isinstance(capability, Files)
    return capability


class Owner:
    """The owner of a twin, over its HTTP API and its WebDAV door."""

    def __init__(self, twin: Twin, client: httpx.AsyncClient, token: str) -> None:
        self.twin = twin
        self.client = client
        self.headers = {"Authorization": f"Bearer {token}"}
        self.dav = httpx.BasicAuth("me", token)

    @classmethod
    async def of(cls, twin: Twin, client: httpx.AsyncClient) -> Owner:
        _, token = await twin.tokens.create(frozenset({"files:*"}), "test")
        return cls(twin, client, str(token))

    async def put(self, path: str, content: bytes | AsyncIterator[bytes], **query: str) -> Any:
        response = await self.client.put(
            f"/api/files/content/{quote(path)}",
            content=content,
            params={"parents": "1", **query},
            headers=self.headers,
        )
        assert response.status_code in (200, 201), response.text
        return response.json()

    async def call(self, method: str, url: str, **kw: Any) -> httpx.Response:
        response = await self.client.request(method, url, headers=self.headers, **kw)
        assert response.status_code < 300, response.text
        return response

    async def webdav(self, method: str, path: str, body: bytes, **headers: str) -> str:
        response = await self.client.request(
            method, f"/dav/{quote(path)}", content=body, headers={**XML, **headers}, auth=self.dav
        )
        assert response.status_code in (201, 204, 207), response.text
        return response.text

    async def everything(self) -> dict[str, Any]:
        """What the owner sees of their files: every folder's listing, every file's bytes and
        headers, the trash, the links, the usage, and WebDAV's view of all of it."""
        seen: dict[str, Any] = {}
        folders = [""]
        while folders:
            folder = folders.pop()
            listing = (await self.call("GET", f"/api/files/tree/{quote(folder)}")).json()
            seen[f"tree:{folder}"] = listing
            for entry in listing["entries"]:
                if entry["kind"] == "folder":
                    folders.append(entry["path"])
                    continue
                got = await self.call("GET", f"/api/files/content/{quote(entry['path'])}")
                seen[f"content:{entry['path']}"] = (
                    hashlib.sha256(got.content).hexdigest(),
                    got.headers["etag"],
                    got.headers["content-type"],
                    got.headers["last-modified"],
                )
        usage = (await self.call("GET", "/api/files/")).json()
        del usage["quota"]  # what the disk has free, just now
        seen["usage"] = usage
        seen["trash"] = (await self.call("GET", "/api/files/trash")).json()
        seen["shares"] = (await self.call("GET", "/api/files/shares")).json()
        seen["propfind"] = await self.webdav("PROPFIND", "", ALLPROP, Depth="infinity")
        seen["checksums"] = await self.webdav("PROPFIND", "", CHECKSUMS, Depth="infinity")
        return seen


async def fill(owner: Owner) -> dict[str, bytes]:
    """Folders and files of every kind, a property, the trash and two links; the bytes of
    every live file, by path."""
    kept = {
        "Photos/2024/plage été.jpg": os.urandom(300_000),
        "Notes/日本語 ノート.txt": "こんにちは\n".encode(),
        "Notes/empty.txt": b"",
        "big.bin": os.urandom(5 * MIB + 7),
        "Readme.md": b"# one\n",
        "README.md": b"# the other, a name apart only in case\n",
        f"{LONG}/deep.txt": b"far down\n",
    }
    for path, content in kept.items():
        await owner.put(path, content)
    await owner.put("old.txt", b"written long ago\n", modified="1600000000.25")
    kept["old.txt"] = b"written long ago\n"
    await owner.call("POST", "/api/files/folders", json={"path": "Empty/Inside", "parents": True})
    await owner.call("POST", "/api/files/copy", json={"from": "big.bin", "to": "Photos/copy.bin"})
    kept["Photos/copy.bin"] = kept["big.bin"]
    synced = os.urandom(100_000)  # a sync client's upload: its digests are kept
    await owner.webdav("PUT", "Notes/synced.bin", synced, **{"X-OC-Mtime": "1700000000"})
    kept["Notes/synced.bin"] = synced
    patch = (
        '<D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:z"><D:set><D:prop>'
        "<Z:colour>blue, ünïcode</Z:colour></D:prop></D:set></D:propertyupdate>"
    ).encode()
    await owner.webdav("PROPPATCH", "Notes/日本語 ノート.txt", patch)
    await owner.webdav("PROPPATCH", "Photos", patch)
    await owner.put("Old/first.txt", b"deleted first\n")
    await owner.put("Old/inner/second.txt", b"deleted with its folder\n")
    await owner.put("Old/big copy.bin", kept["big.bin"])
    await owner.webdav("PROPPATCH", "Old/inner/second.txt", patch)
    await owner.call("DELETE", "/api/files/tree/Old/first.txt")
    await owner.call("DELETE", "/api/files/tree/Old")
    await owner.put("gone.txt", b"v1")
    await owner.call("DELETE", "/api/files/tree/gone.txt")
    await owner.call("POST", "/api/files/shares", json={"path": "Photos", "days": 30})
    await owner.call(
        "POST", "/api/files/shares", json={"path": "big.bin", "days": 2, "max_downloads": 3}
    )
    return kept


def read_lines(path: Path) -> list[Any]:
    return [json.loads(line) for line in path.read_text("utf-8").splitlines()]


def check_plain(root: Path, kept: dict[str, bytes]) -> None:
    """The plain folder: every file at its real name (or, where none can be, where the index
    says), the index first, links without their secrets."""
    plain = root / "files"
    for path, content in kept.items():
        if path not in ("README.md", f"{LONG}/deep.txt"):
            assert (plain / "tree" / path).read_bytes() == content, path
    assert (plain / "tree" / "Notes" / "empty.txt").stat().st_size == 0
    index = read_lines(plain / "index.jsonl")
    by_path = {(line["path"], "item" in line): line for line in index}
    assert index[0] == by_path[("", False)] and index[0]["id"] == 1
    for path, content in kept.items():
        line = by_path[(path, False)]
        assert (root / line["entry"]).read_bytes() == content, path
        assert line["size"] == len(content)
    assert by_path[("README.md", False)]["entry"] == "files/other/1.md"  # "Readme.md" is there
    assert by_path[(f"{LONG}/deep.txt", False)]["entry"] == "files/other/2.txt"
    note = by_path[("Notes/日本語 ノート.txt", False)]
    assert note["type"] == "text/plain" and note["created"] <= note["modified"]
    assert note["properties"] == {
        "{urn:z}colour": '<ns0:colour xmlns:ns0="urn:z">blue, ünïcode</ns0:colour>'
    }
    assert by_path[("old.txt", False)]["modified"] == 1600000000.25
    assert by_path[("Empty/Inside", False)]["kind"] == "folder"
    copied = by_path[("Photos/copy.bin", False)]
    assert copied["content"] == by_path[("big.bin", False)]["content"]
    assert set(by_path[("Notes/synced.bin", False)]["digests"]) == {"md5", "sha1"}
    trash = [line for line in index if "item" in line]
    assert [(t["path"], t["kind"]) for t in trash] == [
        ("gone.txt", "file"),
        ("Old", "folder"),
        ("Old/inner", "folder"),  # the folder was made with the first file in it
        ("Old/big copy.bin", "file"),
        ("Old/inner/second.txt", "file"),
        ("Old/first.txt", "file"),
    ]
    assert all(t["trashed"] > 0 for t in trash)
    assert (plain / "trash" / "1" / "gone.txt").read_bytes() == b"v1"
    assert (plain / "trash" / "2" / "Old/inner/second.txt").read_bytes() == (
        b"deleted with its folder\n"
    )
    assert (plain / "trash" / "3" / "Old/first.txt").read_bytes() == b"deleted first\n"
    links = json.loads((plain / "shares.json").read_text())
    assert sorted(link["path"] for link in links) == ["Photos", "big.bin"]
    assert all("secret" not in link and "url" not in link for link in links)


async def test_files_travel_whole_to_a_new_twin_with_the_same_keys(tmp_path: Path) -> None:
    async with twin_with(tmp_path / "a") as (twin_a, client_a):
        a = await Owner.of(twin_a, client_a)
        kept = await fill(a)
        identity = twin_a.require_identity()
        folder = Folder(tmp_path / "plain", identity, created=0)
        await files_of(twin_a).export(Export(folder, "files", open=True))
        folder.close()
        check_plain(tmp_path / "plain", kept)
        buffer = io.BytesIO()
        writer = ArchiveWriter(buffer, identity)
        await files_of(twin_a).export(Export(writer, "files", open=False))
        writer.close()
        assert "plage été".encode() not in buffer.getvalue()  # the archive is encrypted
        before = await a.everything()

        # a new twin, the same keys, filled from the archive
        initialize(Settings(data_dir=tmp_path / "b", rate_limit=0), identity=identity)
        async with twin_with(tmp_path / "b") as (twin_b, client_b):
            buffer.seek(0)
            entries = Entries(ArchiveReader(buffer, seed=identity.seed).entries())
            part = entries.part()
            await files_of(twin_b).restore(part)
            await part.rest()
            assert entries.folder() is None  # all read, the manifest checked
            b = await Owner.of(twin_b, client_b)
            after = await b.everything()
            assert after.keys() == before.keys()
            for key in before:
                assert after[key] == before[key], key

            # the links given out still open, on the new twin
            for share in before["shares"]["items"]:
                secret = share["url"].rpartition("/s/")[2]
                page = await client_b.get(f"/s/{secret}")
                assert page.status_code == 200, page.text
                if share["path"] == "big.bin":
                    got = await client_b.get(f"/s/{secret}/download")
                    assert got.status_code == 200 and got.content == kept["big.bin"]

            # what is in the trash comes back where it would have on the first twin
            for owner in (a, b):
                for item in before["trash"]["items"]:
                    back = await owner.call("POST", f"/api/files/trash/{item['id']}/restore")
                    assert back.json()["path"] == item["path"], item
            back_a, back_b = await a.everything(), await b.everything()
            contents = {k: v for k, v in back_a.items() if k.startswith("content:")}
            assert contents == {k: v for k, v in back_b.items() if k.startswith("content:")}
            assert "content:Old/inner/second.txt" in contents
            assert back_b["usage"] == back_a["usage"]  # copies still share their content
            assert back_b["usage"]["trash"] == {"items": 0, "bytes": 0}


async def chunks_of(size: int) -> AsyncIterator[bytes]:
    piece = os.urandom(MIB)
    for start in range(0, size, MIB):
        yield piece[: min(MIB, size - start)]


async def test_a_big_file_streams_out_and_back_in(tmp_path: Path) -> None:
    size = 20 * MIB + 3
    archive = tmp_path / "export.twin"
    async with twin_with(tmp_path / "a") as (twin_a, client_a):
        a = await Owner.of(twin_a, client_a)
        await a.put("film.mkv", chunks_of(size))
        identity = twin_a.require_identity()
        tracemalloc.start()
        try:
            with open(archive, "wb") as out:
                writer = ArchiveWriter(out, identity)
                await files_of(twin_a).export(Export(writer, "files", open=False))
                writer.close()
            exported = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        expected = (await a.call("GET", "/api/files/content/film.mkv")).content
    assert archive.stat().st_size > size
    initialize(Settings(data_dir=tmp_path / "b", rate_limit=0), identity=identity)
    async with twin_with(tmp_path / "b") as (twin_b, client_b):
        tracemalloc.start()
        try:
            with open(archive, "rb") as source:
                entries = Entries(ArchiveReader(source, seed=identity.seed).entries())
                part = entries.part()
                await files_of(twin_b).restore(part)
                await part.rest()
                assert entries.folder() is None
            imported = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        b = await Owner.of(twin_b, client_b)
        got = await b.call("GET", "/api/files/content/film.mkv")
    assert len(got.content) == size and got.content == expected
    print(f"\npeak memory: export {exported / MIB:.1f} MiB, import {imported / MIB:.1f} MiB")
    assert exported < 6 * MIB, exported  # a few chunks in flight, never the whole file
    assert imported < 10 * MIB, imported


# a damaged or altered export

ROOT = {"id": 1, "parent": None, "path": "", "kind": "folder", "created": 1.0, "modified": 2.0}


def a_file(node: int = 2, path: str = "a.txt", size: int = 3, **more: Any) -> dict[str, Any]:
    return {
        "id": node,
        "parent": 1,
        "path": path,
        "kind": "file",
        "size": size,
        "created": 1.0,
        "modified": 2.0,
        "content": f"{node:032x}",
        "entry": f"files/tree/{path}",
        **more,
    }


def export_of(lines: list[Any], *entries: tuple[str, bytes], raw: bytes | None = None) -> Entries:
    index = raw if raw is not None else b"".join(json.dumps(v).encode() + b"\n" for v in lines)
    listed: list[tuple[str, Iterator[bytes]]] = [("files/index.jsonl", iter([index]))]
    listed += [(path, iter([content])) for path, content in entries]
    return Entries(iter(listed))


BAD: dict[str, tuple[list[Any], list[tuple[str, bytes]], str]] = {
    "not an object": (
        [ROOT, ["a.txt"]],
        [],
        "line 2 of files/index.jsonl is not an object",
    ),
    "no root first": (
        [a_file()],
        [],
        'line 1 of files/index.jsonl: the index begins with the root folder (id 1, path "")',
    ),
    "a path outside": (
        [ROOT, a_file(path="../../etc/passwd")],
        [],
        "line 2 of files/index.jsonl: '..' is not a file name",
    ),
    "an absolute path": (
        [ROOT, a_file(path="/etc/passwd")],
        [],
        "line 2 of files/index.jsonl: a path starts inside your files, without a leading '/'",
    ),
    "bytes fewer than the size": (
        [ROOT, a_file(size=5)],
        [("files/tree/a.txt", b"abc")],
        "files/tree/a.txt is 3 bytes, not the 5 the index gives it",
    ),
    "bytes more than the size": (
        [ROOT, a_file(size=2)],
        [("files/tree/a.txt", b"abc")],
        "files/tree/a.txt is longer than the 2 bytes the index gives it",
    ),
    "bytes missing": (
        [ROOT, a_file()],
        [],
        "files/index.jsonl lists files/tree/a.txt, which the export does not hold",
    ),
    "bytes nobody listed": (
        [ROOT],
        [("files/tree/stray.txt", b"abc")],
        "files/tree/stray.txt is not listed in files/index.jsonl",
    ),
    "an entry outside the part": (
        [ROOT, a_file(entry="twin/key.json")],
        [],
        "line 2 of files/index.jsonl: entry is where the file's bytes are, under files/",
    ),
    "a parent not listed": (
        [ROOT, a_file(parent=7)],
        [],
        "line 2 of files/index.jsonl: its parent 7 is no folder listed before it, live",
    ),
    "a path not in its folder": (
        [ROOT, {**ROOT, "id": 2, "parent": 1, "path": "docs"}, a_file(3, "b.txt", parent=2)],
        [],
        "line 3 of files/index.jsonl: 'b.txt' is not in its folder 'docs'",
    ),
    "a path twice": (
        [ROOT, a_file(2), a_file(3, entry="files/other/1")],
        [],
        "line 3 of files/index.jsonl: 'a.txt' is listed twice",
    ),
    "an id twice": (
        [ROOT, a_file(2), a_file(2, "b.txt")],
        [],
        "line 3 of files/index.jsonl: id 2 is listed twice",
    ),
    "a time that is no time": (
        [ROOT, a_file(modified="yesterday")],
        [],
        "line 2 of files/index.jsonl: modified is seconds since 1970, not 'yesterday'",
    ),
    "a negative size": (
        [ROOT, a_file(size=-1)],
        [],
        "line 2 of files/index.jsonl: size is a whole number from 0, not -1",
    ),
    "a bad content token": (
        [ROOT, a_file(content="../x")],
        [],
        "line 2 of files/index.jsonl: content is 32 hex digits, not '../x'",
    ),
    "properties that are not": (
        [ROOT, a_file(properties=["x"])],
        [],
        "line 2 of files/index.jsonl: properties is an object",
    ),
    "copies that differ": (
        [ROOT, a_file(2), a_file(3, "b.txt", content=f"{2:032x}")],
        [("files/tree/a.txt", b"abc"), ("files/tree/b.txt", b"xyz")],
        "files/tree/b.txt does not hold the bytes of the other files with content",
    ),
    "wrong digests": (
        [ROOT, a_file(digests={"md5": "0" * 32, "sha1": "0" * 40})],
        [("files/tree/a.txt", b"abc")],
        "files/tree/a.txt does not have the MD5 and SHA-1 files/index.jsonl gives",
    ),
    "links that are no list": (
        [ROOT, a_file()],
        [("files/shares.json", b'{"id": "x"}')],
        "files/shares.json is not a list of links",
    ),
    "a link to nothing listed": (
        [ROOT],
        [("files/shares.json", b'[{"id": "abc", "node": 9}]')],
        "link 1 of files/shares.json: node 9 is not a file or folder files/index.jsonl lists",
    ),
}


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
async def test_a_damaged_export_is_refused_with_what_is_wrong(tmp_path: Path, case: str) -> None:
    lines, entries, message = BAD[case]
    async with twin_with(tmp_path / "t") as (twin, _):
        part = export_of(lines, *entries).part()
        with pytest.raises(BadInput) as raised:
            await files_of(twin).restore(part)
    assert message in raised.value.message


async def test_an_index_that_is_not_json_lines_is_refused(tmp_path: Path) -> None:
    async with twin_with(tmp_path / "t") as (twin, _):
        part = export_of([], raw=json.dumps(ROOT).encode() + b"\n{not json\n").part()
        with pytest.raises(BadInput, match="line 2 of files/index.jsonl is not JSON"):
            await files_of(twin).restore(part)
        empty = export_of([], raw=b"").part()
        with pytest.raises(BadInput, match="files/index.jsonl is empty"):
            await files_of(twin).restore(empty)
        stray = Entries(iter([("files/tree/a.txt", iter([b"abc"]))])).part()
        with pytest.raises(BadInput, match="does not begin with files/index.jsonl"):
            await files_of(twin).restore(stray)


async def test_files_are_imported_only_into_a_twin_that_holds_none(tmp_path: Path) -> None:
    async with twin_with(tmp_path / "t") as (twin, client):
        owner = await Owner.of(twin, client)
        await owner.put("mine.txt", b"already here")
        part = export_of([ROOT, a_file()], ("files/tree/a.txt", b"abc")).part()
        with pytest.raises(Conflict, match="holds files already"):
            await files_of(twin).restore(part)
        assert (await owner.call("GET", "/api/files/content/mine.txt")).content == b"already here"
        missing = await client.get("/api/files/content/a.txt", headers=owner.headers)
        assert missing.status_code == 404
