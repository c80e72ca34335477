"""What `twin export` takes of chat and `twin import` puts back: a direct and a group
conversation, with replies, edits, deletes, reactions, read marks, an attachment and delivery
ticks, come back through the encrypted archive the same through chat's own API, searchable and
still talking with the other members' twins; the plain folder is readable as documented, and
a damaged export or a chat that holds conversations already is refused."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from test_peers_core import twin_with
from twin_capabilities.chat import Chat, direct_id

from twin import BadInput, Conflict
from twin.archive import ArchiveReader, ArchiveWriter
from twin.core import Twin, initialize
from twin.export import Entries, Export, Folder, read_folder
from twin.identity import Identity
from twin.peers import seal
from twin.settings import Settings

pytestmark = pytest.mark.anyio
GRACE = Identity.generate()
HOPPER = Identity.generate()
FRIENDS = {GRACE.did: "Grace", HOPPER.did: "Hopper"}


def chat_of(twin: Twin) -> Chat:
    capability = twin.registry.loaded["chat"].capability
    assert isinstance(capability, Chat)
    return capability


async def befriend(twin: Twin) -> None:
    """Grace and Hopper as connected contacts (their twins are not running: what is sent to
    them stays queued)."""
    for did, name in FRIENDS.items():
        await twin.peers.pin(did)
        await chat_of(twin).contacts.book.add(did, "connected", name)


async def arrives(
    client: httpx.AsyncClient, twin: Twin, sender: Identity, kind: str, **body: Any
) -> None:
    """An envelope from ``sender``'s twin, into the twin's inbox."""
    answer = await client.post("/p2p/v1/inbox", json=seal(sender, twin.did, kind, body, ttl=600))
    assert answer.status_code == 202, answer.text


async def note() -> AsyncIterator[bytes]:
    yield b"the tide tables\n"


async def fill(twin: Twin, client: httpx.AsyncClient) -> tuple[str, str]:
    """A direct conversation with Grace and a group with both; their ids."""
    chat = chat_of(twin)
    await befriend(twin)
    direct = direct_id(twin.did, GRACE.did)
    await arrives(
        client,
        twin,
        GRACE,
        "chat.message",
        c=direct,
        id="g1",
        n=1,
        sent=1_700_000_000.5,
        text="Is the kettle on?",
        name="Grace H.",
    )
    conv, _ = await chat.direct(GRACE.did)
    mine = await chat.post(conv, "It is — come over", reply_to="g1")
    await chat.edit(conv, mine.id, "It is, come over ☕")
    await chat.react(conv, "g1", "❤️", True)
    await arrives(client, twin, GRACE, "chat.react", c=direct, id=mine.id, emoji="👍", on=True)
    await arrives(client, twin, GRACE, "chat.read", c=direct, n=mine.n)
    conv = await chat.store.conversation(direct)
    upload = await chat.attachments.upload(conv, "tides.txt", note(), None)
    await chat.post(conv, "the tables", attachments=[upload.id])
    await chat.mark_read(conv, "g1")

    group = await chat.new_group("Lighthouse keepers", [GRACE.did, HOPPER.did])
    n = group.n
    await arrives(
        client,
        twin,
        HOPPER,
        "chat.message",
        c=group.id,
        id="h1",
        n=n + 1,
        sent=1_700_000_100.0,
        text="Thermocline readings are in",
    )
    group = await chat.store.conversation(group.id)
    await chat.post(group, "Thanks Hopper")
    gone = await chat.post(group, "wrong chat, sorry")
    await chat.delete(group, gone.id)
    await arrives(
        client,
        twin,
        GRACE,
        "chat.message",
        c=group.id,
        id="g2",
        n=group.n + 3,
        sent=1_700_000_200.0,
        text="Storm tonight",
    )
    await chat.set_muted(await chat.store.conversation(group.id), True)
    # a message for a group Grace has not told this twin of yet waits for it
    await arrives(
        client,
        twin,
        GRACE,
        "chat.message",
        c="g" + "9" * 24,
        id="w1",
        n=1,
        sent=1_700_000_300.0,
        text="early",
    )
    return direct, group.id


class Owner:
    """The owner, through chat's HTTP API."""

    def __init__(self, client: httpx.AsyncClient, token: str) -> None:
        self.client = client
        self.headers = {"Authorization": f"Bearer {token}"}

    @classmethod
    async def of(cls, twin: Twin, client: httpx.AsyncClient) -> Owner:
        _, token = await twin.tokens.create(frozenset({"chat:*"}), "test")
        return cls(client, str(token))

    async def get(self, path: str, **query: str) -> Any:
        response = await self.client.get(f"/api/chat{path}", params=query, headers=self.headers)
        assert response.status_code == 200, response.text
        return response.json()

    async def everything(self) -> dict[str, Any]:
        """Every conversation as listed and every message of each, as the owner sees them."""
        listing = await self.get("/conversations")
        seen: dict[str, Any] = {"conversations": listing["conversations"]}
        for conv in listing["conversations"]:
            seen[conv["id"]] = await self.get(f"/conversations/{conv['id']}/messages", limit="200")
        return seen

    async def search(self, words: str) -> list[str]:
        return [m["id"] for m in (await self.get("/search", q=words))["messages"]]


def read_lines(path: Path) -> list[Any]:
    return [json.loads(line) for line in path.read_text("utf-8").splitlines()]


def check_plain(root: Path, twin: Twin, direct: str, group: str) -> None:
    """The plain folder, as docs/export-format.md describes it to someone leaving."""
    plain = root / "chat"
    convs = {c["id"]: c for c in json.loads((plain / "conversations.json").read_text())}
    assert set(convs) == {direct, group}
    d, g = convs[direct], convs[group]
    assert d["kind"] == "direct" and d["title"] == "Grace" and d["name"] == ""
    names = {m["did"]: m["name"] for m in d["members"]}
    assert names.keys() == {twin.did, GRACE.did} and names[GRACE.did] == "Grace"
    assert d["names"] == {GRACE.did: "Grace H."}
    assert d["read_by"] == {GRACE.did: 2} and d["read_up_to"] >= 1
    assert d["messages"] == f"messages/{direct}.jsonl" and "group_log" not in d
    assert g["kind"] == "group" and g["title"] == g["name"] == "Lighthouse keepers"
    assert {m["did"] for m in g["members"]} == {twin.did, GRACE.did, HOPPER.did}
    assert [m["did"] for m in g["members"] if m["admin"]] == [twin.did]
    assert g["muted"] is True and g["active"] is True and g["counter"] >= 5
    assert g["group_log"][0]["action"] == "create" and "sig" in g["group_log"][0]
    for c in (d, g):
        assert isinstance(c["created"], float) and c["updated"] >= c["created"]

    lines = read_lines(plain / "messages" / f"{direct}.jsonl")
    assert [m["text"] for m in lines] == ["Is the kettle on?", "It is, come over ☕", "the tables"]
    first, reply, tables = lines
    assert first["author"] == GRACE.did and first["mine"] is False and first["counter"] == 1
    assert first["sent"] == 1_700_000_000.5 and first["status"] == "read"
    assert first["reactions"] == {"❤️": [twin.did]}
    assert reply["reply_to"] == "g1" and reply["edited"] > reply["sent"]
    assert reply["reactions"] == {"👍": [GRACE.did]} and reply["status"] == "read"
    assert [d["state"] for d in reply["deliveries"]] == ["queued"]
    assert tables["status"] == "queued"
    [att] = tables["attachments"]
    assert att["name"] == "tides.txt" and att["size"] == 16 and att["state"] == "ready"
    assert att["path"].startswith("Chat/") and "key" not in att  # no secret in the plain copy
    group_lines = read_lines(plain / "messages" / f"{group}.jsonl")
    kinds = [(m["kind"], m["text"], m["deleted"]) for m in group_lines]
    assert kinds[0] == ("event", "created the group “Lighthouse keepers”", False)
    assert kinds[-4:] == [
        ("text", "Thermocline readings are in", False),
        ("text", "Thanks Hopper", False),
        ("text", "", True),
        ("text", "Storm tonight", False),
    ]
    counters = [m["counter"] for m in group_lines]
    assert counters == sorted(counters)
    [waiting] = read_lines(plain / "waiting.jsonl")
    assert waiting["conversation"] == "g" + "9" * 24 and waiting["from"] == GRACE.did
    assert waiting["type"] == "chat.message" and waiting["body"]["text"] == "early"


async def test_chat_travels_whole_to_a_new_twin_with_the_same_keys(tmp_path: Path) -> None:
    async with twin_with(tmp_path / "a") as (twin_a, client_a):
        direct, group = await fill(twin_a, client_a)
        identity = twin_a.require_identity()
        folder = Folder(tmp_path / "plain", identity, created=0)
        await chat_of(twin_a).export(Export(folder, "chat", open=True))
        folder.close()
        check_plain(tmp_path / "plain", twin_a, direct, group)
        buffer = io.BytesIO()
        writer = ArchiveWriter(buffer, identity)
        await chat_of(twin_a).export(Export(writer, "chat", open=False))
        writer.close()
        assert b"Thermocline" not in buffer.getvalue()  # the archive is encrypted
        before = await (await Owner.of(twin_a, client_a)).everything()
        envelopes = await twin_a.db.fetchall("SELECT envelope, state FROM chat_sent ORDER BY 1")

    initialize(Settings(data_dir=tmp_path / "b", rate_limit=0), identity=identity)
    async with twin_with(tmp_path / "b") as (twin_b, client_b):
        await befriend(twin_b)
        buffer.seek(0)
        entries = Entries(ArchiveReader(buffer, seed=identity.seed).entries())
        part = entries.part()
        await chat_of(twin_b).restore(part)
        await part.rest()
        assert entries.folder() is None  # all read, the manifest checked
        owner = await Owner.of(twin_b, client_b)
        after = await owner.everything()
        assert after.keys() == before.keys()
        for key in before:
            assert after[key] == before[key], key
        assert await twin_b.db.fetchall("SELECT envelope, state FROM chat_sent ORDER BY 1") == (
            envelopes
        )

        # the search index was written anew as the messages came in
        assert await twin_b.db.fetchval("SELECT count(*) FROM chat_unindexed") == 0
        assert await twin_b.db.fetchval("SELECT count(*) FROM chat_words") > 0
        assert await owner.search("thermo") == ["h1"]
        assert await owner.search("kettle") == ["g1"]
        assert await owner.search("sorry") == []  # deleted stays deleted

        # the other members' twins go on where they were: same ids, same counters
        chat = chat_of(twin_b)
        await arrives(client_b, twin_b, GRACE, "chat.edit", c=direct, id="g1", text="Kettle on?")
        assert (await chat.store.message(direct, "g1")).text == "Kettle on?"
        conv = await chat.store.conversation(group)
        await arrives(
            client_b,
            twin_b,
            HOPPER,
            "chat.message",
            c=group,
            id="h2",
            n=conv.n + 1,
            sent=1_700_000_400.0,
            text="Storm passed",
        )
        posted = await chat.post(await chat.store.conversation(group), "Good night")
        assert posted.n == conv.n + 2
        assert [
            m["text"]
            for m in (await owner.get(f"/conversations/{group}/messages"))["messages"][-2:]
        ] == ["Storm passed", "Good night"]

    # the plain copy reads back too (without the attachments' keys, which it does not hold)
    initialize(Settings(data_dir=tmp_path / "c", rate_limit=0), identity=identity)
    async with twin_with(tmp_path / "c") as (twin_c, client_c):
        await befriend(twin_c)
        _, plain = read_folder(tmp_path / "plain")
        await chat_of(twin_c).restore(Entries(plain).part())
        assert await (await Owner.of(twin_c, client_c)).everything() == before

    # the twin's outbox did not come along: once it serves, what was on its way goes again
    async with twin_with(tmp_path / "b") as (twin_b, client_b):
        for _ in range(200):
            waiting = await twin_b.db.fetchall("SELECT envelope FROM chat_sent")
            known = [await twin_b.peers.outbox.delivery(row[0]) for row in waiting]
            if waiting and all(known):
                break
            await anyio.sleep(0.02)
        assert all(d is not None and d.type == "chat.message" for d in known)
        queued = dict.fromkeys(FRIENDS, 0)
        outbox = twin_b.peers.outbox
        for envelope, peer_id in await twin_b.db.fetchall("SELECT id, peer FROM twin_outbox"):
            delivery, peer = (
                await outbox.delivery(envelope),
                await twin_b.peers.directory.by_id(peer_id),
            )
            assert delivery is not None and peer is not None
            if delivery.type == "chat.message":  # not the twin's own address announcements
                queued[peer.did] += 1
        # to Grace: two direct messages, "Thanks Hopper" and "Good night"; to Hopper the last
        # two; the deleted message does not go again
        assert queued == {GRACE.did: 4, HOPPER.did: 2}
        owner = await Owner.of(twin_b, client_b)
        views = (await owner.get(f"/conversations/{group}/messages"))["messages"]
        ticks = {m["text"]: (m["status"], m["recipients"]) for m in views if m["mine"]}
        assert ticks["Good night"] == ("queued", 2)
        assert ticks["Thanks Hopper"] == ("read", 2)  # both wrote after it: they had read it
        assert ticks[""] == ("delivered", 0)  # the deleted one: nothing of it goes again


# a damaged export, or a chat that is not empty

ME = Identity.generate()


def a_direct(**more: Any) -> dict[str, Any]:
    conv_id = direct_id(ME.did, GRACE.did)
    return {
        "id": conv_id,
        "kind": "direct",
        "name": "",
        "members": [{"did": ME.did, "admin": False}, {"did": GRACE.did, "admin": False}],
        "names": {},
        "created": 1.0,
        "updated": 2.0,
        "counter": 2,
        "read_up_to": 0,
        "read_by": {},
        "muted": False,
        "active": True,
        "messages": f"messages/{conv_id}.jsonl",
        **more,
    }


def a_message(**more: Any) -> dict[str, Any]:
    return {
        "id": "m1",
        "counter": 1,
        "kind": "text",
        "author": GRACE.did,
        "sent": 1.0,
        "received": 1.5,
        "text": "hello",
        "reply_to": None,
        "edited": None,
        "deleted": False,
        "attachments": [],
        "reactions": {},
        **more,
    }


def export_of(convs: Any, *lines: Any, raw: bytes | None = None) -> Entries:
    conv_id = direct_id(ME.did, GRACE.did)
    body = raw if raw is not None else b"".join(json.dumps(v).encode() + b"\n" for v in lines)
    listed: list[tuple[str, Iterator[bytes]]] = [
        ("chat/conversations.json", iter([json.dumps(convs).encode()])),
        (f"chat/messages/{conv_id}.jsonl", iter([body])),
    ]
    return Entries(iter(listed))


FORGED = {
    "type": "chat.member",
    "v": 1,
    "id": "e1",
    "group": "g" + "1" * 24,
    "n": 1,
    "by": ME.did,
    "action": "create",
    "name": "Forged",
    "members": [],
}
MESSAGES = f"chat/messages/{direct_id(ME.did, GRACE.did)}.jsonl"
BAD: dict[str, tuple[Any, list[Any], str]] = {
    "no list": ({"id": "x"}, [], "chat/conversations.json is not a list of conversations"),
    "a direct id that is not theirs": (
        [a_direct(id="d" + "0" * 31)],
        [],
        "conversation 1 of chat/conversations.json: d000",
    ),
    "a stranger as a member": (
        [a_direct(members=[{"did": "did:web:example.com", "admin": False}])],
        [],
        "conversation 1 of chat/conversations.json: a member's did: not a did:key",
    ),
    "a counter that is no number": (
        [a_direct(counter="two")],
        [],
        "conversation 1 of chat/conversations.json: counter is a whole number from 0",
    ),
    "a message that is not an object": (
        [a_direct()],
        [a_message(), ["m2"]],
        f"line 2 of {MESSAGES} is not an object",
    ),
    "a message counter below one": (
        [a_direct()],
        [a_message(), a_message(id="m2", counter=0)],
        f"line 2 of {MESSAGES}: counter is a whole number from 1, not 0",
    ),
    "text that is too long": (
        [a_direct()],
        [a_message(text="x" * 5000)],
        f"line 1 of {MESSAGES}: text is a string of at most 4000 characters",
    ),
    "an id twice": (
        [a_direct()],
        [a_message(), a_message()],
        f"line 2 of {MESSAGES}: message m1 is listed twice",
    ),
    "a reaction that is words": (
        [a_direct()],
        [a_message(reactions={"lol": [GRACE.did]})],
        f"line 1 of {MESSAGES}: a reaction is an emoji",
    ),
    "a time that is no time": (
        [a_direct()],
        [a_message(sent="yesterday")],
        f"line 1 of {MESSAGES}: sent is seconds since 1970, not 'yesterday'",
    ),
    "deliveries of someone else's message": (
        [a_direct()],
        [a_message(deliveries=[{"envelope": "e1", "state": "queued"}])],
        f"line 1 of {MESSAGES}: only your twin's own messages have deliveries",
    ),
    "a group whose log is forged": (
        [
            a_direct(
                id=FORGED["group"],
                kind="group",
                name="Forged",
                members=[{"did": ME.did, "admin": True}],
                messages="messages/g.jsonl",
                group_log=[{**FORGED, "sig": GRACE.sign(FORGED)}],  # Grace signs as ME
            )
        ],
        [],
        "conversation 1 of chat/conversations.json: change 1 of its group_log: a group change's "
        "signature does not match its signer",
    ),
}


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
async def test_a_damaged_export_is_refused_with_what_is_wrong(tmp_path: Path, case: str) -> None:
    convs, lines, message = BAD[case]
    initialize(Settings(data_dir=tmp_path / "t", rate_limit=0), identity=ME)
    async with twin_with(tmp_path / "t") as (twin, _):
        part = export_of(convs, *lines).part()
        with pytest.raises(BadInput) as raised:
            await chat_of(twin).restore(part)
    assert message in raised.value.message


async def test_a_line_that_is_not_json_is_refused(tmp_path: Path) -> None:
    initialize(Settings(data_dir=tmp_path / "t", rate_limit=0), identity=ME)
    async with twin_with(tmp_path / "t") as (twin, _):
        stray = Entries(iter([(MESSAGES, iter([b"{}\n"]))])).part()
        with pytest.raises(BadInput, match="does not begin with chat/conversations.json"):
            await chat_of(twin).restore(stray)
        raw = json.dumps(a_message()).encode() + b"\n{not json\n"
        with pytest.raises(BadInput, match=f"line 2 of {MESSAGES} is not JSON"):
            await chat_of(twin).restore(export_of([a_direct()], raw=raw).part())


async def test_chat_is_imported_only_into_a_twin_that_holds_none(tmp_path: Path) -> None:
    async with twin_with(tmp_path / "t") as (twin, client):
        await befriend(twin)
        chat = chat_of(twin)
        conv, _ = await chat.direct(GRACE.did)
        await chat.post(conv, "already here")
        folder = Folder(tmp_path / "plain", twin.require_identity(), created=0)
        await chat.export(Export(folder, "chat", open=True))
        folder.close()
        _, entries = read_folder(tmp_path / "plain")
        with pytest.raises(Conflict, match="chat holds conversations already"):
            await chat.restore(Entries(entries).part())
        owner = await Owner.of(twin, client)
        [listed] = (await owner.get("/conversations"))["conversations"]
        messages = (await owner.get(f"/conversations/{conv.id}/messages"))["messages"]
        assert listed["id"] == conv.id and [m["text"] for m in messages] == ["already here"]
