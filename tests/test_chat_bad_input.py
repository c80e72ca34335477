"""Chat given bad input, case by case, between real `twin serve` processes on loopback: what
the owner's API refuses (with a 4xx that says what was wrong) or keeps byte for byte, and the
hostile envelopes a member's twin may send (forged group changes, messages into the wrong
conversation, malformed bodies), each refused without touching any other conversation."""

from __future__ import annotations

import json
import select
import socket
import time
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import pytest
from chats import direct, make_group, messages, post, send, texts, three_friends
from conftest import wait_for
from twin_capabilities.chat import direct_id
from twin_capabilities.chat._attach import MAX_ATTACHMENT
from twin_capabilities.chat._groups import new_event
from twins import Peer

from twin.identity import Identity
from twin.peers import address_hint, seal

pytestmark = pytest.mark.slow


@dataclass
class Room:
    """Ada, Babbage and Charles (all contacts of one another) and their conversations."""

    ada: Peer
    babbage: Peer
    charles: Peer
    pair: str  # Ada and Babbage's direct conversation: the control every case ends with
    side: str  # Babbage and Charles's direct conversation, where Charles's envelopes go
    group: str  # Ada's group with Babbage and Charles; Ada is its only admin
    duo: str  # Ada's group with Babbage only
    charles_key: Identity  # Charles's root key, to craft envelopes as his twin


@pytest.fixture(scope="module")
def room(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Room]:
    with three_friends(tmp_path_factory.mktemp("chat-bad-input")) as (ada, babbage, charles):
        pair = direct(ada, babbage)["id"]
        direct(babbage, ada)
        side = direct(babbage, charles)["id"]
        direct(charles, babbage)
        group = make_group(ada, "Engine", babbage, charles)["id"]
        duo = make_group(ada, "Just us", babbage)["id"]
        for peer, conv in ((babbage, group), (charles, group), (babbage, duo)):
            wait_for(lambda p=peer, c=conv: found(p, c), 15, f"the group at {peer.name}")
        yield Room(ada, babbage, charles, pair, side, group, duo, charles.identity())


# helpers -------------------------------------------------------------------------------------


def found(peer: Peer, conv: str) -> bool:
    return peer.call("GET", f"/api/chat/conversations/{conv}").status_code == 200


def message(peer: Peer, conv: str, message_id: str) -> dict[str, Any]:
    return next(m for m in messages(peer, conv) if m["id"] == message_id)


def arrives(peer: Peer, conv: str, text: str, timeout: float = 15) -> dict[str, Any]:
    def there() -> dict[str, Any] | None:
        return next((m for m in messages(peer, conv) if m["text"] == text), None)

    return dict(wait_for(there, timeout, f"{text!r} in {peer.name}'s conversation"))


def conversation(peer: Peer, conv: str) -> dict[str, Any]:
    return dict(peer.get(f"/api/chat/conversations/{conv}"))


def conversation_ids(peer: Peer) -> set[str]:
    return {c["id"] for c in peer.get("/api/chat/conversations")["conversations"]}


def membership(peer: Peer, conv: str) -> tuple[str, list[tuple[str, bool]]]:
    """A group as ``peer`` holds it: its name, and each member with whether they are admin."""
    held = conversation(peer, conv)
    return held["name"], sorted((m["did"], m["admin"]) for m in held["members"])


def call(
    peer: Peer, method: str, path: str, headers: dict[str, str], **options: Any
) -> httpx.Response:
    """``peer.call`` with more headers."""
    every = {"Authorization": f"Bearer {peer.token}", **headers}
    return peer.client.request(method, path, headers=every, **options)


def refused(response: httpx.Response, status: int, says: str) -> None:
    """A clear refusal: the status, a JSON error whose message says ``says``."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json"), response.headers
    error = response.json()["error"]
    assert says in error["message"], error
    assert "Traceback" not in response.text


def not_taken(response: httpx.Response, status: int, says: str) -> None:
    """An envelope the inbox answered with its handler's error: not taken, and (its signature
    good) refused for good, so the sender's twin does not send it again."""
    refused(response, status, says)
    answer = response.json()
    assert answer["receipt"]["ids"] == [] and answer["retry"] is False, answer
    assert answer["receipt"]["refused"] == [answer["id"]], answer


def deliver(key: Identity, to: Peer, type_: str, body: object) -> httpx.Response:
    """An envelope crafted as ``key``'s twin, posted straight to ``to``'s inbox."""
    return to.inbox(seal(key, to.did, type_, body, ttl=3600))


def next_n(peer: Peer, conv: str) -> int:
    return max([m["n"] for m in messages(peer, conv)] + [0]) + 1


def still_talking(room: Room, tag: str) -> None:
    """What every case ends with: Ada and Babbage's direct conversation still goes both ways,
    and Ada's group still reaches both its other members."""
    there, back, everyone = f"to Babbage after {tag}", f"to Ada after {tag}", f"all after {tag}"
    send(room.ada, room.pair, there)
    arrives(room.babbage, room.pair, there)
    send(room.babbage, room.pair, back)
    arrives(room.ada, room.pair, back)
    send(room.ada, room.group, everyone)
    arrives(room.babbage, room.group, everyone)
    arrives(room.charles, room.group, everyone)


def chat_folders(peer: Peer) -> list[str]:
    response = peer.call("GET", "/api/files/tree/Chat")
    if response.status_code == 404:
        return []
    assert response.status_code == 200, response.text
    return [e["name"] for e in response.json()["entries"] if e["kind"] == "folder"]


def files_used(peer: Peer) -> int:
    return int(peer.get("/api/files/")["used"])


# what the owner's API is given ------------------------------------------------------------------


def test_a_message_over_4000_characters_is_refused(room: Room) -> None:
    before = texts(room.ada, room.pair)
    refused(post(room.ada, room.pair, "a" * 4001), 400, "at most 4000 characters; this one is 4001")
    # far over: still the same limit named, not some decoder's
    refused(post(room.ada, room.pair, "b" * 50_000), 400, "at most 4000 characters")
    # the limit itself is fine, and comes back whole
    full = "c" * 3999 + "!"
    assert send(room.ada, room.pair, full)["text"] == full
    arrives(room.babbage, room.pair, full)
    assert texts(room.ada, room.pair) == [*before, full]
    still_talking(room, "a long message")


def test_ten_thousand_emoji_are_refused_with_the_limit(room: Room) -> None:
    before = texts(room.ada, room.pair)
    for emoji in ("😀", "👍🏽", "👨‍👩‍👧‍👦"):  # one, two and seven code points each
        refused(
            post(room.ada, room.pair, emoji * 10_000),
            400,
            "a message is at most 4000 characters; this one is",
        )
    # an edit is held to the same limit
    mine = send(room.ada, room.pair, "short one")
    edit = room.ada.call(
        "PATCH",
        f"/api/chat/conversations/{room.pair}/messages/{mine['id']}",
        json={"text": "😀" * 10_000},
    )
    refused(edit, 400, "at most 4000 characters")
    assert texts(room.ada, room.pair) == [*before, "short one"]
    still_talking(room, "ten thousand emoji")


def test_right_to_left_and_zero_width_text_comes_back_intact(room: Room) -> None:
    text = (
        "שלום עולם — مرحبا بالعالم\u200f (1 2 3)\u200e"
        " zero\u200bwidth non\u200cjoiner word\u2060joiner bom\ufeffhere"
        " 👩‍💻 👨‍👩‍👧‍👦 🏳️‍🌈 🇳🇱 e\u0301"
        " \u202bembedded\u202c \u2067isolated\u2069 \u202eoverride\u202c"
        "\nsecond line\tafter a tab"
    )
    assert unicodedata.normalize("NFC", text) != text  # kept as sent, not normalised
    sent = send(room.ada, room.pair, text)
    assert sent["text"].encode() == text.encode()
    arrived = arrives(room.babbage, room.pair, text)
    assert arrived["text"].encode() == text.encode()
    assert message(room.ada, room.pair, sent["id"])["text"].encode() == text.encode()
    assert conversation(room.babbage, room.pair)["last"]["text"].encode() == text.encode()
    # a reply quotes it whole, and search finds it by a right-to-left word
    reply = send(room.babbage, room.pair, "קיבלתי", reply_to=sent["id"])
    assert reply["reply_to"]["text"].encode() == text[:200].encode()
    hits = room.babbage.get("/api/chat/search?q=" + quote("שלו"))["messages"]
    assert [m["id"] for m in hits] == [sent["id"]]
    still_talking(room, "right-to-left text")


def test_html_and_script_are_stored_as_given(room: Room) -> None:
    text = '<script>alert("x")</script><img src=x onerror=alert(1)> &amp; </textarea>\'"'
    response = post(room.ada, room.pair, text)
    assert response.status_code == 201, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert json.loads(response.content)["text"] == text
    assert b'alert(\\"x\\")' in response.content  # a JSON string, quotes escaped
    assert arrives(room.babbage, room.pair, text)["text"] == text
    name = '<b onmouseover="alert(1)">Team</b><script>x()</script>'
    made = room.ada.call(
        "POST", "/api/chat/groups", json={"name": name, "members": [room.babbage.did]}
    )
    assert made.status_code == 201, made.text
    assert made.headers["content-type"] == "application/json"
    assert made.json()["name"] == name
    conv = made.json()["id"]
    wait_for(lambda: found(room.babbage, conv), 15, "the group at Babbage")
    assert conversation(room.babbage, conv)["name"] == name
    event = [m for m in messages(room.babbage, conv) if m["kind"] == "event"][0]
    assert event["text"] == f"created the group “{name}”"
    still_talking(room, "HTML")


def test_group_names_with_slashes_and_quotes_keep_files_in_one_folder(room: Room) -> None:
    name = "Plans / \"Q3\" \\ drafts 'final'"
    conv = make_group(room.ada, name, room.babbage)["id"]
    assert conversation(room.ada, conv)["name"] == name
    wait_for(lambda: found(room.babbage, conv), 15, "the group at Babbage")
    assert conversation(room.babbage, conv)["name"] == name
    content = b"minutes of the meeting\n" * 100
    uploaded = room.ada.call(
        "POST", f"/api/chat/conversations/{conv}/attachments?name=notes.txt", content=content
    )
    assert uploaded.status_code == 201, uploaded.text
    send(room.ada, conv, "the notes", attachments=[uploaded.json()["id"]])
    folder = "Plans - \"Q3\" - drafts 'final'"
    assert folder in chat_folders(room.ada)
    listed = room.ada.get("/api/files/tree/Chat/" + quote(folder))["entries"]
    assert [(e["name"], e["path"]) for e in listed] == [("notes.txt", f"Chat/{folder}/notes.txt")]
    assert room.ada.call("GET", f"/api/files/content/Chat/{quote(folder)}/notes.txt").content == (
        content
    )

    def fetched() -> bool:
        atts = [a for m in messages(room.babbage, conv) for a in m["attachments"]]
        return bool(atts) and atts[0]["state"] == "ready"

    wait_for(fetched, 20, "the attachment at Babbage")
    assert folder in chat_folders(room.babbage)
    got = room.babbage.call("GET", f"/api/files/content/Chat/{quote(folder)}/notes.txt")
    assert got.status_code == 200 and got.content == content
    # a name that looks like a way out of the folder stays one folder inside Chat
    climbing = make_group(room.ada, "../../..", room.babbage)["id"]
    up = room.ada.call(
        "POST", f"/api/chat/conversations/{climbing}/attachments?name=up.txt", content=b"up"
    )
    assert up.status_code == 201, up.text
    assert "-..-" in chat_folders(room.ada)  # "..-..-.." without its edge dots
    assert all("/" not in f and f not in (".", "..") for f in chat_folders(room.ada))
    still_talking(room, "a group name with slashes")


def test_names_long_in_bytes_still_keep_their_attachments(room: Room) -> None:
    """Chat takes 80 characters in a group's name and 200 in a file's; Files takes 255 bytes
    of UTF-8 in a name, which 80 emoji or 150 CJK characters pass. Two files of one name in
    one message each get a place of their own, on both twins."""
    emoji = make_group(room.ada, "😀" * 80, room.babbage)["id"]
    first = room.ada.call(
        "POST", f"/api/chat/conversations/{emoji}/attachments?name=a.txt", content=b"a"
    )
    assert first.status_code == 201, first.text
    assert "😀" * 25 in chat_folders(room.ada)  # the first 100 bytes of the name
    name, content = "文" * 150 + ".txt", "内容".encode() * 100
    uploaded = [
        room.ada.call(
            "POST",
            f"/api/chat/conversations/{room.pair}/attachments",
            params={"name": name},
            content=content,
        )
        for _ in range(2)
    ]
    assert [u.status_code for u in uploaded] == [201, 201], uploaded[-1].text
    assert {u.json()["name"] for u in uploaded} == {name}  # as given, wherever it is kept
    send(room.ada, room.pair, "", attachments=[u.json()["id"] for u in uploaded])
    kept = [
        e["name"]
        for e in room.ada.get("/api/files/tree/Chat/Babbage")["entries"]
        if e["name"].startswith("文")
    ]
    assert len(kept) == 2 and all(len(k.encode()) <= 255 for k in kept), kept
    assert sorted(k[-8:] for k in kept) == [" (2).txt", "文文文文.txt"]

    def fetched() -> list[dict[str, Any]]:
        atts = [a for m in messages(room.babbage, room.pair) for a in m["attachments"]]
        return [a for a in atts if a["name"] == name and a["state"] == "ready"]

    for att in wait_for(lambda: len(fetched()) == 2 and fetched(), 20, "both at Babbage"):
        got = room.babbage.call("GET", f"/api/chat/attachments/{att['id']}")
        assert got.status_code == 200 and got.content == content
    still_talking(room, "names long in bytes")


@pytest.mark.parametrize(
    "name",
    ["\u202egpj.exe", "Team\u202d", "a\u202ab", "\u2066isolate\u2069", "x\u2067y", "\u2068z"],
    ids=["RLO", "LRO", "LRE", "LRI", "RLI", "FSI"],
)
def test_direction_overrides_in_a_group_name_are_refused(room: Room, name: str) -> None:
    made = room.ada.call(
        "POST", "/api/chat/groups", json={"name": name, "members": [room.babbage.did]}
    )
    refused(made, 400, "must not contain direction overrides")
    before = membership(room.ada, room.duo)
    renamed = room.ada.call("PATCH", f"/api/chat/conversations/{room.duo}", json={"name": name})
    refused(renamed, 400, "must not contain direction overrides")
    assert membership(room.ada, room.duo) == before
    # nor can a contact's twin make one: its signed creation is refused the same way
    group = "g" + "1" * 24
    event = new_event(group, 1, room.charles.did, "create", name=name, members=[room.babbage.did])
    body = {"c": group, "events": [{**event, "sig": room.charles_key.sign(event)}]}
    not_taken(deliver(room.charles_key, room.babbage, "chat.group", body), 400, "direction")
    assert not found(room.babbage, group)
    still_talking(room, f"a direction override {name!r}")


def test_an_empty_message_is_refused(room: Room) -> None:
    before = texts(room.ada, room.pair)
    for text in ("", "   ", "\n\n\t", "\u200b", "\u200d\u2060\ufeff", "\u3000\u00a0"):
        refused(post(room.ada, room.pair, text), 400, "needs some text (or an attachment)")
    refused(
        room.ada.call("POST", f"/api/chat/conversations/{room.pair}/messages", json={}),
        400,
        "needs some text",
    )
    mine = send(room.ada, room.pair, "not empty")
    edit = room.ada.call(
        "PATCH", f"/api/chat/conversations/{room.pair}/messages/{mine['id']}", json={"text": " "}
    )
    refused(edit, 400, "needs some text")
    assert texts(room.ada, room.pair) == [*before, "not empty"]
    still_talking(room, "an empty message")


def test_control_characters_are_refused(room: Room) -> None:
    before = texts(room.ada, room.pair)
    for text in ("nul\x00here", "bell\x07", "\x1b[31mred", "back\x08space", "del\x7f", "c1\x9b"):
        refused(post(room.ada, room.pair, text), 400, "must not contain control characters")
    # line breaks and tabs are text, and come back as they were sent
    lines = "one\ntwo\n\tthree"
    assert send(room.ada, room.pair, lines)["text"] == lines
    # a string that is not text at all (a lone surrogate) is refused before it is stored
    raw = b'{"text": "half \\ud800 a pair"}'
    broken = call(
        room.ada,
        "POST",
        f"/api/chat/conversations/{room.pair}/messages",
        {"Content-Type": "application/json"},
        content=raw,
    )
    refused(broken, 400, "not valid JSON")
    assert texts(room.ada, room.pair) == [*before, lines]
    for name in ("two\nlines", "tab\there", "nul\x00"):
        made = room.ada.call(
            "POST", "/api/chat/groups", json={"name": name, "members": [room.babbage.did]}
        )
        refused(made, 400, "must be one line without control characters")
    still_talking(room, "control characters")


def test_a_member_who_is_not_a_contact_is_refused(room: Room) -> None:
    stranger = Identity.generate().did
    listed = conversation_ids(room.ada)
    made = room.ada.call(
        "POST", "/api/chat/groups", json={"name": "Strangers", "members": [stranger]}
    )
    refused(made, 400, "not one of your contacts")
    mixed = room.ada.call(
        "POST",
        "/api/chat/groups",
        json={"name": "Mixed", "members": [room.babbage.did, stranger]},
    )
    refused(mixed, 400, "not one of your contacts")
    refused(
        room.ada.call("POST", "/api/chat/conversations", json={"with": stranger}),
        400,
        "not one of your contacts",
    )
    refused(
        room.ada.call("POST", "/api/chat/conversations", json={"with": "did:web:example.org"}),
        400,
        "not a did:key",
    )
    before = membership(room.ada, room.duo)
    added = room.ada.call(
        "POST", f"/api/chat/conversations/{room.duo}/members", json={"did": stranger}
    )
    refused(added, 400, "not one of your contacts")
    assert membership(room.ada, room.duo) == before
    assert conversation_ids(room.ada) == listed
    still_talking(room, "a stranger as a member")


def test_editing_or_deleting_someone_elses_message_is_forbidden(room: Room) -> None:
    theirs = send(room.babbage, room.pair, "Babbage's own words")
    arrives(room.ada, room.pair, "Babbage's own words")
    path = f"/api/chat/conversations/{room.pair}/messages/{theirs['id']}"
    refused(room.ada.call("PATCH", path, json={"text": "Ada's words"}), 403, "only its author")
    refused(room.ada.call("DELETE", path), 403, "only its author")
    # a group change shown among the messages is nobody's to edit either
    change = [m for m in messages(room.ada, room.group) if m["kind"] == "event"][0]
    event_path = f"/api/chat/conversations/{room.group}/messages/{change['id']}"
    refused(room.ada.call("PATCH", event_path, json={"text": "x"}), 403, "only its author")
    missing = f"/api/chat/conversations/{room.pair}/messages/nosuchmessage"
    refused(room.ada.call("PATCH", missing, json={"text": "x"}), 404, "no such message")
    for peer in (room.ada, room.babbage):
        kept = message(peer, room.pair, theirs["id"])
        assert kept["text"] == "Babbage's own words"
        assert not kept["deleted"] and kept["edited"] is None
    still_talking(room, "someone else's message")


# forged membership changes, from a real member's twin -----------------------------------------


def signed_by(key: Identity, group: str, n: int, action: str, **fields: Any) -> dict[str, Any]:
    event = new_event(group, n, key.did, action, **fields)
    return {**event, "sig": key.sign(event)}


def group_unchanged(room: Room, before: tuple[str, list[tuple[str, bool]]], events: int) -> None:
    """Babbage's copy of the group has the same name, members and admins, and shows no new
    change."""
    assert membership(room.babbage, room.group) == before
    shown = [m for m in messages(room.babbage, room.group) if m["kind"] == "event"]
    assert len(shown) == events
    assert conversation(room.babbage, room.group)["active"]


def changes_shown(peer: Peer, conv: str) -> int:
    return len([m for m in messages(peer, conv) if m["kind"] == "event"])


def test_a_group_change_signed_by_a_member_who_is_not_admin_is_refused(room: Room) -> None:
    before, events = membership(room.babbage, room.group), changes_shown(room.babbage, room.group)
    key, n = room.charles_key, next_n(room.babbage, room.group)
    stranger = Identity.generate().did
    for action, fields in (
        ("admin", {"did": room.charles.did}),
        ("remove", {"did": room.ada.did}),
        ("remove", {"did": room.babbage.did}),
        ("add", {"did": stranger}),
        ("unadmin", {"did": room.ada.did}),
        ("rename", {"name": "Charles's now"}),
    ):
        body = {"c": room.group, "events": [signed_by(key, room.group, n, action, **fields)]}
        answer = deliver(key, room.babbage, "chat.group", body)
        not_taken(answer, 403, "only a group's admins change its members and name")
        group_unchanged(room, before, events)
    assert membership(room.charles, room.group) == before  # Charles's own twin agrees
    still_talking(room, "a non-admin's change")


def test_a_group_change_with_a_bad_signature_is_refused(room: Room) -> None:
    before, events = membership(room.babbage, room.group), changes_shown(room.babbage, room.group)
    n = next_n(room.babbage, room.group)
    # a change that says Ada made it, signed by Charles
    claimed = new_event(room.group, n, room.ada.did, "admin", did=room.charles.did)
    forged = {**claimed, "sig": room.charles_key.sign(claimed)}
    # one Ada did sign, altered after she signed it
    signed = signed_by(room.ada.identity(), room.group, n, "rename", name="Engine")
    altered = {**signed, "name": "Charles's engine"}
    # and garbage where the signature goes
    garbage = {**claimed, "sig": "A" * 86}
    for event in (forged, altered, garbage):
        body = {"c": room.group, "events": [event]}
        answer = deliver(room.charles_key, room.babbage, "chat.group", body)
        not_taken(answer, 400, "signature does not match its signer")
        assert answer.json()["error"]["code"] == "invalid_signature"
        group_unchanged(room, before, events)
    # a forged change among good ones spoils the lot: none of them is taken
    good = signed_by(room.ada.identity(), room.group, n, "rename", name="Engine room")
    answer = deliver(
        room.charles_key, room.babbage, "chat.group", {"c": room.group, "events": [good, forged]}
    )
    not_taken(answer, 400, "signature does not match its signer")
    group_unchanged(room, before, events)
    still_talking(room, "a bad signature")


def test_a_second_creation_of_a_group_is_refused(room: Room) -> None:
    before, events = membership(room.babbage, room.group), changes_shown(room.babbage, room.group)
    members = [room.babbage.did, room.ada.did]
    for key in (room.charles_key, room.ada.identity()):  # a member's, and even the creator's
        again = signed_by(key, room.group, 1, "create", name="Taken over", members=members)
        answer = deliver(
            room.charles_key, room.babbage, "chat.group", {"c": room.group, "events": [again]}
        )
        not_taken(answer, 403, "that group exists already")
        group_unchanged(room, before, events)
    still_talking(room, "a second creation")


def test_a_change_for_another_group_is_refused(room: Room) -> None:
    before, events = membership(room.babbage, room.group), changes_shown(room.babbage, room.group)
    duo_before = membership(room.babbage, room.duo)
    n = next_n(room.babbage, room.group)
    # a change of the group Charles is not in, carried in a message about his own group
    other = signed_by(room.ada.identity(), room.duo, n, "add", did=room.charles.did)
    answer = deliver(
        room.charles_key, room.babbage, "chat.group", {"c": room.group, "events": [other]}
    )
    not_taken(answer, 400, "a group change names another group")
    # and the same change sent as what it is: Charles is not in that group to tell of it
    answer = deliver(
        room.charles_key, room.babbage, "chat.group", {"c": room.duo, "events": [other]}
    )
    not_taken(answer, 403, "only a group's members tell it about changes")
    group_unchanged(room, before, events)
    assert membership(room.babbage, room.duo) == duo_before
    # nor does a group message name a direct conversation
    answer = deliver(
        room.charles_key, room.babbage, "chat.group", {"c": room.side, "events": [other]}
    )
    not_taken(answer, 400, "only a group has members")
    still_talking(room, "a change for another group")


def test_a_removed_admins_backdated_change_is_refused(room: Room) -> None:
    conv = make_group(room.ada, "Backdated", room.babbage, room.charles)["id"]
    wait_for(lambda: found(room.babbage, conv), 15, "the group at Babbage")
    path = f"/api/chat/conversations/{conv}/members/{room.charles.did}"
    promoted = room.ada.call("PATCH", path, json={"admin": True})
    assert promoted.status_code == 200, promoted.text
    between = send(room.ada, conv, "a message between his promotion and his removal")["n"]
    assert room.ada.call("DELETE", path).status_code == 200
    wait_for(lambda: not conversation(room.charles, conv)["active"], 15, "the removal")
    wait_for(
        lambda: room.charles.did not in dict(membership(room.babbage, conv)[1]),
        15,
        "the removal at Babbage",
    )
    before = membership(room.babbage, conv)
    # Charles, no longer in it, signs a change numbered as if made while he was an admin
    backdated = signed_by(room.charles_key, conv, between, "remove", did=room.ada.did)
    answer = deliver(
        room.charles_key, room.babbage, "chat.group", {"c": conv, "events": [backdated]}
    )
    assert answer.status_code >= 400, answer.text
    assert membership(room.babbage, conv) == before


def test_a_forged_address_hint_in_a_group_message_is_not_kept(room: Room) -> None:
    conv = make_group(room.ada, "Hints", room.babbage, room.charles)["id"]
    wait_for(lambda: found(room.babbage, conv), 15, "the group at Babbage")
    address = room.babbage.contact(room.ada)["address"]  # type: ignore[index]
    elsewhere = address_hint(Identity.generate(), ["http://127.0.0.1:9/"])
    forged = {**elsewhere, "did": room.ada.did}  # says it is Ada's; not signed by her
    # a change Ada did sign, passed on by Charles as members do, with the forged hint beside it
    rename = signed_by(room.ada.identity(), conv, next_n(room.babbage, conv), "rename", name="H")
    body = {"c": conv, "events": [rename], "hints": {room.ada.did: forged}}
    answer = deliver(room.charles_key, room.babbage, "chat.group", body)
    assert answer.status_code == 202, answer.text  # the change is taken, the hint is not
    assert conversation(room.babbage, conv)["name"] == "H"
    assert room.babbage.contact(room.ada)["address"] == address  # type: ignore[index]
    only = {"c": conv, "events": [], "hints": {room.ada.did: forged}}
    assert deliver(room.charles_key, room.babbage, "chat.group", only).status_code == 202
    assert room.babbage.contact(room.ada)["address"] == address  # type: ignore[index]
    still_talking(room, "a forged address hint")


# hostile chat.message envelopes ------------------------------------------------------------------


def message_body(conv: str, n: object, text: object, **extra: Any) -> dict[str, Any]:
    """A chat.message from Charles's twin."""
    body = {"c": conv, "id": f"crafted-{time.monotonic_ns()}", "n": n, "sent": time.time()}
    return {**body, "text": text, "name": "Charles", **extra}


def test_a_message_into_someone_elses_direct_conversation_is_refused(room: Room) -> None:
    before = texts(room.babbage, room.pair)
    key = room.charles_key
    for conv in (room.pair, direct_id(room.ada.did, room.charles.did), "d" + "0" * 31):
        body = message_body(conv, next_n(room.babbage, room.pair), "in between you two")
        answer = deliver(key, room.babbage, "chat.message", body)
        not_taken(answer, 400, "that direct conversation is not between your twin and this one")
    assert texts(room.babbage, room.pair) == before
    assert not found(room.babbage, "d" + "0" * 31)
    # a message into a group Charles is not in is held for it, never shown
    held = deliver(key, room.babbage, "chat.message", message_body(room.duo, 2, "let me in"))
    assert held.status_code == 202, held.text
    assert "let me in" not in texts(room.babbage, room.duo)
    # and his own conversation still takes what he writes
    body = message_body(room.side, next_n(room.babbage, room.side), "Charles, rightly")
    assert deliver(key, room.babbage, "chat.message", body).status_code == 202
    arrives(room.babbage, room.side, "Charles, rightly")
    still_talking(room, "a message into another conversation")


def test_a_refused_first_message_leaves_no_conversation_behind(room: Room) -> None:
    conv = direct_id(room.ada.did, room.charles.did)  # they never wrote to each other
    listed = conversation_ids(room.ada)
    for body in (message_body(conv, "one", "a counter in words"), message_body(conv, 1, 5)):
        not_taken(deliver(room.charles_key, room.ada, "chat.message", body), 400, "")
    # a reaction or a read mark in it has nothing to go on: taken, and dropped
    for kind, body in (
        ("chat.react", {"c": conv, "id": "nosuch", "emoji": "👍", "on": True}),
        ("chat.read", {"c": conv, "n": 1}),
    ):
        assert deliver(room.charles_key, room.ada, kind, body).status_code == 202
    assert not found(room.ada, conv)
    assert conversation_ids(room.ada) == listed
    # the first one that holds starts it
    good = message_body(conv, 1, "Hello Ada, Charles here")
    assert deliver(room.charles_key, room.ada, "chat.message", good).status_code == 202
    assert texts(room.ada, conv) == ["Hello Ada, Charles here"]
    still_talking(room, "a refused first message")


def test_a_stranger_blocked_and_unblocked_is_still_a_stranger(room: Room) -> None:
    stranger = Identity.generate()

    def knock() -> httpx.Response:
        body = message_body(direct_id(room.babbage.did, stranger.did), 1, "let me in")
        return deliver(stranger, room.babbage, "chat.message", body)

    refused(knock(), 403, "this twin does not know yours")
    blocked = room.babbage.call("POST", "/api/chat/blocked", json={"did": stranger.did})
    assert blocked.status_code == 204, blocked.text
    assert knock().status_code == 202  # dropped, as for any blocked twin, without saying so
    assert room.babbage.call("DELETE", f"/api/chat/blocked/{stranger.did}").status_code == 204
    refused(knock(), 403, "this twin does not know yours")
    again = room.babbage.call("DELETE", f"/api/chat/blocked/{stranger.did}")
    refused(again, 404, "that twin is not blocked")
    refused(
        room.babbage.call("POST", "/api/chat/blocked", json={"did": "nope"}), 400, "not a did:key"
    )
    still_talking(room, "blocking a stranger")


def test_a_counter_far_in_the_future_is_refused(room: Room) -> None:
    before = texts(room.babbage, room.side)
    top = next_n(room.babbage, room.side)
    for n in (top + 1_000_001, 2**62, 2**64 + 1, 0, -1, 1.5, "3", True, None):
        body = message_body(room.side, 1, f"counter {n!r}")
        body["n"] = n
        answer = deliver(room.charles_key, room.babbage, "chat.message", body)
        not_taken(answer, 400, "a message's counter is a whole number not far past the others'")
    assert texts(room.babbage, room.side) == before
    # the conversation's own counter did not move: Babbage's next message follows on
    assert send(room.babbage, room.side, "next in line")["n"] == top
    arrives(room.charles, room.side, "next in line")
    still_talking(room, "a counter in the future")


def test_reusing_another_members_message_id_is_refused(room: Room) -> None:
    original = send(room.ada, room.group, "Ada's original")
    arrives(room.babbage, room.group, "Ada's original")
    key = room.charles_key
    n = next_n(room.babbage, room.group)
    impostor = {**message_body(room.group, n, "Charles's impostor"), "id": original["id"]}
    answer = deliver(key, room.babbage, "chat.message", impostor)
    not_taken(answer, 400, "that message id is taken by another member's message")
    # nor may he edit it or delete it by its id
    edit = {"c": room.group, "id": original["id"], "text": "Charles's edit", "n": n}
    not_taken(deliver(key, room.babbage, "chat.edit", edit), 403, "only its author")
    gone = {"c": room.group, "id": original["id"]}
    not_taken(deliver(key, room.babbage, "chat.delete", gone), 403, "only its author")
    kept = [m for m in messages(room.babbage, room.group) if m["id"] == original["id"]]
    assert [(m["text"], m["sender"], m["edited"], m["deleted"]) for m in kept] == [
        ("Ada's original", room.ada.did, None, False)
    ]
    assert "Charles's impostor" not in texts(room.babbage, room.group)
    still_talking(room, "a reused message id")


def test_malformed_message_bodies_are_refused(room: Room) -> None:
    conv, key = room.side, room.charles_key
    before = texts(room.babbage, conv)
    n = next_n(room.babbage, conv)
    good = message_body(conv, n, "well formed")
    key32 = "A" * 43
    attachment = {"id": "att1", "name": "a.txt", "size": 3, "type": "text/plain", "key": key32}
    cases: list[tuple[str, object, str]] = [
        ("chat.message", [good], "a chat.message body is an object"),
        ("chat.message", "hello", "a chat.message body is an object"),
        ("chat.message", 42, "a chat.message body is an object"),
        ("chat.message", None, "a chat.message body is an object"),
        ("chat.message", {}, "names its conversation"),
        ("chat.message", {**good, "c": 5}, "names its conversation"),
        ("chat.message", {**good, "c": "x" + conv[1:]}, "names its conversation"),
        ("chat.message", {**good, "c": "d" * 65}, "names its conversation"),
        ("chat.message", {k: v for k, v in good.items() if k != "id"}, "names its message id"),
        ("chat.message", {**good, "id": ["a"]}, "names its message id"),
        ("chat.message", {**good, "id": "x" * 65}, "names its message id"),
        ("chat.message", {k: v for k, v in good.items() if k != "n"}, "counter"),
        ("chat.message", {k: v for k, v in good.items() if k != "sent"}, "says when it was sent"),
        ("chat.message", {**good, "sent": "yesterday"}, "says when it was sent"),
        ("chat.message", {**good, "sent": True}, "says when it was sent"),
        ("chat.message", {k: v for k, v in good.items() if k != "text"}, "needs some text"),
        ("chat.message", {**good, "text": 5}, "a message's text must be a string"),
        ("chat.message", {**good, "text": ["hi"]}, "a message's text must be a string"),
        ("chat.message", {**good, "text": "x" * 4001}, "at most 4000 characters"),
        ("chat.message", {**good, "text": "bell\x07"}, "control characters"),
        ("chat.message", {**good, "reply": 7}, "a reply names a message id"),
        ("chat.message", {**good, "att": "file"}, "up to 10 attachments"),
        ("chat.message", {**good, "att": [attachment] * 11}, "up to 10 attachments"),
        ("chat.message", {**good, "att": ["file"]}, "an attachment is an object"),
        ("chat.message", {**good, "att": [{**attachment, "id": 1}]}, "an attachment has an id"),
        ("chat.message", {**good, "att": [{**attachment, "size": -1}]}, "a size in bytes"),
        ("chat.message", {**good, "att": [{**attachment, "size": "3"}]}, "a size in bytes"),
        ("chat.message", {**good, "att": [{**attachment, "key": "short"}]}, "32-byte key"),
        ("chat.message", {**good, "att": [{**attachment, "key": "!" * 43}]}, "32-byte key"),
        ("chat.message", {**good, "att": [{**attachment, "name": "../x"}]}, "slashes"),
        ("chat.message", {**good, "att": [{**attachment, "name": 5}]}, "a file's name"),
        ("chat.edit", {"c": conv}, "names its message id"),
        ("chat.edit", {"c": conv, "id": "nosuchmessage", "text": "x"}, "no such message"),
        ("chat.delete", ["x"], "a chat.delete body is an object"),
        ("chat.read", {"c": conv, "n": "all"}, "a read mark is a message's counter"),
        ("chat.read", {"c": conv, "n": 10**9}, "a read mark is a message's counter"),
        ("chat.react", {"c": conv}, "names its message id"),
        ("chat.group", {"c": room.group}, "a group message carries 1 to 5000 changes"),
        ("chat.group", {"c": room.group, "events": "all"}, "1 to 5000 changes"),
        ("chat.group", {"c": room.group, "events": [5]}, "a group change is an object"),
    ]
    for kind, body, says in cases:
        answer = deliver(key, room.babbage, kind, body)
        not_taken(answer, 400, says)
    assert texts(room.babbage, conv) == before
    assert "att1" not in json.dumps(messages(room.babbage, conv))
    # the same message well formed is taken: it was the malformation that was refused
    assert deliver(key, room.babbage, "chat.message", good).status_code == 202
    arrives(room.babbage, conv, "well formed")
    still_talking(room, "malformed bodies")


def test_a_reaction_that_is_letters_is_refused(room: Room) -> None:
    mine = send(room.babbage, room.side, "react to this")
    arrives(room.charles, room.side, "react to this")
    key = room.charles_key
    for emoji in ("lol", "a", "👍a", "1", " ", "👍 ", "\u200b", "", "🎉" * 17, 5, None):
        body = {"c": room.side, "id": mine["id"], "emoji": emoji, "on": True}
        answer = deliver(key, room.babbage, "chat.react", body)
        not_taken(answer, 400, "a reaction is")
    not_taken(
        deliver(key, room.babbage, "chat.react", {"c": room.side, "id": mine["id"], "emoji": "👍"}),
        400,
        "put on (true) or taken back (false)",
    )
    path = f"/api/chat/conversations/{room.side}/messages/{mine['id']}/reactions"
    for emoji in ("lol", "ok👍", "", "\n"):
        refused(room.babbage.call("POST", path, json={"emoji": emoji}), 400, "a reaction is")
    assert message(room.babbage, room.side, mine["id"])["reactions"] == []
    # a real one is taken
    body = {"c": room.side, "id": mine["id"], "emoji": "👍🏽", "on": True}
    assert deliver(key, room.babbage, "chat.react", body).status_code == 202
    reactions = message(room.babbage, room.side, mine["id"])["reactions"]
    assert [(r["emoji"], r["names"]) for r in reactions] == [("👍🏽", ["Charles"])]
    still_talking(room, "a reaction of letters")


# attachments ---------------------------------------------------------------------------------


def _raw_upload(peer: Peer, conv: str, headers: dict[str, str]) -> socket.socket:
    address = urlsplit(peer.url)
    sock = socket.create_connection((address.hostname, address.port), timeout=10)
    lines = [
        f"POST /api/chat/conversations/{conv}/attachments?name=big.bin HTTP/1.1",
        f"Host: {address.netloc}",
        f"Authorization: Bearer {peer.token}",
        "Content-Type: application/octet-stream",
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    return sock


def _read_response(sock: socket.socket) -> tuple[int, dict[str, Any]]:
    """The status and JSON body of the answer on ``sock``."""
    data = b""
    while b"\r\n\r\n" not in data:
        piece = sock.recv(65536)
        assert piece, data
        data += piece
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    fields = dict(line.split(": ", 1) for line in lines[1:])
    length = int({k.lower(): v for k, v in fields.items()}["content-length"])
    while len(rest) < length:
        piece = sock.recv(65536)
        assert piece, rest
        rest += piece
    return int(lines[0].split()[1]), json.loads(rest[:length])


def test_an_attachment_declared_over_the_limit_is_refused_before_its_body(room: Room) -> None:
    used = files_used(room.ada)
    started = time.monotonic()
    with _raw_upload(room.ada, room.pair, {"Content-Length": str(MAX_ATTACHMENT + 1)}) as sock:
        sock.sendall(b"x" * 1024)  # a start of it; the rest never comes
        status, body = _read_response(sock)  # answered without waiting for 100 MiB
    assert time.monotonic() - started < 5
    assert status == 413 and body["error"]["code"] == "too_large"
    assert "an attachment is at most 100 MiB; this one is 100.0 MiB" in body["error"]["message"]
    huge = "9" * 19  # no body is that large (and more digits are not HTTP the server reads)
    with _raw_upload(room.ada, room.pair, {"Content-Length": huge}) as sock:
        status, body = _read_response(sock)
    assert status == 413 and "at most 100 MiB" in body["error"]["message"], body
    assert files_used(room.ada) == used
    assert "big.bin" not in json.dumps(room.ada.call("GET", "/api/files/tree/Chat").json())
    still_talking(room, "a declared oversized attachment")


def test_a_streamed_attachment_over_the_limit_is_cut_off(room: Room) -> None:
    used = files_used(room.ada)
    data_dir = room.ada.process.data_dir
    on_disk = sum(p.stat().st_size for p in data_dir.rglob("*") if p.is_file())
    piece = b"\x00" * (1024 * 1024)
    chunk = b"%x\r\n%s\r\n" % (len(piece), piece)
    sent = 0
    started = time.monotonic()
    with _raw_upload(room.ada, room.pair, {"Transfer-Encoding": "chunked"}) as sock:
        sock.settimeout(2)
        # bounded: the limit and 16 MiB more at most, within 60 s
        while sent <= MAX_ATTACHMENT + 16 * 1024 * 1024 and time.monotonic() - started < 60:
            if select.select([sock], [], [], 0)[0]:
                break  # the twin answered
            try:
                sock.sendall(chunk)
            except (TimeoutError, BrokenPipeError, ConnectionResetError):
                break
            sent += len(piece)
        sock.settimeout(10)
        status, body = _read_response(sock)
    assert time.monotonic() - started < 60
    assert status == 413, body
    assert "an attachment is at most 100 MiB; this one is more than 100" in body["error"]["message"]
    assert MAX_ATTACHMENT < sent <= MAX_ATTACHMENT + 16 * 1024 * 1024, sent
    # nothing of it was kept: not in Files, not on disk
    assert files_used(room.ada) == used
    assert "big.bin" not in json.dumps(room.ada.call("GET", "/api/files/tree/Chat").json())
    grown = sum(p.stat().st_size for p in data_dir.rglob("*") if p.is_file()) - on_disk
    assert grown < 8 * 1024 * 1024, grown
    still_talking(room, "a streamed oversized attachment")


def test_an_attachment_name_with_a_slash_is_refused(room: Room) -> None:
    folders = chat_folders(room.ada)
    used = files_used(room.ada)
    base = f"/api/chat/conversations/{room.pair}/attachments"
    for name, says in (
        ("a/b.txt", "must not contain slashes"),
        ("../../etc/passwd", "must not contain slashes"),
        ("..\\evil.txt", "must not contain slashes"),
        ("..", "be . or .."),
        (".", "be . or .."),
        ("", "must not be empty"),
        ("line\nbreak.txt", "control characters"),
        ("\u202etxt.exe", "direction overrides"),
        ("x" * 201, "at most 200 characters"),
    ):
        response = room.ada.call("POST", base, params={"name": name}, content=b"content")
        refused(response, 400, says)
    refused(room.ada.call("POST", base, content=b"content"), 400, "a file's name must not be empty")
    assert chat_folders(room.ada) == folders and files_used(room.ada) == used
    still_talking(room, "an attachment name with a slash")


# paging, search and the stream ---------------------------------------------------------------


def test_wrong_paging_parameters_are_refused(room: Room) -> None:
    base = f"/api/chat/conversations/{room.pair}/messages"
    for query, status, says in (
        ("limit=0", 400, "limit is 1 to 200"),
        ("limit=201", 400, "limit is 1 to 200"),
        ("limit=abc", 400, "limit must be a whole number, not 'abc'"),
        ("limit=-1", 400, "limit must be a whole number"),
        ("limit=1.5", 400, "limit must be a whole number"),
        ("limit=" + "9" * 40, 400, "limit must be a whole number"),
        ("limit=%EF%BC%95", 400, "limit must be a whole number"),  # a full-width digit five
        ("before=nosuchmessage", 404, "there is no such message in this conversation"),
    ):
        refused(room.ada.call("GET", f"{base}?{query}"), status, says)
    # a message of another conversation is not a place in this one
    elsewhere = send(room.ada, room.group, "in the group")
    refused(room.ada.call("GET", f"{base}?before={elsewhere['id']}"), 404, "no such message")
    refused(room.ada.call("GET", "/api/chat/conversations/nosuch/messages"), 404, "no such conv")
    page = room.ada.get(f"{base}?limit=1")
    assert len(page["messages"]) == 1 and page["more"] is True
    still_talking(room, "wrong paging")


def test_a_search_over_200_characters_is_refused(room: Room) -> None:
    refused(room.ada.call("GET", "/api/chat/search", params={"q": "a" * 201}), 400, "at most 200")
    refused(room.ada.call("GET", "/api/chat/search", params={"q": "é" * 201}), 400, "at most 200")
    assert room.ada.call("GET", "/api/chat/search", params={"q": "a" * 200}).status_code == 200
    assert room.ada.get("/api/chat/search?q=")["messages"] == []
    unknown = room.ada.call("GET", "/api/chat/search", params={"q": "x", "conversation": "nosuch"})
    refused(unknown, 404, "no such conversation")
    still_talking(room, "a long search")


def test_a_stream_from_a_wrong_place_is_refused(room: Room) -> None:
    for since in ("abc", "-1", "1.5", "1e3", "０"):
        response = room.ada.call("GET", "/api/chat/stream", params={"since": since})
        refused(response, 400, "since must be an event's id")
    wrong = call(room.ada, "GET", "/api/chat/stream", {"Last-Event-ID": "abc"})
    refused(wrong, 400, "since must be an event's id, not 'abc'")
    still_talking(room, "a wrong stream position")
