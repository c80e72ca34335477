"""What `twin export` takes of profile, contacts, storage and the example guestbook: every item
the owner put in, with its values in clear, in the files docs/export-format.md describes; in
the plain folder and in the encrypted archive alike, and in pages for long namespaces."""

from __future__ import annotations

import base64
import io
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import tiny_png
from test_peers_core import twin_with
from twin_capabilities.storage import _export as storage_export

from twin.archive import ArchiveReader, ArchiveWriter
from twin.core import Twin
from twin.export import Export, Folder
from twin.identity import Identity, verify
from twin.peers import Message, address_hint

pytestmark = pytest.mark.anyio
JSON = {"Content-Type": "application/json"}
BREAD = {"flour": "500 g", "tags": ["sour"]}


async def auth(twin: Twin, *scopes: str) -> dict[str, str]:
    _, secret = await twin.tokens.create(frozenset(scopes), "test")
    return {"Authorization": f"Bearer {secret}"}


async def export_open(twin: Twin, capability: str, root: Path) -> Path:
    """One capability's part of `twin export --open`, into ``root``; its folder."""
    folder = Folder(root, twin.require_identity(), created=0)
    out = Export(folder, capability, open=True)
    await twin.registry.loaded[capability].capability.export(out)
    folder.close()
    return root / capability


def lines(path: Path) -> list[Any]:
    return [json.loads(line) for line in path.read_text("utf-8").splitlines()]


def files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


@asynccontextmanager
async def a_twin(tmp_path: Path) -> AsyncIterator[tuple[Twin, httpx.AsyncClient]]:
    async with twin_with(tmp_path / "t") as (twin, client):
        yield twin, client


# profile


async def test_the_profile_and_its_picture_are_exported_as_set(tmp_path: Path) -> None:
    async with a_twin(tmp_path) as (twin, client):
        headers = await auth(twin, "profile:*")
        written = await client.put(
            "/api/profile/",
            json={"display_name": "Ada Lovelace", "bio": "Engines,\nand poetry."},
            headers=headers,
        )
        assert written.status_code == 200, written.text
        png = tiny_png()
        pictured = await client.put(
            "/api/profile/avatar", content=png, headers={**headers, "Content-Type": "image/png"}
        )
        assert pictured.status_code == 200, pictured.text
        folder = await export_open(twin, "profile", tmp_path / "out")
    assert files(folder) == {"profile.json", "avatar.png"}
    assert (folder / "avatar.png").read_bytes() == png
    profile = json.loads((folder / "profile.json").read_text())
    assert profile["display_name"] == "Ada Lovelace"
    assert profile["bio"] == "Engines,\nand poetry."
    assert profile["updated"] == written.json()["updated"]
    assert profile["avatar"]["file"] == "avatar.png"
    assert profile["avatar"]["media_type"] == "image/png"
    assert profile["avatar"]["updated"] >= profile["updated"]
    assert profile["public"] == ["display_name", "bio", "avatar"]


async def test_a_profile_never_set_is_exported_empty_without_a_picture(tmp_path: Path) -> None:
    async with a_twin(tmp_path) as (twin, _):
        folder = await export_open(twin, "profile", tmp_path / "out")
    assert files(folder) == {"profile.json"}
    profile = json.loads((folder / "profile.json").read_text())
    assert profile == {
        "display_name": "",
        "bio": "",
        "updated": None,
        "avatar": None,
        "public": ["display_name", "bio", "avatar"],
    }


# storage


async def put(
    client: httpx.AsyncClient, headers: dict[str, str], path: str, body: Any
) -> httpx.Response:
    # compact, as JSON.stringify writes it
    content = body if isinstance(body, bytes) else json.dumps(body, separators=(",", ":")).encode()
    response = await client.put(
        f"/api/storage/{path}", content=content, headers={**headers, **JSON}
    )
    assert response.status_code in (200, 201), response.text
    return response


async def test_every_namespace_and_document_is_exported_with_its_versions(
    tmp_path: Path,
) -> None:
    async with a_twin(tmp_path) as (twin, client):
        headers = await auth(twin, "storage:*")
        await put(client, headers, "notes/docs/2026/todo", {"text": "buy milk", "done": False})
        spaced = b'{ "text" : "as I typed it",\n  "n": 1.50 }'
        await put(client, headers, "notes/docs/spaced", spaced)
        await put(client, headers, "notes/docs/gone", {"text": "soon deleted"})
        await put(client, headers, "notes/docs/2026/todo", {"text": "buy milk", "done": True})
        deleted = await client.delete("/api/storage/notes/docs/gone", headers=headers)
        assert deleted.status_code in (200, 204), deleted.text
        await put(client, headers, "recipes/docs/bread", BREAD)
        space = twin.registry.loaded["storage"].capability.namespace("notes")  # type: ignore[attr-defined]
        todo = await space.get("2026/todo")
        listed = await space.list(bodies=True)
        usage = await space.usage()
        folder = await export_open(twin, "storage", tmp_path / "out")
    assert files(folder) == {
        "namespaces.json",
        "documents/notes.jsonl",
        "documents/recipes.jsonl",
        "deleted/notes.jsonl",
    }
    namespaces = json.loads((folder / "namespaces.json").read_text())
    assert namespaces["quota"] == twin.settings.storage_quota
    assert namespaces["namespaces"] == [
        {
            "name": "notes",
            "last_seq": 5,
            "documents": 2,
            "bytes": usage.bytes,
            "deleted": 1,
            "forgotten": 0,
        },
        {
            "name": "recipes",
            "last_seq": 1,
            "documents": 1,
            "bytes": len("bread") + len(json.dumps(BREAD, separators=(",", ":"))),
            "deleted": 0,
            "forgotten": 0,
        },
    ]
    notes = lines(folder / "documents" / "notes.jsonl")
    assert [d["key"] for d in notes] == [d.key for d in listed.items] == ["2026/todo", "spaced"]
    first, second = notes
    assert first["body"] == {"text": "buy milk", "done": True} and "text" not in first
    assert (first["version"], first["updated"]) == (todo.version, todo.updated) == (4, todo.updated)
    assert first["created"] < first["updated"]
    assert second["body"] == {"text": "as I typed it", "n": 1.5}
    assert second["text"].encode() == spaced  # the bytes a client wrote come back the same
    assert second["version"] == 2 and second["created"] == second["updated"]
    gone = lines(folder / "deleted" / "notes.jsonl")
    assert [(d["key"], d["version"]) for d in gone] == [("gone", 5)]
    assert gone[0]["created"] < gone[0]["deleted"]
    recipes = lines(folder / "documents" / "recipes.jsonl")
    assert [(d["key"], d["body"], d["version"]) for d in recipes] == [("bread", BREAD, 1)]
    assert "text" not in recipes[0]


async def test_a_long_namespace_is_read_in_pages_and_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(storage_export, "PAGE_ROWS", 7)
    monkeypatch.setattr(storage_export, "PAGE_BYTES", 600)  # some pages end on bytes
    reads = 0
    real_page = storage_export._page

    def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal reads
        reads += 1
        return real_page(*args, **kwargs)

    monkeypatch.setattr(storage_export, "_page", counted)
    async with a_twin(tmp_path) as (twin, _):
        space = twin.registry.loaded["storage"].capability.namespace("many")  # type: ignore[attr-defined]
        from twin_capabilities.storage import Delete, Put

        for start in range(0, 250, 50):
            await space.batch(
                [
                    Put(f"n/{i:04}", {"i": i, "pad": "x" * (i % 90)})
                    for i in range(start, start + 50)
                ]
            )
        await space.batch([Delete(f"n/{i:04}") for i in range(0, 250, 10)])
        folder = await export_open(twin, "storage", tmp_path / "out")
    kept = [i for i in range(250) if i % 10]
    documents = lines(folder / "documents" / "many.jsonl")
    assert [d["key"] for d in documents] == [f"n/{i:04}" for i in kept]
    assert [d["body"] for d in documents] == [{"i": i, "pad": "x" * (i % 90)} for i in kept]
    deleted = lines(folder / "deleted" / "many.jsonl")
    assert [d["key"] for d in deleted] == [f"n/{i:04}" for i in range(0, 250, 10)]
    assert [d["version"] for d in deleted] == list(range(251, 276))
    assert reads > (225 + 25) / 7  # it went a page at a time


# contacts


def request(who: Identity, token: str, name: str, note: str = "") -> Message:
    body = {
        "name": name,
        "note": note,
        "token": token,
        "address": address_hint(who, ["http://127.0.0.1:9"]),
    }
    now = int(time.time())
    return Message(f"id-{who.did[-8:]}", "contacts.request", who.did, now, now + 60, body, False)


def signed(by: Identity, **fields: Any) -> dict[str, Any]:
    statement = {"v": 1, "by": by.did, "issued": int(time.time()), **fields}
    return {**statement, "sig": by.sign(statement)}


def holds(statement: dict[str, Any]) -> bool:
    verify(statement["by"], {k: v for k, v in statement.items() if k != "sig"}, statement["sig"])
    return True


async def test_every_contact_vouch_revocation_and_invite_is_exported(tmp_path: Path) -> None:
    ben, cat, dan = Identity.generate(), Identity.generate(), Identity.generate()
    async with a_twin(tmp_path) as (twin, client):
        contacts: Any = twin.registry.loaded["contacts"].capability
        headers = await auth(twin, "contacts:*")
        made = await client.post(
            "/api/contacts/invites", json={"label": "for Ben"}, headers=headers
        )
        code = made.json()["code"]
        token = json.loads(base64.urlsafe_b64decode(code[12:] + "=" * (-len(code[12:]) % 4)))
        open_invite = await client.post(
            "/api/contacts/invites", json={"label": "for anyone", "days": 2}, headers=headers
        )
        await contacts._on_request(request(ben, token["token"], "Ben"))
        await contacts._on_request(request(cat, "", "Cat", note="We met in Lisbon"))
        await contacts._on_request(request(dan, "", "Dan"))
        listed = (await client.get("/api/contacts/", headers=headers)).json()["contacts"]
        ids = {p["did"]: p["id"] for p in listed}
        accepted = await client.post(f"/api/contacts/{ids[ben.did]}/accept", headers=headers)
        assert accepted.status_code == 200, accepted.text
        marked = await client.patch(
            f"/api/contacts/{ids[ben.did]}",
            json={
                "name": "Benjamin",
                "note": "Baker.\nOwes me a loaf.",
                "trust": 3,
                "verified": True,
            },
            headers=headers,
        )
        assert marked.status_code == 200, marked.text
        blocked = await client.post(f"/api/contacts/{ids[dan.did]}/block", headers=headers)
        assert blocked.status_code == 200, blocked.text
        mine = []
        for topic in ("bakes bread", "fixes bikes"):
            vouched = await client.post(
                f"/api/contacts/{ids[ben.did]}/vouches",
                json={"topic": topic, "level": 2, "comment": "Seen it."},
                headers=headers,
            )
            assert vouched.status_code == 201, vouched.text
            mine.append(vouched.json())
        revoked = await client.delete(f"/api/contacts/vouches/{mine[1]['id']}", headers=headers)
        assert revoked.status_code == 200, revoked.text
        theirs = signed(
            ben,
            type="contacts.vouch",
            id="b1",
            about=cat.did,
            topic="knows python",
            level=1,
            comment="",
        )
        withdrawn = signed(ben, type="contacts.revoke", id="b3", vouch="b2")
        assert await contacts.vouches.take([theirs, withdrawn], ben.did) == 2
        folder = await export_open(twin, "contacts", tmp_path / "out")
    assert files(folder) == {"contacts.jsonl", "vouches.jsonl", "revocations.jsonl", "invites.json"}

    people = {p["did"]: p for p in lines(folder / "contacts.jsonl")}
    assert set(people) == {ben.did, cat.did, dan.did}
    b = people[ben.did]
    assert (b["status"], b["name"], b["their_name"]) == ("connected", "Benjamin", "Ben")
    assert (b["note"], b["trust"], b["trust_label"], b["verified"]) == (
        "Baker.\nOwes me a loaf.",
        3,
        "a lot",
        True,
    )
    assert b["invite"] == "for Ben" and b["id"] == ids[ben.did]
    assert b["created"] <= b["updated"] and b["hint"] is None
    c = people[cat.did]
    assert (c["status"], c["request_note"], c["invite"]) == ("incoming", "We met in Lisbon", None)
    assert c["hint"]["urls"] == ["http://127.0.0.1:9"]  # their signed address, while asking
    d = people[dan.did]
    assert (d["status"], d["was"]) == ("blocked", "incoming")

    vouches = lines(folder / "vouches.jsonl")
    assert [v["id"] for v in vouches] == [mine[0]["id"], "b1"]
    assert vouches == [mine[0], theirs]  # as signed: they still verify
    assert all(holds(v) for v in vouches)

    revocations = lines(folder / "revocations.jsonl")
    assert [r["statement"] for r in revocations] == [revoked.json(), withdrawn]
    assert all(holds(r["statement"]) and r["revoked"] > 0 for r in revocations)

    invites = json.loads((folder / "invites.json").read_text())
    assert [(i["id"], i["label"]) for i in invites] == [
        (made.json()["id"], "for Ben"),
        (open_invite.json()["id"], "for anyone"),
    ]
    assert invites[0]["used"] is not None and invites[1]["used"] is None
    assert invites[1]["expires"] == open_invite.json()["expires"]
    import hashlib

    assert invites[0]["token_sha256"] == hashlib.sha256(token["token"].encode()).hexdigest()


# the example plugin


async def test_the_example_plugins_guestbook_travels(tmp_path: Path) -> None:
    async with a_twin(tmp_path) as (twin, client):
        assert "guestbook" in twin.registry.loaded, "pip install -e ./examples/hello-twin"
        headers = await auth(twin, "guestbook:sign")
        signed_in = []
        for author, text in [("Wil", "Lovely twin!"), ("Zoë", "Back again, ünïcode too")]:
            made = await client.post(
                "/api/guestbook/entries", json={"author": author, "text": text}, headers=headers
            )
            assert made.status_code == 201, made.text
            signed_in.append(made.json())
        folder = await export_open(twin, "guestbook", tmp_path / "out")
    assert files(folder) == {"entries.jsonl"}
    assert lines(folder / "entries.jsonl") == signed_in


# the encrypted archive


async def test_the_encrypted_archive_holds_the_same_entries(tmp_path: Path) -> None:
    async with a_twin(tmp_path) as (twin, client):
        await client.put(
            "/api/profile/", json={"display_name": "Ada"}, headers=await auth(twin, "profile:*")
        )
        headers = await auth(twin, "storage:*")
        await put(client, headers, "notes/docs/one", {"n": 1})
        await client.post(
            "/api/guestbook/entries",
            json={"author": "Wil", "text": "hi"},
            headers=await auth(twin, "guestbook:sign"),
        )
        identity = twin.require_identity()
        buffer = io.BytesIO()
        writer = ArchiveWriter(buffer, identity)
        parts = ("contacts", "guestbook", "profile", "storage")
        for capability in parts:
            out = Export(writer, capability, open=False)
            await twin.registry.loaded[capability].capability.export(out)
        writer.close()
        folder = await export_open(twin, "storage", tmp_path / "plain")
    assert b"notes" not in buffer.getvalue() and b"Ada" not in buffer.getvalue()
    buffer.seek(0)
    reader = ArchiveReader(buffer, seed=identity.seed)
    found = {path: b"".join(chunks) for path, chunks in reader.entries()}
    assert reader.manifest is not None
    assert set(found) == {
        "contacts/contacts.jsonl",
        "contacts/vouches.jsonl",
        "contacts/revocations.jsonl",
        "contacts/invites.json",
        "guestbook/entries.jsonl",
        "profile/profile.json",
        "storage/namespaces.json",
        "storage/documents/notes.jsonl",
    }
    assert json.loads(found["profile/profile.json"])["display_name"] == "Ada"
    assert json.loads(found["guestbook/entries.jsonl"])["text"] == "hi"
    assert found["storage/documents/notes.jsonl"] == (folder / "documents/notes.jsonl").read_bytes()
    assert found["contacts/contacts.jsonl"] == b""
