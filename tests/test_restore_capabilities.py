"""What `twin import` puts back of profile, contacts, storage and the example guestbook: through
the encrypted archive into a new twin with the same keys, everything the owner and their
clients see through each capability's own API is as it was (versions, times, ids, change feeds,
invites and vouches); a damaged export is refused with the file and line that is wrong, a
tampered vouch by its signature, and nothing is imported over data a twin already holds."""

from __future__ import annotations

import base64
import io
import json
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import tiny_png
from test_export_capabilities import auth, export_open, files, request, signed
from test_peers_core import twin_with
from twin_capabilities.storage import Delete, Namespace, Put

from twin import BadInput, Conflict, Gone, QuotaExceeded
from twin.archive import ArchiveReader, ArchiveWriter
from twin.core import Twin, initialize
from twin.export import Entries, Export
from twin.identity import Identity
from twin.peers import seal
from twin.settings import Settings
from twin.transfer import export_core, read_identity, restore_twin

pytestmark = pytest.mark.anyio
PNG = tiny_png()


def capability(twin: Twin, name: str) -> Any:
    return twin.registry.loaded[name].capability


def archive_of(twin: Twin, *parts: str) -> Any:
    """An encrypted export of the twin's own part and ``parts``, as `twin export` writes it."""

    async def write() -> bytes:
        buffer = io.BytesIO()
        writer = ArchiveWriter(buffer, twin.require_identity())
        await export_core(twin, Export(writer, "twin", open=False))
        for part in parts:
            await capability(twin, part).export(Export(writer, part, open=False))
        writer.close()
        return buffer.getvalue()

    return write()


@asynccontextmanager
async def imported(
    tmp_path: Path, identity: Identity, archive: bytes
) -> AsyncIterator[tuple[Twin, httpx.AsyncClient]]:
    """A new twin with the same keys, filled from ``archive`` as `twin import` fills it."""
    initialize(Settings(data_dir=tmp_path / "b", rate_limit=0), identity=identity)
    async with twin_with(tmp_path / "b") as (twin, client):
        entries = Entries(ArchiveReader(io.BytesIO(archive), seed=identity.seed).entries())
        core, did, _ = await read_identity(entries)
        assert did == identity.did
        await restore_twin(twin, entries, core)
        assert entries.folder() is None  # all read, the manifest checked
        yield twin, client


def same_export(twin_a_folder: Path, twin_b_folder: Path) -> None:
    """Two plain exports of one capability hold the same files, byte for byte."""
    assert files(twin_a_folder) == files(twin_b_folder)
    for name in files(twin_a_folder):
        assert (twin_a_folder / name).read_bytes() == (twin_b_folder / name).read_bytes(), name


def part_of(entries: dict[str, bytes]) -> Any:
    """The first part of an export that holds ``entries`` (path: bytes), in that order."""
    listed: list[tuple[str, Iterator[bytes]]] = [(p, iter([b])) for p, b in entries.items()]
    return Entries(iter(listed)).part()


def jsonl(*rows: Any) -> bytes:
    return b"".join(json.dumps(row).encode() + b"\n" for row in rows)


async def refused(twin: Twin, name: str, entries: dict[str, bytes]) -> str:
    with pytest.raises(BadInput) as raised:
        await capability(twin, name).restore(part_of(entries))
    return raised.value.message


# profile


async def profile_seen(client: httpx.AsyncClient, twin: Twin) -> dict[str, Any]:
    headers = await auth(twin, "profile:*")
    picture = await client.get("/api/profile/avatar")
    return {
        "profile": (await client.get("/api/profile/", headers=headers)).json(),
        "picture": (picture.status_code, picture.content, picture.headers.get("content-type")),
        "public": await capability(twin, "profile").public_document(),
    }


async def test_the_profile_and_its_picture_come_back_as_they_were(tmp_path: Path) -> None:
    async with twin_with(tmp_path / "a") as (twin_a, client_a):
        headers = await auth(twin_a, "profile:*")
        await client_a.put(
            "/api/profile/",
            json={"display_name": "Ada Lovelace", "bio": "Engines,\nand poetry."},
            headers=headers,
        )
        await client_a.put(
            "/api/profile/avatar", content=PNG, headers={**headers, "Content-Type": "image/png"}
        )
        before = await profile_seen(client_a, twin_a)
        archive = await archive_of(twin_a, "profile")
        plain_a = await export_open(twin_a, "profile", tmp_path / "plain-a")
        identity = twin_a.require_identity()
    async with imported(tmp_path, identity, archive) as (twin_b, client_b):
        assert await profile_seen(client_b, twin_b) == before
        assert before["picture"] == (200, PNG, "image/png")
        same_export(plain_a, await export_open(twin_b, "profile", tmp_path / "plain-b"))


async def test_a_profile_never_set_stays_unset(tmp_path: Path) -> None:
    async with twin_with(tmp_path / "a") as (twin_a, client_a):
        before = await profile_seen(client_a, twin_a)
        archive = await archive_of(twin_a, "profile")
        identity = twin_a.require_identity()
    async with imported(tmp_path, identity, archive) as (twin_b, client_b):
        after = await profile_seen(client_b, twin_b)
        assert after == before and after["profile"]["updated"] is None
        assert after["picture"][0] == 404
        written = await client_b.put(
            "/api/profile/", json={"display_name": "Ada"}, headers=await auth(twin_b, "profile:*")
        )
        assert written.json()["display_name"] == "Ada"


PROFILE = {
    "display_name": "Ada",
    "bio": "",
    "updated": 1700000000.5,
    "avatar": {"file": "avatar.png", "media_type": "image/png", "updated": 1700000001.0},
    "public": ["display_name", "bio", "avatar"],
}
BAD_PROFILES: dict[str, tuple[dict[str, bytes], str]] = {
    "not JSON": (
        {"profile/profile.json": b"{not json"},
        "profile/profile.json is not JSON",
    ),
    "a name too long": (
        {"profile/profile.json": json.dumps({**PROFILE, "display_name": "x" * 65}).encode()},
        "profile/profile.json: display_name is text of at most 64 characters",
    ),
    "a control character": (
        {"profile/profile.json": json.dumps({**PROFILE, "bio": "a\x07b", "avatar": None}).encode()},
        "profile/profile.json: bio must not contain control characters",
    ),
    "a picture of no known type": (
        {
            "profile/avatar.png": PNG,
            "profile/profile.json": json.dumps(
                {**PROFILE, "avatar": {**PROFILE["avatar"], "media_type": "image/svg+xml"}}
            ).encode(),
        },
        "profile/profile.json: avatar.media_type is one of image/png",
    ),
    "a picture that is not one": (
        {"profile/avatar.png": b"<svg/>", "profile/profile.json": json.dumps(PROFILE).encode()},
        "profile/profile.json: avatar.png is not a image/png picture",
    ),
    "a picture missing": (
        {"profile/profile.json": json.dumps(PROFILE).encode()},
        "profile/profile.json: avatar.file is avatar.png, the picture the export holds",
    ),
    "a time that is none": (
        {"profile/profile.json": json.dumps({**PROFILE, "updated": "now"}).encode()},
        "profile/profile.json: updated is seconds since 1970, not 'now'",
    ),
    "no profile.json": (
        {"profile/avatar.png": PNG},
        "the profile part holds nothing where profile/profile.json belongs",
    ),
    "something more": (
        {
            "profile/profile.json": json.dumps({**PROFILE, "avatar": None}).encode(),
            "profile/x": b"",
        },
        "profile/x is not part of a profile",
    ),
}


@pytest.mark.parametrize("case", BAD_PROFILES, ids=list(BAD_PROFILES))
async def test_a_damaged_profile_is_refused_with_what_is_wrong(tmp_path: Path, case: str) -> None:
    entries, message = BAD_PROFILES[case]
    async with twin_with(tmp_path / "t") as (twin, client):
        assert message in await refused(twin, "profile", entries)
        assert (await profile_seen(client, twin))["profile"]["updated"] is None  # nothing kept


async def test_a_profile_is_imported_only_into_a_twin_without_one(tmp_path: Path) -> None:
    async with twin_with(tmp_path / "t") as (twin, client):
        headers = await auth(twin, "profile:*")
        await client.put("/api/profile/", json={"display_name": "Mine"}, headers=headers)
        part = part_of({"profile/profile.json": json.dumps({**PROFILE, "avatar": None}).encode()})
        with pytest.raises(Conflict, match="has a profile already"):
            await capability(twin, "profile").restore(part)
        assert (await profile_seen(client, twin))["profile"]["display_name"] == "Mine"


# storage


async def storage_seen(space: Namespace) -> dict[str, Any]:
    """What a client of one namespace sees: every page of its listing (bodies, versions,
    times), the change feed from every ``since`` it may hold, its usage, each document."""
    seen: dict[str, Any] = {"usage": await space.usage()}
    pages, cursor = [], None
    while True:
        page = await space.list(limit=2, bodies=True, cursor=cursor)
        pages.append([(d.key, d.version, d.updated, d.raw) for d in page.items])
        if page.cursor is None:
            break
        cursor = page.cursor
    seen["pages"] = pages
    for since in range(seen["usage"].last_seq + 1):
        try:
            seen[f"since {since}"] = await space.changes(since, bodies=True)
        except Gone:
            seen[f"since {since}"] = "gone"
    for key, *_ in (d for page in pages for d in page):
        seen[f"get {key}"] = await space.get(key)
    return seen


async def fill_storage(storage: Any) -> None:
    notes: Namespace = storage.namespace("notes")
    await notes.put("old/one", {"n": 1})
    await notes.put("old/two", {"n": 2})
    await notes.delete("old/one")
    await notes.delete("old/two")
    await storage.store.purge(older_than=time.time() + 1)  # their deletions are forgotten
    await notes.put("2026/todo", {"text": "buy milk", "done": False})
    await notes.put("spaced", b'{ "text" : "as I typed it",\n  "n": 1.50 }')
    await notes.put("gone", {"text": "soon deleted"})
    await notes.put("2026/todo", {"text": "buy milk", "done": True})
    await notes.delete("gone")
    await notes.put("ünïcode/キー", {"deep": {"a": [1, 2.5, None, "x"]}})
    many: Namespace = storage.namespace("many")
    await many.batch([Put(f"n/{i:03}", {"i": i}) for i in range(30)])
    await many.batch([Delete(f"n/{i:03}") for i in range(0, 30, 7)])


async def test_storage_comes_back_with_its_versions_times_and_change_feed(
    tmp_path: Path,
) -> None:
    async with twin_with(tmp_path / "a") as (twin_a, _):
        storage_a = capability(twin_a, "storage")
        await fill_storage(storage_a)
        before = {n: await storage_seen(storage_a.namespace(n)) for n in ("notes", "many")}
        assert before["notes"]["since 1"] == "gone" and before["notes"]["usage"].last_seq == 10
        archive = await archive_of(twin_a, "storage")
        plain_a = await export_open(twin_a, "storage", tmp_path / "plain-a")
        identity = twin_a.require_identity()
        # what a client does next, on the first twin
        notes_a = storage_a.namespace("notes")
        next_a = [await notes_a.put("gone", {"back": 1}), await notes_a.put("new", {"n": 3})]
    async with imported(tmp_path, identity, archive) as (twin_b, client_b):
        storage_b = capability(twin_b, "storage")
        after = {n: await storage_seen(storage_b.namespace(n)) for n in ("notes", "many")}
        for name in before:
            assert after[name].keys() == before[name].keys()
            for key in before[name]:
                assert after[name][key] == before[name][key], (name, key)
        same_export(plain_a, await export_open(twin_b, "storage", tmp_path / "plain-b"))
        # the same writes get the same versions: a sync client's since still means the same
        notes_b = storage_b.namespace("notes")
        next_b = [await notes_b.put("gone", {"back": 1}), await notes_b.put("new", {"n": 3})]
        assert [(w.version, w.created) for w in next_b] == [(w.version, w.created) for w in next_a]
        headers = await auth(twin_b, "storage:*")
        feed = await client_b.get("/api/storage/notes/changes?since=10", headers=headers)
        assert [(c["key"], c["seq"]) for c in feed.json()["changes"]] == [("gone", 11), ("new", 12)]
        old = await client_b.get("/api/storage/notes/changes?since=2", headers=headers)
        assert old.status_code == 410  # as before the move: those changes are forgotten


def space(name: str = "notes", **more: Any) -> dict[str, Any]:
    return {
        "name": name,
        "last_seq": 3,
        "documents": 1,
        "bytes": len("a") + len('{"n":1}'),
        "deleted": 1,
        "forgotten": 0,
        **more,
    }


DOC = {"key": "a", "version": 3, "created": 1.0, "updated": 2.0, "body": {"n": 1}}
GONE = {"key": "b", "version": 2, "created": 1.0, "deleted": 2.0}


def storage_part(
    spaces: list[Any] | None = None, docs: list[Any] | None = None, gone: list[Any] | None = None
) -> dict[str, bytes]:
    return {
        "storage/namespaces.json": json.dumps(
            {"quota": 1 << 20, "namespaces": [space()] if spaces is None else spaces}
        ).encode(),
        "storage/documents/notes.jsonl": jsonl(*([DOC] if docs is None else docs)),
        "storage/deleted/notes.jsonl": jsonl(*([GONE] if gone is None else gone)),
    }


BAD_STORAGE: dict[str, tuple[dict[str, bytes], str]] = {
    "no namespaces": (
        {"storage/namespaces.json": b"[]"},
        'storage/namespaces.json is not an object with a list of "namespaces"',
    ),
    "a bad namespace name": (
        storage_part([space("Notes!")]),
        "namespace 1 of storage/namespaces.json: namespace 'Notes!' must be a-z",
    ),
    "a counter that is no number": (
        storage_part([space(last_seq="3")]),
        "namespace 1 of storage/namespaces.json: last_seq is a whole number from 0, not '3'",
    ),
    "a line that is not JSON": (
        {**storage_part(), "storage/documents/notes.jsonl": b'{"key": "a",\n'},
        "line 1 of storage/documents/notes.jsonl is not JSON",
    ),
    "a key that is no key": (
        storage_part(docs=[{**DOC, "key": "../up"}]),
        "line 1 of storage/documents/notes.jsonl: the key '../up' has a . or .. segment",
    ),
    "a version past last_seq": (
        storage_part(docs=[{**DOC, "version": 9}]),
        "line 1 of storage/documents/notes.jsonl: version 9 is past the namespace's last_seq",
    ),
    "a body that is no object": (
        storage_part(docs=[{**DOC, "body": [1]}]),
        "line 1 of storage/documents/notes.jsonl: body must be a JSON object",
    ),
    "a text that is another document": (
        storage_part(docs=[{**DOC, "text": '{"n": 2}'}]),
        "line 1 of storage/documents/notes.jsonl: text is not body",
    ),
    "a key twice": (
        storage_part(gone=[{**GONE, "key": "a"}]),
        "line 1 of storage/deleted/notes.jsonl: the key 'a' is listed twice",
    ),
    "a version twice": (
        storage_part(gone=[{**GONE, "version": 3}]),
        "version 3 of the namespace notes is given to two documents",
    ),
    "a deletion without its time": (
        storage_part(gone=[{k: v for k, v in GONE.items() if k != "deleted"}]),
        "line 1 of storage/deleted/notes.jsonl: deleted is seconds since 1970, not None",
    ),
    "counts that do not agree": (
        storage_part(docs=[DOC, {**DOC, "key": "c", "version": 1}]),
        "storage/namespaces.json gives notes 1 documents of 8 bytes and 1 deletions; "
        "the export holds 2 of 16 bytes and 1",
    ),
    "deletions missing": (
        {k: v for k, v in storage_part().items() if "deleted" not in k},
        "the export holds nothing where storage/deleted/notes.jsonl belongs",
    ),
    "a namespace not listed": (
        {**storage_part(), "storage/documents/other.jsonl": b""},
        "storage/documents/other.jsonl belongs to no namespace storage/namespaces.json lists",
    ),
}


@pytest.mark.parametrize("case", BAD_STORAGE, ids=list(BAD_STORAGE))
async def test_damaged_storage_is_refused_with_what_is_wrong(tmp_path: Path, case: str) -> None:
    entries, message = BAD_STORAGE[case]
    async with twin_with(tmp_path / "t") as (twin, _):
        assert message in await refused(twin, "storage", entries)


async def test_a_sound_hand_made_storage_part_is_taken(tmp_path: Path) -> None:
    async with twin_with(tmp_path / "t") as (twin, _):
        await capability(twin, "storage").restore(part_of(storage_part()))
        notes = capability(twin, "storage").namespace("notes")
        got = await notes.get("a")
        assert (got.version, got.updated, got.body) == (3, 2.0, {"n": 1})
        changes = await notes.changes(1)
        assert [(c.key, c.op, c.seq) for c in changes.changes] == [
            ("b", "delete", 2),
            ("a", "put", 3),
        ]


async def test_storage_over_this_twins_quota_is_refused_before_any_is_kept(
    tmp_path: Path,
) -> None:
    async with twin_with(tmp_path / "t", storage_quota=4) as (twin, _):
        with pytest.raises(QuotaExceeded, match="start it with a larger --storage-quota"):
            await capability(twin, "storage").restore(part_of(storage_part()))
        assert await capability(twin, "storage").store.usages() == []


async def test_storage_is_imported_only_into_a_twin_that_holds_none(tmp_path: Path) -> None:
    async with twin_with(tmp_path / "t") as (twin, _):
        mine = capability(twin, "storage").namespace("mine")
        await mine.put("kept", {"mine": True})
        with pytest.raises(Conflict, match="holds storage documents already"):
            await capability(twin, "storage").restore(part_of(storage_part()))
        assert (await mine.get("kept")).body == {"mine": True}
        assert await capability(twin, "storage").namespace("notes").get("a") is None


# contacts


def code_token(code: str) -> str:
    payload = code.removeprefix("twin-invite:")
    return str(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["token"])


async def contacts_seen(twin: Twin, client: httpx.AsyncClient) -> dict[str, Any]:
    """What the owner sees of their contacts: the book, each contact, the invites, their own
    vouches and what their contacts say about everyone. Not how delivery to each goes: the
    messages still queued stay with the old twin (the export holds no outbox)."""
    headers = await auth(twin, "contacts:*")
    listing = (await client.get("/api/contacts/", headers=headers)).json()
    for person in listing["contacts"]:
        del person["delivery"]
    seen: dict[str, Any] = {"listing": listing}
    for person in listing["contacts"]:
        one = (await client.get(f"/api/contacts/{person['id']}", headers=headers)).json()
        del one["delivery"]
        seen[person["did"]] = one
        reputation = await client.get(f"/api/contacts/reputation/{person['did']}", headers=headers)
        seen[f"reputation {person['did']}"] = reputation.json()
    seen["invites"] = (await client.get("/api/contacts/invites", headers=headers)).json()
    seen["vouches"] = (await client.get("/api/contacts/vouches", headers=headers)).json()
    seen["kept invites"] = await capability(twin, "contacts").book.every_invite()
    return seen


async def fill_contacts(twin: Twin, client: httpx.AsyncClient) -> dict[str, Any]:
    """Three people (connected, asking, blocked), vouches made and taken, revocations, and
    invites used and open; the tokens of the invites, by label."""
    ben, cat, dan = Identity.generate(), Identity.generate(), Identity.generate()
    contacts = capability(twin, "contacts")
    headers = await auth(twin, "contacts:*")
    tokens = {}
    for label in ("for Ben", "for anyone", "for Eve"):
        made = await client.post("/api/contacts/invites", json={"label": label}, headers=headers)
        tokens[label] = code_token(made.json()["code"])
    await contacts._on_request(request(ben, tokens["for Ben"], "Ben"))
    await contacts._on_request(request(cat, "", "Cat", note="We met in Lisbon"))
    await contacts._on_request(request(dan, "", "Dan"))
    listed = (await client.get("/api/contacts/", headers=headers)).json()["contacts"]
    ids = {p["did"]: p["id"] for p in listed}
    await client.post(f"/api/contacts/{ids[ben.did]}/accept", headers=headers)
    await client.patch(
        f"/api/contacts/{ids[ben.did]}",
        json={"name": "Benjamin", "note": "Baker.\nOwes me a loaf.", "trust": 3, "verified": True},
        headers=headers,
    )
    await client.post(f"/api/contacts/{ids[dan.did]}/block", headers=headers)
    mine = []
    for topic in ("bakes bread", "fixes bikes"):
        vouched = await client.post(
            f"/api/contacts/{ids[ben.did]}/vouches",
            json={"topic": topic, "level": 2, "comment": "Seen it."},
            headers=headers,
        )
        mine.append(vouched.json())
    await client.delete(f"/api/contacts/vouches/{mine[1]['id']}", headers=headers)
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
    return {"tokens": tokens, "ben": ben, "cat": cat}


async def test_contacts_come_back_and_an_invite_given_out_still_works(tmp_path: Path) -> None:
    async with twin_with(tmp_path / "a") as (twin_a, client_a):
        made = await fill_contacts(twin_a, client_a)
        before = await contacts_seen(twin_a, client_a)
        assert len(before["listing"]["contacts"]) == 3 and len(before["kept invites"]) == 3
        archive = await archive_of(twin_a, "contacts")
        plain_a = await export_open(twin_a, "contacts", tmp_path / "plain-a")
        identity = twin_a.require_identity()
    async with imported(tmp_path, identity, archive) as (twin_b, client_b):
        after = await contacts_seen(twin_b, client_b)
        assert after.keys() == before.keys()
        for key in before:
            assert after[key] == before[key], key
        same_export(plain_a, await export_open(twin_b, "contacts", tmp_path / "plain-b"))
        contacts = capability(twin_b, "contacts")
        # the keys pinned came along: what Ben's twin sends is still taken as Ben's
        ben, cat = made["ben"], made["cat"]
        vouch = signed(
            ben, type="contacts.vouch", id="b4", about=cat.did, topic="bakes", level=1, comment=""
        )
        envelope = seal(ben, identity.did, "contacts.vouches", {"statements": [vouch]}, ttl=600)
        delivered = await client_b.post("/p2p/v1/inbox", json=envelope)
        assert delivered.status_code == 202, delivered.text
        reputation = await client_b.get(
            f"/api/contacts/reputation/{cat.did}", headers=await auth(twin_b, "contacts:read")
        )
        topics = {t["topic"]: t for t in reputation.json()["topics"]}
        assert [v["voucher"] for v in topics["bakes"]["vouches"]] == ["Benjamin"]

        # Eve was given an invite before the move; she uses it after
        eve = Identity.generate()
        assert await contacts.book.holds_invite(made["tokens"]["for Eve"])
        await contacts._on_request(request(eve, made["tokens"]["for Eve"], "Eve"))
        person = await contacts.book.by_did(eve.did)
        assert (person.status, person.invite) == ("incoming", "for Eve")
        assert not await contacts.book.holds_invite(made["tokens"]["for Eve"])  # used now
        # Ben's invite was used before the move: it stays used
        assert not await contacts.book.holds_invite(made["tokens"]["for Ben"])


async def contacts_folder(twin: Twin, tmp_path: Path) -> dict[str, bytes]:
    """The contacts part of a plain export, as entries to hand a restore."""
    folder = await export_open(twin, "contacts", tmp_path / "plain")
    names = ("contacts.jsonl", "vouches.jsonl", "revocations.jsonl", "invites.json")
    return {f"contacts/{n}": (folder / n).read_bytes() for n in names}


async def test_a_tampered_vouch_is_refused_by_its_signature(tmp_path: Path) -> None:
    async with twin_with(tmp_path / "a") as (twin_a, client_a):
        await fill_contacts(twin_a, client_a)
        entries = await contacts_folder(twin_a, tmp_path)
    vouches = [json.loads(line) for line in entries["contacts/vouches.jsonl"].splitlines()]
    vouches[1]["level"] = -2  # Ben "warns strongly" about Cat, which Ben never said
    tampered = {**entries, "contacts/vouches.jsonl": jsonl(*vouches)}
    revocations = [json.loads(line) for line in entries["contacts/revocations.jsonl"].splitlines()]
    revocations[0]["statement"]["vouch"] = "another"
    revoked = {**entries, "contacts/revocations.jsonl": jsonl(*revocations)}
    async with twin_with(tmp_path / "b") as (twin_b, _):
        message = await refused(twin_b, "contacts", tampered)
    assert message.startswith("line 2 of contacts/vouches.jsonl: the signature of")
    assert "does not verify: it was altered" in message
    async with twin_with(tmp_path / "c") as (twin_c, _):  # a failed import's twin is dropped
        message = await refused(twin_c, "contacts", revoked)
    assert message.startswith("line 1 of contacts/revocations.jsonl: the signature of")


PERSON = {
    "id": "0123456789abcdef01",
    "did": Identity.generate().did,
    "status": "connected",
    "name": "Ben",
    "their_name": "Ben",
    "note": "",
    "trust": 2,
    "trust_label": "some",
    "verified": False,
    "created": 1.0,
    "updated": 2.0,
    "request_note": "",
    "invite": None,
    "hint": None,
    "was": None,
}
INVITE = {
    "id": "aa",
    "label": "for Ben",
    "token_sha256": "0" * 64,
    "created": 1.0,
    "expires": 2.0,
    "used": None,
}


def contacts_part(
    people: list[Any] | None = None,
    vouches: bytes = b"",
    revocations: bytes = b"",
    invites: Any = None,
) -> dict[str, bytes]:
    return {
        "contacts/contacts.jsonl": jsonl(*([PERSON] if people is None else people)),
        "contacts/vouches.jsonl": vouches,
        "contacts/revocations.jsonl": revocations,
        "contacts/invites.json": json.dumps([INVITE] if invites is None else invites).encode(),
    }


BAD_CONTACTS: dict[str, tuple[dict[str, bytes], str]] = {
    "a line that is not JSON": (
        {**contacts_part(), "contacts/contacts.jsonl": b"{\n"},
        "line 1 of contacts/contacts.jsonl is not JSON",
    ),
    "a field missing": (
        contacts_part([{k: v for k, v in PERSON.items() if k != "trust"}]),
        "line 1 of contacts/contacts.jsonl: it has no trust",
    ),
    "an unknown status": (
        contacts_part([{**PERSON, "status": "friend"}]),
        "line 1 of contacts/contacts.jsonl: status is one of requested, incoming, connected",
    ),
    "a did that is none": (
        contacts_part([{**PERSON, "did": "did:web:example.org"}]),
        "line 1 of contacts/contacts.jsonl: not a did:key",
    ),
    "a trust level past the last": (
        contacts_part([{**PERSON, "trust": 5}]),
        "line 1 of contacts/contacts.jsonl: trust is 0 to 4, not 5",
    ),
    "a trust label of another level": (
        contacts_part([{**PERSON, "trust_label": "fully"}]),
        "line 1 of contacts/contacts.jsonl: trust_label of trust 2 is 'some'",
    ),
    "a name too long": (
        contacts_part([{**PERSON, "name": "x" * 65}]),
        "line 1 of contacts/contacts.jsonl: name is 65 characters; the limit is 64",
    ),
    "a person twice": (
        contacts_part([PERSON, {**PERSON, "id": "other"}]),
        "line 2 of contacts/contacts.jsonl: this contact is listed before",
    ),
    "was without a block": (
        contacts_part([{**PERSON, "was": "incoming"}]),
        "line 1 of contacts/contacts.jsonl: was is the status before a block",
    ),
    "a statement that is none": (
        contacts_part(vouches=jsonl({"type": "contacts.vouch", "by": PERSON["did"]})),
        "line 1 of contacts/vouches.jsonl: a statement is a contacts.vouch or contacts.revoke",
    ),
    "a revocation that is no statement": (
        contacts_part(revocations=jsonl({"statement": {}})),
        "line 1 of contacts/revocations.jsonl: a statement names the twin that made it",
    ),
    "a revocation without its time": (
        contacts_part(
            revocations=jsonl(
                {
                    "statement": signed(
                        Identity.generate(), type="contacts.revoke", id="r", vouch="v"
                    )
                }
            )
        ),
        "line 1 of contacts/revocations.jsonl: revoked is seconds since 1970, not None",
    ),
    "a vouch where revocations go": (
        contacts_part(
            revocations=jsonl(
                {
                    "statement": signed(
                        Identity.generate(),
                        type="contacts.vouch",
                        id="v",
                        about=PERSON["did"],
                        topic="bakes",
                        level=1,
                        comment="",
                    ),
                    "revoked": 1.0,
                }
            )
        ),
        "line 1 of contacts/revocations.jsonl: it is a contacts.vouch, not a contacts.revoke",
    ),
    "an invite token that is no hash": (
        contacts_part(invites=[{**INVITE, "token_sha256": "secret"}]),
        "contacts/invites.json: invite 1: token_sha256 is 64 lower-case hex digits",
    ),
    "an invite twice": (
        contacts_part(invites=[INVITE, {**INVITE, "id": "bb"}]),
        "contacts/invites.json: invite 2: it is listed twice",
    ),
    "invites missing": (
        {k: v for k, v in contacts_part().items() if "invites" not in k},
        "the export holds nothing where contacts/invites.json belongs",
    ),
}


@pytest.mark.parametrize("case", BAD_CONTACTS, ids=list(BAD_CONTACTS))
async def test_damaged_contacts_are_refused_with_what_is_wrong(tmp_path: Path, case: str) -> None:
    entries, message = BAD_CONTACTS[case]
    async with twin_with(tmp_path / "t") as (twin, _):
        assert message in await refused(twin, "contacts", entries)


async def test_contacts_are_imported_only_into_a_twin_that_holds_none(tmp_path: Path) -> None:
    async with twin_with(tmp_path / "t") as (twin, client):
        await client.post(
            "/api/contacts/invites", json={"label": "mine"}, headers=await auth(twin, "contacts:*")
        )
        with pytest.raises(Conflict, match="holds contacts, invites or vouches already"):
            await capability(twin, "contacts").restore(part_of(contacts_part()))
        assert await capability(twin, "contacts").book.all() == []
        assert [i["label"] for i in await capability(twin, "contacts").book.invites()] == ["mine"]


# the example plugin


async def test_the_guestbook_comes_back_with_its_ids_and_times(tmp_path: Path) -> None:
    async with twin_with(tmp_path / "a") as (twin_a, client_a):
        headers = await auth(twin_a, "guestbook:sign")
        for author, text in [("Wil", "Lovely twin!"), ("Zoë", "Back again, ünïcode too")]:
            await client_a.post(
                "/api/guestbook/entries", json={"author": author, "text": text}, headers=headers
            )
        before = (await client_a.get("/api/guestbook/entries", headers=headers)).json()
        archive = await archive_of(twin_a, "guestbook")
        identity = twin_a.require_identity()
    async with imported(tmp_path, identity, archive) as (twin_b, client_b):
        headers = await auth(twin_b, "guestbook:sign")
        assert (await client_b.get("/api/guestbook/entries", headers=headers)).json() == before
        new = await client_b.post(
            "/api/guestbook/entries", json={"author": "Ann", "text": "after"}, headers=headers
        )
        assert new.json()["id"] == before[0]["id"] + 1


ENTRY = {"id": 1, "author": "Wil", "text": "hi", "at": 1.5}
BAD_GUESTBOOKS: dict[str, tuple[bytes, str]] = {
    "not JSON": (b"{\n", "line 1 of guestbook/entries.jsonl is not JSON"),
    "an author too long": (
        jsonl({**ENTRY, "author": "x" * 61}),
        "line 1 of guestbook/entries.jsonl: Expected `str` of length <= 60 - at `$.author`",
    ),
    "a text of spaces": (
        jsonl({**ENTRY, "text": "   "}),
        "line 1 of guestbook/entries.jsonl: author and text need more than spaces",
    ),
    "ids out of order": (
        jsonl(ENTRY, ENTRY),
        "line 2 of guestbook/entries.jsonl: ids go up, oldest entry first",
    ),
    "a time that is none": (
        jsonl({**ENTRY, "at": "now"}),
        "line 1 of guestbook/entries.jsonl: Expected `float`, got `str` - at `$.at`",
    ),
}


@pytest.mark.parametrize("case", BAD_GUESTBOOKS, ids=list(BAD_GUESTBOOKS))
async def test_a_damaged_guestbook_is_refused_with_what_is_wrong(tmp_path: Path, case: str) -> None:
    lines, message = BAD_GUESTBOOKS[case]
    async with twin_with(tmp_path / "t") as (twin, _):
        assert message in await refused(twin, "guestbook", {"guestbook/entries.jsonl": lines})


async def test_the_guestbook_is_imported_only_into_an_empty_one(tmp_path: Path) -> None:
    async with twin_with(tmp_path / "t") as (twin, client):
        headers = await auth(twin, "guestbook:sign")
        await client.post(
            "/api/guestbook/entries", json={"author": "Me", "text": "first"}, headers=headers
        )
        with pytest.raises(Conflict, match="holds entries already"):
            await capability(twin, "guestbook").restore(
                part_of({"guestbook/entries.jsonl": jsonl(ENTRY)})
            )
        entries = (await client.get("/api/guestbook/entries", headers=headers)).json()
        assert [e["author"] for e in entries] == ["Me"]


# all four at once


async def test_an_empty_twin_moves_to_an_empty_twin(tmp_path: Path) -> None:
    parts = ("contacts", "guestbook", "profile", "storage")
    async with twin_with(tmp_path / "a") as (twin_a, _):
        archive = await archive_of(twin_a, *parts)
        plains_a = [await export_open(twin_a, p, tmp_path / f"a-{p}") for p in parts]
        identity = twin_a.require_identity()
    async with imported(tmp_path, identity, archive) as (twin_b, _):
        for part, plain_a in zip(parts, plains_a, strict=True):
            same_export(plain_a, await export_open(twin_b, part, tmp_path / f"b-{part}"))
