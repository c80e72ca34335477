"""Chat in process, as a plugin and an experience use it: a contact's message heard through
``Chat.listen``, a post through the Python API queued for the contact's twin, and an
experience holding only ``chat:send`` posting without reading."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from test_peers_core import twin_with
from twin_capabilities.chat import Chat, direct_id

from twin.identity import Identity
from twin.peers import seal

pytestmark = pytest.mark.anyio


async def test_a_plugin_hears_messages_and_posts_through_the_python_api(tmp_path: Path) -> None:
    friend = Identity.generate()
    async with twin_with(tmp_path / "t") as (twin, client):
        chat = twin.registry.loaded["chat"].capability
        assert isinstance(chat, Chat)
        await twin.peers.pin(friend.did)
        await chat.contacts.book.add(friend.did, "connected", "Grace")
        heard: list[tuple[str, Any]] = []
        stop = chat.listen(lambda kind, item: heard.append((kind, item)))
        conv_id = direct_id(twin.did, friend.did)
        body = {"c": conv_id, "id": "m1", "n": 1, "sent": 1.0, "text": "hi from Grace", "name": "G"}
        answer = await client.post(
            "/p2p/v1/inbox", json=seal(friend, twin.did, "chat.message", body, ttl=600)
        )
        assert answer.status_code == 202, answer.text
        assert [(k, m.text, m.sender) for k, m in heard] == [
            ("message", "hi from Grace", friend.did)
        ]
        conv, new = await chat.direct(friend.did)
        assert not new and conv.id == conv_id and (await chat.store.summary(conv))[1] == 1
        posted = await chat.post(conv, "The build passed ✅")
        assert posted.mine and posted.n == 2  # after the counter it saw
        assert heard[-1] == ("message", posted)
        stop()
        await chat.post(conv, "unheard")
        assert len(heard) == 2
        peer = await twin.peers.directory.get(friend.did)
        assert peer is not None and (await twin.peers.outbox.health(peer)).queued == 2

        # an experience that may only send posts, and reads nothing
        _, sender = await twin.tokens.create(frozenset({"chat:send"}), "a build bot")
        headers = {"Authorization": f"Bearer {sender}"}
        sent = await client.post(
            f"/api/chat/conversations/{conv_id}/messages",
            json={"text": "deployed"},
            headers=headers,
        )
        assert sent.status_code == 201 and sent.json()["text"] == "deployed"
        for path in ("/api/chat/conversations", f"/api/chat/conversations/{conv_id}/messages"):
            refused = await client.get(path, headers=headers)
            assert refused.status_code == 403 and "chat:read" in refused.json()["error"]["message"]


async def test_a_message_comes_back_from_the_store_with_every_field(tmp_path: Path) -> None:
    # What is sealed is listed field by field: a field left out would be lost on the way back.
    from dataclasses import fields

    from twin_capabilities.chat._store import Message

    async with twin_with(tmp_path / "t") as (twin, _):
        chat = twin.registry.loaded["chat"].capability
        values: dict[str, Any] = {
            "conv": "d" + "0" * 31,
            "id": "m-every-field",
            "n": 7,
            "sender": Identity.generate().did,
            "mine": True,
            "sent": 12.5,
            "received": 13.5,
            "text": "every field",
            "kind": "event",
            "reply_to": "m-before",
            "attachments": [{"id": "a1", "name": "note.txt", "size": 3}],
            "edited": 14.5,
            "deleted": True,
        }
        assert set(values) | {"seq"} == {f.name for f in fields(Message)}
        stored = await chat.store.add(Message(**values))
        back = await chat.store.message(values["conv"], values["id"])
        assert back == stored and back.seq > 0
        assert {name: getattr(back, name) for name in values} == values


async def test_search_finds_what_was_just_written_and_edited_before_the_index_ran(
    tmp_path: Path,
) -> None:
    # the index is written in bulk a moment after messages come; a search does not wait for it
    from dataclasses import replace

    from twin_capabilities.chat._store import Message

    async with twin_with(tmp_path / "t") as (twin, _):
        store = twin.registry.loaded["chat"].capability.store
        conv, other = "d" + "1" * 31, Identity.generate().did
        first = await store.add(Message(conv, "m1", 1, other, False, 1.0, 1.0, "thermocline"))
        await store.add(Message(conv, "m2", 2, other, False, 2.0, 2.0, "xylophone music"))
        assert await twin.db.fetchval("SELECT count(*) FROM chat_unindexed") == 2
        assert [m.id for m in (await store.search("thermo", conv))[0]] == ["m1"]
        assert await twin.db.fetchval("SELECT count(*) FROM chat_unindexed") == 0
        await store.update(replace(first, text="a kettle"), text_changed=True)
        assert (await store.search("thermo", None))[0] == []
        assert [m.id for m in (await store.search("kett", None))[0]] == ["m1"]
        # the words of the old text are gone from the index (not only filtered out): "a", "ket"
        assert await twin.db.fetchval("SELECT count(*) FROM chat_words WHERE msg = 'm1'") == 2


async def test_messages_left_unindexed_by_a_stop_are_indexed_at_the_next_start(
    tmp_path: Path,
) -> None:
    from twin_capabilities.chat._store import Message

    conv, other = "d" + "2" * 31, Identity.generate().did
    async with twin_with(tmp_path / "t") as (twin, _):
        store = twin.registry.loaded["chat"].capability.store
        store.close = lambda: asyncio.sleep(0)  # as if the process were killed: nothing indexed
        await store.add(Message(conv, "m1", 1, other, False, 1.0, 1.0, "hello kettle"))
    async with twin_with(tmp_path / "t") as (twin, _):
        for _ in range(100):
            if not await twin.db.fetchval("SELECT count(*) FROM chat_unindexed"):
                break
            await asyncio.sleep(0.05)
        words = await twin.db.fetchval("SELECT count(*) FROM chat_words WHERE msg = 'm1'")
        assert words == 2  # "hel", "ket", found without any search asking for them
