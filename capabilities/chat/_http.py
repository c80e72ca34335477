"""The HTTP face of chat: ``/api/chat/…`` for the Chat experience, other experiences (with
``chat:send``) and scripts, and the live stream of what changes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import quote

import msgspec
from starlette.responses import Response, StreamingResponse

from twin import BadInput, Call, RateLimited, api
from twin.api import Endpoint
from twin.streams import EventStream, first_of

from ._store import Marks, Message
from ._views import conversation_view, message_views

if TYPE_CHECKING:
    from . import Chat

KEEP_ALIVE = 15.0
STREAM_PACE = 0.01  # seconds at least between two batches of a busy live stream
BUSY = 3  # messages in a batch that make a stream busy (they came while the last was made)
STREAMS = 64
_Did = Annotated[str, msgspec.Meta(max_length=200)]
_Id = Annotated[str, msgspec.Meta(max_length=64)]
# no length of its own: the body's size bounds it, and check_text names the real limit (a
# decoder's "length <= 16000" would tell a writer of 10,000 emoji nothing useful)
_Text = str


class NewDirect(msgspec.Struct, forbid_unknown_fields=True):
    with_: _Did = msgspec.field(name="with")


class NewGroup(msgspec.Struct, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(max_length=200)]
    members: Annotated[list[_Did], msgspec.Meta(max_length=999)]


class ConversationChange(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    muted: bool | None = None
    name: Annotated[str, msgspec.Meta(max_length=200)] | None = None


class NewMember(msgspec.Struct, forbid_unknown_fields=True):
    did: _Did
    admin: bool = False


class MemberChange(msgspec.Struct, forbid_unknown_fields=True):
    admin: bool


class NewMessage(msgspec.Struct, forbid_unknown_fields=True):
    text: _Text = ""
    reply_to: _Id | None = None
    attachments: Annotated[list[_Id], msgspec.Meta(max_length=10)] = []


class Edit(msgspec.Struct, forbid_unknown_fields=True):
    text: _Text


class Reaction(msgspec.Struct, forbid_unknown_fields=True):
    emoji: Annotated[str, msgspec.Meta(max_length=64)]
    on: bool = True


class ReadMark(msgspec.Struct, forbid_unknown_fields=True):
    upto: _Id


class Block(msgspec.Struct, forbid_unknown_fields=True):
    did: _Did


class Member(msgspec.Struct):
    did: str
    name: str
    me: bool
    admin: bool
    blocked: bool
    contact: bool


class Reacted(msgspec.Struct):
    emoji: str
    count: int
    mine: bool
    names: list[str]


class AttachmentInfo(msgspec.Struct):
    id: str
    name: str
    size: int
    type: str
    state: str = "ready"
    received: int = 0
    error: str | None = None


class Quote(msgspec.Struct):
    id: str
    mine: bool
    sender_name: str
    text: str
    deleted: bool
    missing: bool


class MessageInfo(msgspec.Struct):
    id: str
    conversation: str
    n: int
    sender: str
    sender_name: str
    mine: bool
    kind: str
    text: str
    sent: float
    received: float
    reply_to: Quote | None
    edited: float | None
    deleted: bool
    reactions: list[Reacted]
    attachments: list[AttachmentInfo]
    status: str | None
    delivered: int | None
    read: int | None
    recipients: int | None
    blocked: bool


class ConversationInfo(msgspec.Struct):
    id: str
    kind: str
    name: str
    members: list[Member]
    admin: bool
    active: bool
    muted: bool
    unread: int
    last: MessageInfo | None
    updated: float
    created: float


class ConversationList(msgspec.Struct):
    conversations: list[ConversationInfo]
    seq: int  # where the live stream stands: follow it with since=seq


class MessagePage(msgspec.Struct):
    messages: list[MessageInfo]
    more: bool


class Found(msgspec.Struct):
    messages: list[MessageInfo]
    complete: bool  # false: it stopped before looking at every candidate (say so, refine)


class Person(msgspec.Struct):
    did: str
    name: str
    blocked: bool


class People(msgspec.Struct):
    people: list[Person]


class Uploaded(msgspec.Struct):
    id: str
    name: str
    size: int
    type: str


def _number(call: Call, name: str, default: int, high: int) -> int:
    text = call.query.get(name) or ""
    if not text:
        return default
    if not (text.isascii() and text.isdigit()) or len(text) > 18:
        raise BadInput(f"{name} must be a whole number, not {text[:40]!r}")
    value = int(text)
    if not 1 <= value <= high:
        raise BadInput(f"{name} is 1 to {high}")
    return value


def endpoints(chat: Chat) -> list[Endpoint]:
    store = chat.store
    streams: dict[str, int] = {}

    async def conv_of(call: Call) -> Any:
        return await store.conversation(call.params["id"])

    async def one_view(conv: Any) -> dict[str, Any]:
        return await conversation_view(chat, conv)

    async def message_view(conv: Any, message: Any) -> dict[str, Any]:
        return (await message_views(chat, conv, [message]))[0]

    async def people(call: Call) -> dict[str, Any]:
        found = []
        for person in await chat.contacts.book.all():
            if person.status in ("connected", "blocked"):
                found.append(
                    {"did": person.did, "name": person.name, "blocked": person.status == "blocked"}
                )
        return {"people": sorted(found, key=lambda p: p["name"].casefold())}

    async def listing(call: Call) -> dict[str, Any]:
        await store.load()
        seq = store.seq  # before reading: a change made meanwhile comes again on the stream
        return {
            "conversations": [await one_view(c) for c in await store.conversations()],
            "seq": seq,
        }

    async def direct(call: Call) -> Response | dict[str, Any]:
        conv, new = await chat.direct(call.body.with_)
        view = await one_view(conv)
        if new:
            return Response(msgspec.json.encode(view), 201, media_type="application/json")
        return view

    async def group(call: Call) -> dict[str, Any]:
        return await one_view(await chat.new_group(call.body.name, call.body.members))

    async def one(call: Call) -> dict[str, Any]:
        return await one_view(await conv_of(call))

    async def change(call: Call) -> dict[str, Any]:
        conv = await conv_of(call)
        body: ConversationChange = call.body
        if body.name is not None:
            conv = await chat.change_group(conv, "rename", name=body.name)
        if body.muted is not None:
            conv = await chat.set_muted(conv, body.muted)
        return await one_view(conv)

    async def leave(call: Call) -> dict[str, Any]:
        return await one_view(await chat.change_group(await conv_of(call), "leave"))

    async def add_member(call: Call) -> dict[str, Any]:
        conv = await chat.change_group(await conv_of(call), "add", did=call.body.did)
        if call.body.admin:
            conv = await chat.change_group(conv, "admin", did=call.body.did)
        return await one_view(conv)

    async def change_member(call: Call) -> dict[str, Any]:
        action = "admin" if call.body.admin else "unadmin"
        return await one_view(
            await chat.change_group(await conv_of(call), action, did=call.params["did"])
        )

    async def remove_member(call: Call) -> dict[str, Any]:
        conv = await chat.change_group(await conv_of(call), "remove", did=call.params["did"])
        return await one_view(conv)

    async def messages(call: Call) -> dict[str, Any]:
        conv = await conv_of(call)
        before_id = call.query.get("before")
        before = await store.message(conv.id, before_id) if before_id else None
        found, more = await store.page(conv.id, before, _number(call, "limit", 50, 200))
        return {"messages": await message_views(chat, conv, found), "more": more}

    async def post(call: Call) -> dict[str, Any]:
        conv = await conv_of(call)
        body: NewMessage = call.body
        message, envelopes = await chat._post(
            conv, body.text, reply_to=body.reply_to, attachments=body.attachments
        )
        # a message just written has no reactions, no reads yet and its envelopes queued
        fresh = Marks({}, {message.id: {"queued": envelopes}} if envelopes else {}, [])
        return (await message_views(chat, conv, [message], fresh))[0]

    async def edit(call: Call) -> dict[str, Any]:
        conv = await conv_of(call)
        message = await chat.edit(conv, call.params["mid"], call.body.text)
        return await message_view(conv, message)

    async def delete(call: Call) -> dict[str, Any]:
        conv = await conv_of(call)
        return await message_view(conv, await chat.delete(conv, call.params["mid"]))

    async def react(call: Call) -> dict[str, Any]:
        conv = await conv_of(call)
        message = await chat.react(conv, call.params["mid"], call.body.emoji, call.body.on)
        return await message_view(conv, message)

    async def read(call: Call) -> dict[str, Any]:
        return await one_view(await chat.mark_read(await conv_of(call), call.body.upto))

    async def upload(call: Call) -> dict[str, Any]:
        conv = await conv_of(call)
        length_text = call.request.headers.get("content-length")
        length = int(length_text) if length_text and length_text.isdigit() else None
        att = await chat.attachments.upload(
            conv, call.query.get("name", ""), call.request.stream(), length
        )
        public: dict[str, Any] = att.public()
        return public

    async def download(call: Call) -> Response:
        att, entry = await chat.attachments.content(call.params["id"])
        disposition = "attachment" if call.query.get("download") else "inline"
        safe_inline = att.type.startswith(("image/", "video/", "audio/")) and "svg" not in att.type
        if not safe_inline:
            disposition = "attachment"
        return StreamingResponse(
            chat.attachments.files.store.read(entry),
            media_type=att.type if safe_inline else "application/octet-stream",
            headers={
                "Content-Length": str(entry.size),
                "Content-Disposition": f"{disposition}; filename*=UTF-8''{quote(att.name)}",
                "X-Content-Type-Options": "nosniff",
                "Cache-Control": "private, max-age=3600",
            },
        )

    async def search(call: Call) -> dict[str, Any]:
        query = call.query.get("q", "")
        if len(query) > 200:
            raise BadInput("a search is at most 200 characters")
        conv_id = call.query.get("conversation") or None
        if conv_id is not None:
            await store.conversation(conv_id)
        found, complete = await store.search(query, conv_id)
        return {"messages": await message_views(chat, None, found), "complete": complete}

    async def block(call: Call) -> None:
        await chat.block(call.body.did)

    async def unblock(call: Call) -> None:
        await chat.unblock(call.params["did"])

    async def stream(call: Call) -> Response:
        since_text = call.query.get("since") or call.request.headers.get("last-event-id", "")
        since_text = since_text.strip()
        if since_text and not (since_text.isascii() and since_text.isdigit()):
            raise BadInput(f"since must be an event's id, not {since_text[:40]!r}")
        since = int(since_text or 0) if len(since_text) < 19 else 0
        caller = call.principal.label
        if sum(streams.values()) >= STREAMS or streams.get(caller, 0) >= 8:
            raise RateLimited("too many live streams are open: close one", retry_after=5)
        streams[caller] = streams.get(caller, 0) + 1

        def closed() -> None:
            streams[caller] -= 1
            if not streams[caller]:
                del streams[caller]

        return EventStream(events(call, since), closed)

    async def events(call: Call, since: int) -> AsyncIterator[bytes]:
        stopping = chat.context.stopping
        ready = False
        busy_until = 0.0  # while a batch carried several messages, the next waits till then
        while not stopping.is_set():
            woke = store.woke()
            items, since, more = await store.changes(since)
            if ready and (await call.recheck()) is None:
                yield b'event: end\ndata: {"reason": "access withdrawn"}\n\n'
                return
            if items:
                yield await _events_of(chat, items)
                if sum(isinstance(item, Message) for item in items) >= BUSY:
                    busy_until = time.monotonic() + STREAM_PACE
            if more:
                continue
            if not ready:
                ready = True
                yield b'event: ready\ndata: {"seq": %d}\n\n' % since
            if not await first_of(woke, stopping, timeout=KEEP_ALIVE):
                yield b": keep-alive\n\n"
                continue
            # a busy stream gathers what comes over a few milliseconds into one batch: each
            # batch costs a few reads, however many changes it carries
            pause = busy_until - time.monotonic()
            if pause > 0:
                await asyncio.sleep(pause)

    conv_path = "/conversations/{id}"
    msg_path = conv_path + "/messages/{mid}"
    return [
        api.get(
            "/people",
            people,
            permission="read",
            response=People,
            summary="The contacts you can chat with",
        ),
        api.get(
            "/conversations",
            listing,
            permission="read",
            response=ConversationList,
            summary="Every conversation, the most recently active first",
        ),
        api.post(
            "/conversations",
            direct,
            permission="manage",
            body=NewDirect,
            response=ConversationInfo,
            other_statuses=(201,),
            summary="The direct conversation with a contact (201 when it is new)",
        ),
        api.post(
            "/groups",
            group,
            permission="manage",
            body=NewGroup,
            status=201,
            response=ConversationInfo,
            summary="A new group with some of your contacts",
        ),
        api.get(
            conv_path, one, permission="read", response=ConversationInfo, summary="One conversation"
        ),
        api.patch(
            conv_path,
            change,
            permission="manage",
            body=ConversationChange,
            response=ConversationInfo,
            summary="Mute or unmute a conversation; rename a group (admins)",
        ),
        api.post(
            conv_path + "/leave",
            leave,
            permission="manage",
            response=ConversationInfo,
            summary="Leave a group (its members are told)",
        ),
        api.post(
            conv_path + "/members",
            add_member,
            permission="manage",
            body=NewMember,
            response=ConversationInfo,
            summary="Add a contact to a group (admins)",
        ),
        api.patch(
            conv_path + "/members/{did}",
            change_member,
            permission="manage",
            body=MemberChange,
            response=ConversationInfo,
            summary="Make a member an admin, or no longer one (admins)",
        ),
        api.delete(
            conv_path + "/members/{did}",
            remove_member,
            permission="manage",
            response=ConversationInfo,
            summary="Remove a member from a group (admins)",
        ),
        api.get(
            conv_path + "/messages",
            messages,
            permission="read",
            response=MessagePage,
            query=(
                ("before", "a message id: the page before it"),
                ("limit", "1 to 200 (default 50)"),
            ),
            summary="The latest messages, oldest first, in conversation order",
        ),
        api.post(
            conv_path + "/messages",
            post,
            permission="send",
            body=NewMessage,
            status=201,
            response=MessageInfo,
            summary="Post a message",
        ),
        api.patch(
            msg_path,
            edit,
            permission="send",
            body=Edit,
            response=MessageInfo,
            summary="Edit your own message (everyone's copy changes)",
        ),
        api.delete(
            msg_path,
            delete,
            permission="send",
            response=MessageInfo,
            summary="Delete your own message everywhere (a tombstone stays)",
        ),
        api.post(
            msg_path + "/reactions",
            react,
            permission="send",
            body=Reaction,
            response=MessageInfo,
            summary="Put a reaction on a message, or take it back",
        ),
        api.post(
            conv_path + "/read",
            read,
            permission="send",
            body=ReadMark,
            response=ConversationInfo,
            summary="Mark the conversation read up to a message (the others see it)",
        ),
        api.post(
            conv_path + "/attachments",
            upload,
            permission="send",
            stream_body=True,
            status=201,
            response=Uploaded,
            query=(("name", "the file's name"),),
            summary="Upload a file to attach to the next message (at most 100 MiB)",
        ),
        api.get(
            "/attachments/{id}",
            download,
            permission="read",
            raw_response="application/octet-stream",
            query=(("download", "1 to download instead of showing it"),),
            summary="An attachment's content",
        ),
        api.get(
            "/search",
            search,
            permission="read",
            response=Found,
            query=(
                ("q", "words, each matched as a word or the start of one"),
                ("conversation", "only in this conversation"),
            ),
            summary="The latest 50 messages holding every word",
        ),
        api.post(
            "/blocked",
            block,
            permission="manage",
            body=Block,
            summary="Block a twin: its messages stop arriving, its old ones stay marked",
        ),
        api.delete("/blocked/{did}", unblock, permission="manage", summary="Unblock a twin"),
        api.get(
            "/stream",
            stream,
            permission="read",
            raw_response="text/event-stream",
            query=(("since", "the last event id you hold (or send Last-Event-ID)"),),
            summary="Conversations and messages as they change, as server-sent events",
        ),
    ]


async def _events_of(chat: Chat, items: list[Any]) -> bytes:
    """The stream's events for changed conversations and messages, in their order. The
    messages of one conversation are viewed together, and a conversation's last message is
    not viewed twice."""
    views: dict[str, dict[str, dict[str, Any]]] = {}  # conversation: message: view
    by_conv: dict[str, list[Message]] = {}
    for item in items:
        if isinstance(item, Message):
            by_conv.setdefault(item.conv, []).append(item)
    for conv_id, messages in by_conv.items():
        conv = await chat.store.find(conv_id)
        if conv is not None:
            made = await message_views(chat, conv, messages)
            views[conv_id] = {m.id: view for m, view in zip(messages, made, strict=True)}
    chunks = []
    for item in items:
        if isinstance(item, Message):
            view = views.get(item.conv, {}).get(item.id)
            if view is not None:
                chunks.append(_event("message", item.seq, view))
        else:
            view = await conversation_view(chat, item, views.get(item.id, {}))
            chunks.append(_event("conversation", item.seq, view))
    return b"".join(chunks)


def _event(kind: str, seq: int, view: dict[str, Any]) -> bytes:
    data = msgspec.json.encode(view)
    return b"event: %s\nid: %d\ndata: %s\n\n" % (kind.encode(), seq, data)
