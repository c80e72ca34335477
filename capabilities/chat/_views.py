"""Conversations and messages as the API shows them: names, reactions, attachment states and
delivery ticks put together from chat's tables."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._store import Conversation, Marks, Message

if TYPE_CHECKING:
    from . import Chat

QUOTE = 200


async def conversation_view(
    chat: Chat, conv: Conversation, known: dict[str, dict[str, Any]] | None = None
) -> dict[str, Any]:
    """``known``: views of some of its messages made just now, by id."""
    members = []
    for did in conv.members:
        person = await chat.contacts.book.by_did(did)
        members.append(
            {
                "did": did,
                "name": await chat.name_of(conv, did),
                "me": did == chat.me,
                "admin": did in conv.admins,
                "blocked": await chat.blocked(did),
                "contact": person is not None and person.status == "connected",
            }
        )
    last, unread = await chat.store.summary(conv)
    return {
        "id": conv.id,
        "kind": conv.kind,
        "name": await chat.title(conv),
        "members": members,
        "admin": conv.kind == "group" and chat.me in conv.admins and conv.active,
        "active": conv.active,
        "muted": conv.muted,
        "unread": unread,
        "last": await _last_view(chat, conv, last, known or {}),
        "updated": conv.updated,
        "created": conv.created,
    }


async def _last_view(
    chat: Chat, conv: Conversation, last: Message | None, known: dict[str, dict[str, Any]]
) -> dict[str, Any] | None:
    if last is None:
        return None
    if last.id in known:  # made in the same look at the changes
        return known[last.id]
    return (await message_views(chat, conv, [last]))[0]


async def message_views(
    chat: Chat, conv: Conversation | None, messages: list[Message], marks: Marks | None = None
) -> list[dict[str, Any]]:
    """Views of messages of one conversation (``conv`` None: look each one's up); ``marks``
    when they are known already."""
    if not messages:
        return []
    if conv is None:
        views = []
        for message in messages:
            views += await message_views(
                chat, await chat.store.conversation(message.conv), [message]
            )
        return views
    store = chat.store
    ids = [m.id for m in messages]
    if marks is None:
        mine = [m.id for m in messages if m.mine and m.kind == "text"]
        marks = await store.marks(conv.id, ids, mine)
    reactions, deliveries, reads = marks.reactions, marks.deliveries, marks.reads
    with_files = [m.id for m in messages if m.attachments]
    states = await _attachment_states(chat, conv.id, with_files) if with_files else {}
    names: dict[str, str] = {}
    blocked: dict[str, bool] = {}

    async def name(did: str) -> str:
        if did not in names:
            names[did] = "you" if did == chat.me else await chat.name_of(conv, did)
        return names[did]

    views = []
    for m in messages:
        if m.sender not in blocked:
            blocked[m.sender] = await chat.blocked(m.sender)
        view: dict[str, Any] = {
            "id": m.id,
            "conversation": m.conv,
            "n": m.n,
            "sender": m.sender,
            "sender_name": await chat.name_of(conv, m.sender),
            "mine": m.mine,
            "kind": m.kind,
            "text": m.text,
            "sent": m.sent,
            "received": m.received,
            "reply_to": await _quote(chat, conv, m.reply_to) if m.reply_to else None,
            "edited": m.edited,
            "deleted": m.deleted,
            "reactions": [
                {
                    "emoji": emoji,
                    "count": len(dids),
                    "mine": chat.me in dids,
                    "names": [await name(d) for d in dids],
                }
                for emoji, dids in reactions.get(m.id, {}).items()
            ],
            "attachments": [
                {**a, **states.get(a["id"], {"state": "failed", "received": 0, "error": None})}
                for a in m.attachments
            ],
            "status": None,
            "delivered": None,
            "read": None,
            "recipients": None,
            "blocked": blocked[m.sender],
        }
        if m.mine and m.kind == "text":
            counts = deliveries.get(m.id, {})
            total = sum(counts.values())
            delivered = counts.get("delivered", 0)
            read = sum(1 for n in reads if n >= m.n)
            if counts.get("failed"):
                status = "failed"
            elif total and read >= total:
                status = "read"
            elif delivered == total and total:
                status = "delivered"
            elif counts.get("sent") or delivered:
                status = "sent"
            else:
                status = "queued" if total else "delivered"
            view.update(status=status, delivered=delivered, read=min(read, total), recipients=total)
        views.append(view)
    return views


async def _quote(chat: Chat, conv: Conversation, message_id: str) -> dict[str, Any] | None:
    quoted = await chat.store.find_message(conv.id, message_id)
    if quoted is None:
        return {
            "id": message_id,
            "mine": False,
            "sender_name": "",
            "text": "",
            "deleted": False,
            "missing": True,
        }
    return {
        "id": quoted.id,
        "mine": quoted.mine,
        "sender_name": "you" if quoted.mine else await chat.name_of(conv, quoted.sender),
        "text": quoted.text[:QUOTE],
        "deleted": quoted.deleted,
        "missing": False,
    }


async def _attachment_states(chat: Chat, conv_id: str, ids: list[str]) -> dict[str, Any]:
    if chat.attachments is None:
        return {}
    marks = ",".join("?" * len(ids))
    rows = await chat.db.fetchall(
        f"SELECT * FROM chat_attachments WHERE conv = ? AND msg IN ({marks})", (conv_id, *ids)
    )
    found = {}
    for row in rows:
        att = chat.attachments.row(row)
        received = att.size if att.state == "ready" else chat.attachments.progress.get(att.id, 0)
        found[att.id] = {"state": att.state, "received": received, "error": att.error}
    return found
