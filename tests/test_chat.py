"""Chat between real `twin serve` processes on loopback: direct and group conversations, a
member offline during ten group messages, edits and deletes reaching everyone, a removed
member receiving nothing new, attachments fetched over the peer protocol, and the live
stream."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from chats import direct, make_group, messages, send, shows, texts, three_friends
from conftest import start_twin, stop_twin, wait_for
from twins import Peer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Peer, Peer, Peer]]:
    with three_friends(tmp_path_factory.mktemp("chat")) as peers:
        yield peers


def test_a_direct_conversation_both_ways(trio: tuple[Peer, Peer, Peer]) -> None:
    ada, babbage, _ = trio
    conv = direct(ada, babbage)
    assert conv["kind"] == "direct" and conv["name"] == "Babbage"
    sent = send(ada, conv["id"], "Hello Babbage 👋")
    assert sent["mine"] and sent["status"] in ("queued", "sent", "delivered")
    shows(babbage, conv["id"], ["Hello Babbage 👋"])
    theirs = babbage.get(f"/api/chat/conversations/{conv['id']}")
    assert theirs["name"] == "Ada" and theirs["unread"] == 1
    reply = send(babbage, conv["id"], "Hello Ada", reply_to=sent["id"])
    assert reply["reply_to"]["text"] == "Hello Babbage 👋"
    shows(ada, conv["id"], ["Hello Babbage 👋", "Hello Ada"])
    # replying is reading: Ada's first message shows read once the reply is in
    wait_for(lambda: messages(ada, conv["id"])[0]["status"] == "read", 10, "read by replying")
    # a second one is delivered, and read once Babbage marks it so
    second = send(ada, conv["id"], "Are you there?")
    shows(babbage, conv["id"], ["Hello Babbage 👋", "Hello Ada", "Are you there?"])
    wait_for(lambda: messages(ada, conv["id"])[-1]["status"] == "delivered", 10, "delivered")
    assert babbage.get(f"/api/chat/conversations/{conv['id']}")["unread"] == 1
    read = babbage.call(
        "POST", f"/api/chat/conversations/{conv['id']}/read", json={"upto": second["id"]}
    )
    assert read.status_code == 200 and read.json()["unread"] == 0
    wait_for(lambda: messages(ada, conv["id"])[-1]["status"] == "read", 10, "read")
    # a reaction and an edit reach the other side
    reacted = babbage.call(
        "POST",
        f"/api/chat/conversations/{conv['id']}/messages/{sent['id']}/reactions",
        json={"emoji": "👍", "on": True},
    )
    assert reacted.status_code == 200, reacted.text
    wait_for(
        lambda: [r["emoji"] for r in messages(ada, conv["id"])[0]["reactions"]] == ["👍"],
        10,
        "the reaction",
    )

    # search finds words by their start, every word of the search, in the sealed history
    def found(peer: Peer, query: str) -> list[str]:
        answer = peer.get(f"/api/chat/search?q={query}&conversation={conv['id']}")
        assert answer["complete"]
        return [m["text"] for m in answer["messages"]]

    assert found(ada, "babb") == ["Hello Babbage 👋"]
    assert found(babbage, "HELLO") == ["Hello Ada", "Hello Babbage 👋"]  # latest first
    assert found(babbage, "hello ad") == ["Hello Ada"]
    assert found(babbage, "ello") == []  # a word's start, not its middle
    # the order is the same on both twins
    assert [m["id"] for m in messages(ada, conv["id"])] == [
        m["id"] for m in messages(babbage, conv["id"])
    ]


def test_a_group_with_an_offline_member_edits_deletes_and_removal(
    trio: tuple[Peer, Peer, Peer],
) -> None:
    ada, babbage, charles = trio
    conv = make_group(ada, 'Engine / "Analytical" <b>', babbage, charles)["id"]
    wait_for(
        lambda: (
            texts(charles, conv) == []
            and charles.call("GET", f"/api/chat/conversations/{conv}").status_code == 200
        ),
        15,
        "the group at Charles",
    )
    first = send(babbage, conv, "Babbage here")
    shows(ada, conv, ["Babbage here"])
    shows(charles, conv, ["Babbage here"])
    # Charles is away while ten messages go out
    port = int(charles.url.rsplit(":", 1)[1])
    stop_twin(charles.process)
    sent = []
    for i in range(10):
        author, other = (ada, babbage) if i % 2 else (babbage, ada)
        sent.append(send(author, conv, f"message {i}"))
        # each writes once the other's message is there, as in a conversation: the order
        # they saw is the order everyone sees (two messages written at once take the order
        # of their ids, the same on every twin)
        shows(other, conv, [f"message {i}"])
    charles.process = start_twin(
        charles.process.log.parent,
        "--peer-backoff",
        "2",
        data_dir=charles.process.data_dir,
        port=port,
    )
    charles.connect()
    wanted = ["Babbage here"] + [f"message {i}" for i in range(10)]
    shows(charles, conv, wanted, timeout=40)
    assert texts(ada, conv) == wanted and texts(babbage, conv) == wanted
    assert [m["id"] for m in messages(charles, conv)] == [m["id"] for m in messages(ada, conv)]
    # an edit and a delete reach everyone
    edited = babbage.call(
        "PATCH",
        f"/api/chat/conversations/{conv}/messages/{first['id']}",
        json={"text": "Babbage here (edited)"},
    )
    assert edited.status_code == 200, edited.text
    gone = ada.call("DELETE", f"/api/chat/conversations/{conv}/messages/{sent[1]['id']}")
    assert gone.status_code == 200, gone.text
    for peer in trio:
        wait_for(lambda p=peer: texts(p, conv)[0] == "Babbage here (edited)", 15, "the edit")
        wait_for(
            lambda p=peer: [m for m in messages(p, conv) if m["id"] == sent[1]["id"]][0]["deleted"],
            15,
            "the delete",
        )
    # someone else's message cannot be edited or deleted
    refused = ada.call(
        "PATCH", f"/api/chat/conversations/{conv}/messages/{first['id']}", json={"text": "mine"}
    )
    assert refused.status_code == 403, refused.text
    # Charles is removed and receives nothing new
    removed = ada.call("DELETE", f"/api/chat/conversations/{conv}/members/{charles.did}")
    assert removed.status_code == 200, removed.text
    wait_for(lambda: not charles.get(f"/api/chat/conversations/{conv}")["active"], 15, "removal")
    wait_for(
        lambda: (
            charles.did
            not in [m["did"] for m in babbage.get(f"/api/chat/conversations/{conv}")["members"]]
        ),
        15,
        "the removal at Babbage",
    )
    send(babbage, conv, "after Charles left")
    shows(ada, conv, ["after Charles left"])
    assert "after Charles left" not in texts(charles, conv)
    late = charles.call("POST", f"/api/chat/conversations/{conv}/messages", json={"text": "hi"})
    assert late.status_code == 409, late.text


def test_an_attachment_is_fetched_by_the_recipient(trio: tuple[Peer, Peer, Peer]) -> None:
    ada, babbage, _ = trio
    conv = direct(ada, babbage)["id"]
    content = bytes(range(256)) * 1000 + b"end"
    uploaded = ada.call(
        "POST", f"/api/chat/conversations/{conv}/attachments?name=table.bin", content=content
    )
    assert uploaded.status_code == 201, uploaded.text
    att = uploaded.json()
    assert att["size"] == len(content)
    send(ada, conv, "", attachments=[att["id"]])

    def fetched() -> bool:
        found = [m for m in messages(babbage, conv) if m["attachments"]]
        return bool(found) and found[-1]["attachments"][0]["state"] == "ready"

    wait_for(fetched, 20, "the attachment at Babbage")
    got = babbage.call("GET", f"/api/chat/attachments/{att['id']}?download=1")
    assert got.status_code == 200 and got.content == content


def test_the_live_stream_shows_a_new_message(trio: tuple[Peer, Peer, Peer]) -> None:
    ada, babbage, _ = trio
    conv = direct(ada, babbage)["id"]
    seen: list[dict[str, Any]] = []
    ready = threading.Event()

    def follow() -> None:
        headers = {"Authorization": f"Bearer {babbage.token}"}
        with httpx.stream(
            "GET", babbage.url + "/api/chat/stream?since=0", headers=headers, timeout=20
        ) as response:
            kind = ""
            for line in response.iter_lines():
                if line.startswith("event: "):
                    kind = line[7:]
                    if kind == "ready":
                        ready.set()
                elif line.startswith("data: ") and kind == "message":
                    seen.append(json.loads(line[6:]))
                    if seen[-1]["text"] == "live!":
                        return

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    assert ready.wait(10)
    send(ada, conv, "live!")
    thread.join(15)
    assert seen and seen[-1]["text"] == "live!" and seen[-1]["sender_name"] == "Ada"
