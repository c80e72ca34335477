"""The files capability over /api/files: contents of every size come back byte for byte, with
ranges and conditions; folders, moves, copies, the trash, the quota, share links and scopes."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import Running, running_twin
from twin_capabilities.files import Files
from twin_capabilities.files._blobs import CHUNK, INLINE, Damaged

pytestmark = pytest.mark.anyio


def files(tw: Running) -> Files:
    capability = tw.twin.registry.loaded["files"].capability
    assert isinstance(capability, Files)
    return capability


def blob_files(data_dir: Path) -> list[Path]:
    return sorted(p for p in (data_dir / "files").rglob("*") if p.is_file())


@pytest.fixture
async def auth(tw: Running) -> dict[str, str]:
    return await tw.auth("files:*")


async def put(tw: Running, auth: dict[str, str], path: str, content: bytes, **kw: Any) -> Any:
    response = await tw.client.put(
        f"/api/files/content/{path}", content=content, headers=auth, **kw
    )
    assert response.status_code in (200, 201), response.text
    return response.json()


@pytest.mark.parametrize(
    "size", [0, 1, INLINE, INLINE + 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 17]
)
async def test_every_size_comes_back_byte_for_byte(
    tw: Running, auth: dict[str, str], size: int
) -> None:
    content = os.urandom(size)
    entry = await put(tw, auth, "f.bin", content)
    assert entry["size"] == size and entry["kind"] == "file"
    got = await tw.client.get("/api/files/content/f.bin", headers=auth)
    assert got.status_code == 200
    assert got.content == content
    assert got.headers["etag"] == entry["etag"]
    assert got.headers["content-length"] == str(size)
    on_disk = blob_files(tw.settings.data_dir)
    assert len(on_disk) == (size > INLINE)  # small contents live in the database, sealed
    for path in on_disk:
        assert content[:64] not in path.read_bytes() or size < 64


async def test_ranges_conditions_and_head(tw: Running, auth: dict[str, str]) -> None:
    content = os.urandom(2 * CHUNK + 500)
    etag = (await put(tw, auth, "r.bin", content))["etag"]
    url = "/api/files/content/r.bin"
    cases = {
        "bytes=0-9": content[:10],
        f"bytes={CHUNK - 5}-{CHUNK + 5}": content[CHUNK - 5 : CHUNK + 6],
        "bytes=-100": content[-100:],
        f"bytes={2 * CHUNK}-": content[2 * CHUNK :],
    }
    for header, expected in cases.items():
        got = await tw.client.get(url, headers={**auth, "Range": header})
        assert got.status_code == 206, header
        assert got.content == expected, header
    past = await tw.client.get(url, headers={**auth, "Range": f"bytes={len(content)}-"})
    assert past.status_code == 416
    assert past.headers["content-range"] == f"bytes */{len(content)}"
    same = await tw.client.get(url, headers={**auth, "If-None-Match": etag})
    assert same.status_code == 304 and same.content == b""
    head = await tw.client.head(url, headers=auth)
    assert head.status_code == 200 and head.headers["content-length"] == str(len(content))
    changed = head.headers["last-modified"]
    unchanged = await tw.client.get(url, headers={**auth, "If-Modified-Since": changed})
    assert unchanged.status_code == 304 and unchanged.content == b""
    earlier = "Mon, 01 Jan 2024 00:00:00 GMT"
    newer = await tw.client.get(url, headers={**auth, "If-Modified-Since": earlier})
    assert newer.status_code == 200 and newer.content == content
    garbled = await tw.client.get(url, headers={**auth, "If-Modified-Since": "last Tuesday"})
    assert garbled.status_code == 200 and garbled.content == content  # ignored, as RFC 9110 says
    # If-Range with an old ETag: the whole (new) file, not a piece of it
    await put(tw, auth, "r.bin", b"new content")
    stale = await tw.client.get(url, headers={**auth, "Range": "bytes=0-1", "If-Range": etag})
    assert stale.status_code == 200 and stale.content == b"new content"
    download = await tw.client.get(url, params={"download": "1"}, headers=auth)
    assert download.headers["content-disposition"].startswith("attachment;")
    assert "sandbox" in download.headers["content-security-policy"]


async def test_etag_changes_with_content_and_conditions_hold(
    tw: Running, auth: dict[str, str]
) -> None:
    first = await put(tw, auth, "c.txt", b"one")
    second = await put(tw, auth, "c.txt", b"two")
    assert first["etag"] != second["etag"]
    stale = await tw.client.put(
        "/api/files/content/c.txt", content=b"three", headers={**auth, "If-Match": first["etag"]}
    )
    assert stale.status_code == 412 and stale.headers["etag"] == second["etag"]
    create_only = await tw.client.put(
        "/api/files/content/c.txt", content=b"four", headers={**auth, "If-None-Match": "*"}
    )
    assert create_only.status_code == 412
    ok = await tw.client.put(
        "/api/files/content/c.txt",
        content=b"five",
        params={"modified": "1700000000.5"},
        headers={**auth, "If-Match": second["etag"]},
    )
    assert ok.status_code == 200 and ok.json()["modified"] == 1700000000.5  # the file's own time
    for bad in ("yesterday", "nan", "-1", "1e12"):
        refused = await tw.client.put(
            "/api/files/content/c.txt", content=b"six", params={"modified": bad}, headers=auth
        )
        assert refused.status_code == 400 and "seconds since 1970" in refused.text, bad
    assert (await tw.client.get("/api/files/content/c.txt", headers=auth)).content == b"five"


async def test_a_replaced_version_leaves_the_disk(tw: Running, auth: dict[str, str]) -> None:
    """The old content file goes once the new version is committed (in the background, so the
    upload's answer does not wait for the unlink), and it is still readable until then."""
    await put(tw, auth, "big.bin", os.urandom(2 * CHUNK))
    (old,) = blob_files(tw.settings.data_dir)
    newer = os.urandom(2 * CHUNK + 1)
    await put(tw, auth, "big.bin", newer)
    await files(tw).store.blobs.settle()
    (current,) = blob_files(tw.settings.data_dir)
    assert current != old and not old.exists()
    assert (await tw.client.get("/api/files/content/big.bin", headers=auth)).content == newer


async def test_folders_listing_move_rename_copy(tw: Running, auth: dict[str, str]) -> None:
    client = tw.client
    made = await client.post("/api/files/folders", json={"path": "Docs/2026"}, headers=auth)
    assert made.status_code == 409 and "create it first" in made.json()["error"]["message"]
    made = await client.post(
        "/api/files/folders", json={"path": "Docs/2026", "parents": True}, headers=auth
    )
    assert made.status_code == 201
    again = await client.post("/api/files/folders", json={"path": "Docs"}, headers=auth)
    assert again.status_code == 409 and "already exists" in again.json()["error"]["message"]
    for name in ("b.txt", "A.txt", "ü 😀 spaced.md"):
        await put(tw, auth, f"Docs/{name}", name.encode())
    listing = (await client.get("/api/files/tree/Docs", headers=auth)).json()
    assert [e["name"] for e in listing["entries"]] == ["2026", "A.txt", "b.txt", "ü 😀 spaced.md"]
    assert listing["entries"][3]["type"] == "text/markdown"
    root = (await client.get("/api/files/tree/", headers=auth)).json()
    assert root["kind"] == "folder" and [e["name"] for e in root["entries"]] == ["Docs"]

    renamed = await client.post(
        "/api/files/move", json={"from": "Docs/b.txt", "to": "Docs/2026/c.txt"}, headers=auth
    )
    assert renamed.status_code == 200 and renamed.json()["path"] == "Docs/2026/c.txt"
    taken = await client.post(
        "/api/files/move", json={"from": "Docs/A.txt", "to": "Docs/2026/c.txt"}, headers=auth
    )
    assert taken.status_code == 412 and "overwrite" in taken.json()["error"]["message"]
    replaced = await client.post(
        "/api/files/move",
        json={"from": "Docs/A.txt", "to": "Docs/2026/c.txt", "overwrite": True},
        headers=auth,
    )
    assert replaced.status_code == 200
    got = await client.get("/api/files/content/Docs/2026/c.txt", headers=auth)
    assert got.content == b"A.txt"
    trash = (await client.get("/api/files/trash", headers=auth)).json()["items"]
    assert [(i["name"], i["path"]) for i in trash] == [("c.txt", "Docs/2026/c.txt")]

    copied = await client.post("/api/files/copy", json={"from": "Docs", "to": "Copy"}, headers=auth)
    assert copied.status_code == 201
    got = await client.get("/api/files/content/Copy/2026/c.txt", headers=auth)
    assert got.content == b"A.txt"
    await put(tw, auth, "Copy/2026/c.txt", b"changed in the copy only")
    original = await client.get("/api/files/content/Docs/2026/c.txt", headers=auth)
    assert original.content == b"A.txt"
    # the folder moved; the old path is gone, the new one has everything
    moved = await client.post(
        "/api/files/move", json={"from": "Copy", "to": "Docs/Copy"}, headers=auth
    )
    assert moved.status_code == 200
    assert (await client.get("/api/files/tree/Copy", headers=auth)).status_code == 404
    got = await client.get("/api/files/content/Docs/Copy/2026/c.txt", headers=auth)
    assert got.content == b"changed in the copy only"


async def test_copies_share_content_and_usage_counts_it_once(
    tw: Running, auth: dict[str, str]
) -> None:
    content = os.urandom(3 * CHUNK)
    await put(tw, auth, "big.bin", content)
    for n in range(3):
        copy = await tw.client.post(
            "/api/files/copy", json={"from": "big.bin", "to": f"copy{n}.bin"}, headers=auth
        )
        assert copy.status_code == 201
    usage = (await tw.client.get("/api/files/", headers=auth)).json()
    assert usage["used"] == len(content) and usage["files"] == 4
    assert len(blob_files(tw.settings.data_dir)) == 1
    for n in range(3):
        await tw.client.delete(f"/api/files/tree/copy{n}.bin", headers=auth)
    await tw.client.delete("/api/files/trash", headers=auth)
    assert len(blob_files(tw.settings.data_dir)) == 1  # big.bin still holds it
    await tw.client.delete("/api/files/tree/big.bin", headers=auth)
    emptied = await tw.client.delete("/api/files/trash", headers=auth)
    assert emptied.json() == {"removed": 1}
    assert blob_files(tw.settings.data_dir) == []
    assert (await tw.client.get("/api/files/", headers=auth)).json()["used"] == 0


async def test_trash_restore_forget_and_purge(tw: Running, auth: dict[str, str]) -> None:
    client = tw.client
    await put(tw, auth, "Album/one.jpg", b"1", params={"parents": "1"})
    await put(tw, auth, "Album/two.jpg", b"2")
    gone = await client.delete("/api/files/tree/Album", headers=auth)
    assert gone.status_code == 200
    item = gone.json()
    assert (item["name"], item["kind"], item["size"]) == ("Album", "folder", 2)
    assert item["purge_at"] - item["trashed"] == pytest.approx(30 * 86400)
    assert (await client.get("/api/files/content/Album/one.jpg", headers=auth)).status_code == 404
    usage = (await client.get("/api/files/", headers=auth)).json()
    assert usage["trash"] == {"items": 1, "bytes": 2} and usage["files"] == 0
    # a new Album meanwhile: the old one comes back beside it, not over it
    await client.post("/api/files/folders", json={"path": "Album"}, headers=auth)
    back = await client.post(f"/api/files/trash/{item['id']}/restore", headers=auth)
    assert back.status_code == 200 and back.json()["path"] == "Album (restored)"
    got = await client.get("/api/files/content/Album (restored)/two.jpg", headers=auth)
    assert got.content == b"2"
    assert (await client.get("/api/files/trash", headers=auth)).json()["items"] == []

    first = (await client.delete("/api/files/tree/Album (restored)/one.jpg", headers=auth)).json()
    second = (await client.delete("/api/files/tree/Album (restored)/two.jpg", headers=auth)).json()
    assert (await client.delete(f"/api/files/trash/{first['id']}", headers=auth)).status_code == 204
    again = await client.post(f"/api/files/trash/{first['id']}/restore", headers=auth)
    assert again.status_code == 404
    store = files(tw).store
    assert await store.empty(older_than=second["trashed"] - 1) == 0  # not old enough yet
    store.trash_seconds = 0
    assert await store.purge() == 1
    assert (await client.get("/api/files/trash", headers=auth)).json()["items"] == []


async def test_the_trash_empties_itself_after_trash_days(tmp_path: Path) -> None:
    """--trash-days says how long the trash keeps things; the twin purges on its own (when it
    starts and every six hours), content files included, with no request asking it to."""
    home = tmp_path / "twin"
    async with running_twin(home, trash_days=7) as tw:
        auth = await tw.auth("files:*")
        await put(tw, auth, "old.bin", os.urandom(2 * CHUNK))
        await put(tw, auth, "kept.txt", b"not deleted")
        item = (await tw.client.delete("/api/files/tree/old.bin", headers=auth)).json()
        assert item["purge_at"] - item["trashed"] == pytest.approx(7 * 86400)
        assert len(blob_files(home)) == 1
    async with running_twin(home, trash_days=0.5 / 86400) as tw:  # half a second
        auth = await tw.auth("files:*")
        listed = (await tw.client.get("/api/files/trash", headers=auth)).json()["items"]
        assert [i["purge_at"] for i in listed] in ([], [pytest.approx(item["trashed"] + 0.5)])
        while time.time() <= item["trashed"] + 0.5:  # the item's age passes the setting
            await asyncio.sleep(0.05)
    async with running_twin(home, trash_days=0.5 / 86400) as tw:
        auth = await tw.auth("files:*")
        deadline = time.monotonic() + 10
        while (await tw.client.get("/api/files/trash", headers=auth)).json()["items"]:
            assert time.monotonic() < deadline, "the trash was not purged at start-up"
            await asyncio.sleep(0.02)
        assert blob_files(home) == []
        usage = (await tw.client.get("/api/files/", headers=auth)).json()
        assert usage["used"] == len(b"not deleted") and usage["trash"]["items"] == 0
        kept = await tw.client.get("/api/files/content/kept.txt", headers=auth)
        assert kept.content == b"not deleted"


async def test_a_file_restored_after_its_folder_went_lands_in_the_root(
    tw: Running, auth: dict[str, str]
) -> None:
    await put(tw, auth, "Old/note.txt", b"keep me", params={"parents": "1"})
    note = (await tw.client.delete("/api/files/tree/Old/note.txt", headers=auth)).json()
    folder = (await tw.client.delete("/api/files/tree/Old", headers=auth)).json()
    await tw.client.delete(f"/api/files/trash/{folder['id']}", headers=auth)
    back = await tw.client.post(f"/api/files/trash/{note['id']}/restore", headers=auth)
    assert back.status_code == 200 and back.json()["path"] == "note.txt"
    got = await tw.client.get("/api/files/content/note.txt", headers=auth)
    assert got.content == b"keep me"


async def test_quota_refuses_with_the_numbers_and_keeps_what_was_there(tmp_path: Path) -> None:
    async with running_twin(tmp_path / "small", files_quota=3 * CHUNK) as tw:
        auth = await tw.auth("files:*")
        await put(tw, auth, "keep.bin", os.urandom(2 * CHUNK))
        before = blob_files(tw.settings.data_dir)
        up_front = await tw.client.put(
            "/api/files/content/big.bin", content=os.urandom(2 * CHUNK), headers=auth
        )
        assert up_front.status_code == 507
        message = up_front.json()["error"]["message"]
        assert "2 MiB" in message and "1 MiB is left" in message and "trash" in message

        async def stream() -> AsyncIterator[bytes]:
            for _ in range(4):
                yield os.urandom(CHUNK // 2)

        streamed = await tw.client.put("/api/files/content/big.bin", content=stream(), headers=auth)
        assert streamed.status_code == 507
        assert blob_files(tw.settings.data_dir) == before
        listing = (await tw.client.get("/api/files/tree/", headers=auth)).json()
        assert [e["name"] for e in listing["entries"]] == ["keep.bin"]
        assert (await tw.client.get("/api/files/", headers=auth)).json()["quota"] == 3 * CHUNK


async def test_one_writer_per_path_at_a_time(tw: Running, auth: dict[str, str]) -> None:
    release = asyncio.Event()

    async def slow() -> AsyncIterator[bytes]:
        yield b"first writer, "
        await release.wait()
        yield b"done"

    first = asyncio.create_task(
        tw.client.put("/api/files/content/same.txt", content=slow(), headers=auth)
    )
    store = files(tw).store
    while "same.txt" not in store._writing:
        await asyncio.sleep(0.005)
    second = await tw.client.put("/api/files/content/same.txt", content=b"second", headers=auth)
    assert second.status_code == 423
    assert "being written" in second.json()["error"]["message"]
    release.set()
    assert (await first).status_code == 201
    got = await tw.client.get("/api/files/content/same.txt", headers=auth)
    assert got.content == b"first writer, done"


async def test_a_body_cut_short_leaves_nothing(tw: Running, auth: dict[str, str]) -> None:
    await put(tw, auth, "doc.bin", b"version one")

    async def broken() -> AsyncIterator[bytes]:
        yield os.urandom(CHUNK + 10)
        yield os.urandom(CHUNK)
        raise httpx.ReadError("the client went away")

    with pytest.raises(httpx.ReadError):
        await tw.client.put("/api/files/content/doc.bin", content=broken(), headers=auth)
    with pytest.raises(httpx.ReadError):
        await tw.client.put("/api/files/content/new.bin", content=broken(), headers=auth)
    assert blob_files(tw.settings.data_dir) == []
    got = await tw.client.get("/api/files/content/doc.bin", headers=auth)
    assert got.content == b"version one"
    assert (await tw.client.get("/api/files/tree/new.bin", headers=auth)).status_code == 404

    async def short() -> AsyncIterator[bytes]:
        yield b"12345"

    cut = await tw.client.put(
        "/api/files/content/doc.bin", content=short(), headers={**auth, "Content-Length": "10"}
    )
    assert cut.status_code == 400 and "ended after 5 of its 10 bytes" in cut.text
    assert (
        await tw.client.get("/api/files/content/doc.bin", headers=auth)
    ).content == b"version one"


async def test_scopes(tw: Running) -> None:
    reader = {"Authorization": f"Bearer {await tw.token('files:read')}"}
    writer = {"Authorization": f"Bearer {await tw.token('files:write')}"}
    assert (await tw.client.get("/api/files/tree/", headers=reader)).status_code == 200
    refused = await tw.client.put("/api/files/content/x.txt", content=b"x", headers=reader)
    assert refused.status_code == 403 and "files:write" in refused.json()["error"]["message"]
    assert (
        await tw.client.put("/api/files/content/x.txt", content=b"x", headers=writer)
    ).status_code == 201
    share = await tw.client.post("/api/files/shares", json={"path": "x.txt"}, headers=writer)
    assert share.status_code == 403 and "files:share" in share.json()["error"]["message"]
    nobody = await tw.client.get("/api/files/tree/")
    assert nobody.status_code == 401


async def test_share_links(tw: Running, auth: dict[str, str]) -> None:
    client = tw.client
    await client.put(
        "/api/profile/",
        json={"display_name": "Ada <Lovelace>", "bio": ""},
        headers=await tw.auth("profile:write"),
    )
    content = os.urandom(CHUNK + 3)
    await put(tw, auth, "Trip/photo <1>.jpg", content, params={"parents": "1"})
    await put(tw, auth, "Trip/Day 2/notes.txt", b"day two", params={"parents": "1"})
    made = await client.post(
        "/api/files/shares", json={"path": "Trip/photo <1>.jpg", "max_downloads": 2}, headers=auth
    )
    assert made.status_code == 201
    share = made.json()
    assert share["expires"] - share["created"] == pytest.approx(7 * 86400)
    assert share["qr"].startswith("data:image/svg+xml")
    link = share["url"].removeprefix("http://localhost:8470")
    page = await client.get(link)
    assert page.status_code == 200
    assert "Ada &lt;Lovelace&gt; shared a file with you" in page.text
    assert "photo &lt;1&gt;.jpg" in page.text and "did:key" not in page.text
    for _ in range(2):
        got = await client.get(link + "/download")
        assert got.status_code == 200 and got.content == content
        assert got.headers["content-disposition"].startswith("attachment;")
    used_up = await client.get(link + "/download")
    assert used_up.status_code == 410 and "used up" in used_up.text

    folder = (await client.post("/api/files/shares", json={"path": "Trip"}, headers=auth)).json()
    folder_link = folder["url"].removeprefix("http://localhost:8470")
    listing = await client.get(folder_link)
    assert "shared a folder" in listing.text and "Day 2" in listing.text
    inner = await client.get(folder_link + "/download", params={"path": "Day 2/notes.txt"})
    assert inner.content == b"day two"
    escape = await client.get(folder_link + "/download", params={"path": "../Trip/x"})
    assert escape.status_code == 400 and "That did not work" in escape.text
    assert "&#39;..&#39; is not a file name" in escape.text
    folder_as_file = await client.get(folder_link + "/download", params={"path": "Day 2"})
    assert folder_as_file.status_code == 409 and "is a folder" in folder_as_file.text
    listed = (await client.get("/api/files/shares", headers=auth)).json()["items"]
    assert {s["id"] for s in listed} == {share["id"], folder["id"]}
    assert (
        await client.delete(f"/api/files/shares/{folder['id']}", headers=auth)
    ).status_code == 204
    revoked = await client.get(folder_link)
    assert revoked.status_code == 410 and "revoked" in revoked.text
    assert (await client.get("/s/not-a-link-at-all-00000000")).status_code == 404

    brief = (
        await client.post(
            "/api/files/shares", json={"path": "Trip/Day 2", "days": 0.000001}, headers=auth
        )
    ).json()
    await asyncio.sleep(0.1)  # the link's whole life is 0.09 s
    expired = await client.get(brief["url"].removeprefix("http://localhost:8470"))
    assert expired.status_code == 410 and "expired" in expired.text
    await client.delete("/api/files/tree/Trip", headers=auth)
    for bad in ({"path": "Trip"}, {"path": "", "days": 1}, {"path": "x", "days": 400}):
        assert (await client.post("/api/files/shares", json=bad, headers=auth)).status_code in (
            400,
            404,
        )


async def test_damaged_content_is_refused_not_served(tw: Running, auth: dict[str, str]) -> None:
    content = os.urandom(2 * CHUNK)
    await put(tw, auth, "precious.bin", content)
    (path,) = blob_files(tw.settings.data_dir)
    data = bytearray(path.read_bytes())
    data[CHUNK + 100] ^= 1
    path.write_bytes(bytes(data))
    store = files(tw).store
    assert await store.check() == []  # the size is right; the damage shows when read
    entry = await store.stat("precious.bin")
    with pytest.raises(Damaged):
        async for _ in store.read(entry):
            pass
    # Over HTTP: damage in a later chunk cuts the body short (the app raises, no bytes of it
    # are sent); a range that starts in the damaged chunk is refused before any header.
    with pytest.raises(Damaged):
        await tw.client.get("/api/files/content/precious.bin", headers=auth)
    refused = await tw.client.get(
        "/api/files/content/precious.bin", headers={**auth, "Range": f"bytes={CHUNK}-"}
    )
    assert refused.status_code == 500
    assert refused.json()["error"]["code"] == "damaged"
    assert "damaged on the twin's disk" in refused.json()["error"]["message"]
    intact = await tw.client.get(
        "/api/files/content/precious.bin", headers={**auth, "Range": f"bytes=0-{CHUNK - 1}"}
    )
    assert intact.status_code == 206 and intact.content == content[:CHUNK]
    path.write_bytes(bytes(data[:-10]))
    assert any("bytes, not" in p for p in await store.check())
    path.unlink()
    assert any("missing" in p for p in await store.check())


async def test_what_was_read_lately_never_outlives_a_change(
    tw: Running, auth: dict[str, str]
) -> None:
    """Small files are kept decrypted after a read or write; every change must show at once."""
    client = tw.client

    async def get(path: str) -> httpx.Response:
        return await client.get(f"/api/files/content/{path}", headers=auth)

    await put(tw, auth, "Box/a.txt", b"one", params={"parents": "1"})
    assert (await get("Box/a.txt")).content == b"one"
    await put(tw, auth, "Box/a.txt", b"two")
    assert (await get("Box/a.txt")).content == b"two"
    await client.post("/api/files/move", json={"from": "Box", "to": "Crate"}, headers=auth)
    assert (await get("Box/a.txt")).status_code == 404
    assert (await get("Crate/a.txt")).content == b"two"
    item = (await client.delete("/api/files/tree/Crate/a.txt", headers=auth)).json()
    assert (await get("Crate/a.txt")).status_code == 404
    await client.post(f"/api/files/trash/{item['id']}/restore", headers=auth)
    assert (await get("Crate/a.txt")).content == b"two"
    await client.post("/api/files/copy", json={"from": "Crate/a.txt", "to": "b.txt"}, headers=auth)
    await put(tw, auth, "b.txt", b"three")
    assert (await get("Crate/a.txt")).content == b"two" and (await get("b.txt")).content == b"three"
