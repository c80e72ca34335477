"""The ``chat`` capability: direct and group conversations between twins, each message sent
by its author's twin straight to every member's, with edits, deletes, reactions, read marks,
attachments, search over the sealed history and a live stream."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from twin import BadInput, Capability, Conflict, Forbidden, Holding, InvalidSignature, NotFound
from twin.api import Endpoint
from twin.identity import b64url, public_key_from_did
from twin.peers import Message as Envelope
from twin.peers import MessageType, PeerChannel, State

from ..contacts import Contacts
from . import _groups
from ._store import MIGRATIONS, Conversation, Message, Store
from ._text import check_emoji, check_name, check_text

if TYPE_CHECKING:
    from twin.export import Export, Part

__all__ = ["Chat", "Conversation", "Message"]

MAX_ATTACHMENTS = 10
MAX_REACTIONS = 20  # distinct emoji one member puts on one message
MAX_JUMP = 1_000_000  # how far past the highest counter seen a message may claim to be
GROUP_BODY = 192 * 1024
HINTS_PER_MESSAGE = 200
WAIT_DAYS = 14
EARLY = 10_000

Listener = Callable[[str, Any], None]
Take = Callable[[Conversation, str, dict[str, Any]], Awaitable[None]]


def direct_id(a: str, b: str) -> str:
    """The id both twins give their direct conversation."""
    low, high = sorted((a, b))
    return "d" + hashlib.sha256(f"twin chat direct {low} {high}".encode()).hexdigest()[:31]


class Chat(Capability):
    """Conversations with other twins, for the Chat experience and any other that may send."""

    migrations = MIGRATIONS

    def __init__(self, context: Any) -> None:
        super().__init__(context)
        if context.peers is None:
            raise BadInput("the chat capability needs the twin's peers")
        self.peers: PeerChannel = context.peers
        self.store = Store(context.db, context.box("messages"), context.box("search"))
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._listeners: list[Listener] = []
        self.attachments: Any = None  # built at start-up (it needs files)
        self._tasks: set[asyncio.Task[None]] = set()
        self._early: dict[str, State] = {}  # delivery states that came before their row
        self._noted: set[str] = set()
        self._statuses: dict[str, State] = {}  # delivery states not written yet
        self._noting: set[asyncio.Future[None]] = set()  # envelopes of messages being noted
        self._status_writer: asyncio.Task[None] | None = None
        # whether this process looked for messages whose envelopes the outbox lost, or is
        # restoring an export (its messages go out from the twin that serves, not from here)
        self._resent = False
        self._handlers = {
            "chat.message": self._in_conversation(self._take_message),
            "chat.edit": self._in_conversation(self._take_edit),
            "chat.delete": self._in_conversation(self._take_delete),
            "chat.react": self._in_conversation(self._take_reaction),
            "chat.read": self._in_conversation(self._take_read),
        }

    @property
    def me(self) -> str:
        return self.peers.did

    def routes(self) -> Sequence[Endpoint]:
        from ._http import endpoints

        return endpoints(self)

    def messages(self) -> Sequence[MessageType]:
        on = self._handlers
        return [
            MessageType(
                "chat.message", on["chat.message"], max_body=48 * 1024, on_status=self.on_delivery
            ),
            MessageType("chat.edit", on["chat.edit"], max_body=32 * 1024),
            MessageType("chat.delete", on["chat.delete"], max_body=1024),
            MessageType("chat.react", on["chat.react"], max_body=1024),
            MessageType("chat.read", on["chat.read"], max_body=1024, ttl=3 * 86400),
            MessageType("chat.group", self._on_group, max_body=GROUP_BODY),
            MessageType(
                "chat.fetch", self._on_fetch_message, max_body=1024, ttl=600, answer=self._answer
            ),
        ]

    async def startup(self) -> None:
        from ._attach import Attachments

        files = self.require_files()
        self.attachments = Attachments(self, files)
        self._spawn(self._upkeep())
        self.store.index_soon()  # what a stop left unindexed

    async def shutdown(self) -> None:
        await asyncio.gather(*self._noting)
        if self._status_writer is not None:
            await self._status_writer  # the last ticks are kept
        await self.store.close()
        for task in list(self._tasks):
            task.cancel()
        if self.attachments is not None:
            await self.attachments.close()

    def require_files(self) -> Any:
        from ..files import Files

        return self.require(Files)

    async def holdings(self) -> Sequence[Holding]:
        convs = await self.store.conversations()
        if not convs:
            return []
        count = await self.db.fetchval("SELECT count(*) FROM chat_messages")
        return [Holding("chat", int(count), 0, None, "messages")]

    async def export(self, out: Export) -> None:
        """``conversations.json``, each conversation's messages in ``messages/<id>.jsonl``,
        then ``waiting.jsonl`` (docs/export-format.md); attachments stay in Files."""
        from ._export import export_chat

        await asyncio.gather(*self._noting)  # the envelopes of messages just sent, noted
        if self._status_writer is not None:
            await self._status_writer
        await export_chat(self, out)

    async def restore(self, part: Part) -> None:
        """Every conversation and message back as exported, with its ids, counters, times,
        reactions, read marks and delivery ticks; the search index written anew."""
        from ._export import restore_chat

        self._resent = True
        await restore_chat(self, part)

    def _spawn(self, work: Any) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _upkeep(self) -> None:
        """Now and then: forget messages that waited too long for their group, and fetch the
        attachments that failed before."""
        while True:
            try:
                await self.store.purge_waiting(time.time() - WAIT_DAYS * 86400)
                await self.attachments.resume()
                if not self._resent and not self.context.vault.locked:
                    self._resent = True
                    await self.resend_lost()
            except Exception:  # the next round tries again
                self.context.log.exception("chat upkeep failed")
            await asyncio.sleep(300)

    async def resend_lost(self) -> int:
        """Send again this twin's messages still on their way whose envelopes the twin's
        outbox does not hold (an import of a plain export brings chat's delivery ticks, not the
        outbox, which only the encrypted archive and backups carry), to every
        member: a twin that has one already keeps it. How many messages went again."""
        rows = await self.db.fetchall(
            "SELECT envelope, conv, msg FROM chat_sent WHERE state IN ('queued', 'sent')"
        )
        lost: dict[tuple[str, str], None] = {}
        for row in rows:
            if await self.peers.delivery(row["envelope"]) is None:
                lost[(row["conv"], row["msg"])] = None
        again = 0
        for conv_id, message_id in lost:
            async with self._locks[conv_id]:
                conv = await self.store.find(conv_id)
                message = await self.store.find_message(conv_id, message_id)
                # its ticks start again with the new envelopes (their count is its recipients)
                await self.db.execute(
                    "DELETE FROM chat_sent WHERE conv = ? AND msg = ?", (conv_id, message_id)
                )
            if conv is None or message is None or message.deleted or not conv.active:
                continue
            body: dict[str, Any] = {
                "c": conv.id,
                "id": message.id,
                "n": message.n,
                "sent": round(message.sent, 3),
                "text": message.text,
                "name": await self.contacts.my_name(),
            }
            if message.reply_to is not None:
                body["reply"] = message.reply_to
            offers = [a.offer() for a in await self.attachments.of(message) if a.mine]
            if offers:
                body["att"] = offers
            await self._fan_out(conv, "chat.message", body, message)
            await self.store.touch(conv.id, [message.id])
            again += 1
        if again:
            self.context.log.info("sent %d messages again that were still on their way", again)
        return again

    def listen(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(kind, item)`` for each new or changed message ("message") and
        conversation ("conversation") of this twin; returns a function that stops it."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def _tell(self, kind: str, item: Any) -> None:
        for listener in list(self._listeners):
            try:
                listener(kind, item)
            except Exception:
                self.context.log.exception("a chat listener failed")

    # who is who ---------------------------------------------------------------------------

    @property
    def contacts(self) -> Contacts:
        return self.require(Contacts)

    async def contact(self, did: object) -> Any:
        """The connected contact ``did``; BadInput naming what is wrong otherwise."""
        if not isinstance(did, str):
            raise BadInput("a member is named by their twin's did")
        public_key_from_did(did)
        person = await self.contacts.book.by_did(did)
        if person is None or person.status not in ("connected", "blocked"):
            raise BadInput("that twin is not one of your contacts: connect in Contacts first")
        if person.status == "blocked":
            raise BadInput(f"you blocked {person.name}: unblock them first")
        return person

    async def name_of(self, conv: Conversation | None, did: str) -> str:
        if did == self.me:
            return await self.contacts.my_name()
        person = await self.contacts.book.by_did(did)
        if person is not None:
            return person.name
        if conv is not None and did in conv.names:
            return conv.names[did]
        return "someone"

    async def title(self, conv: Conversation) -> str:
        """What a conversation is called: a group's name, or the other person's."""
        if conv.kind == "group":
            return conv.name
        return await self.name_of(conv, self._other(conv))

    async def blocked(self, did: str) -> bool:
        peer = await self.peers.peer(did)
        return peer is not None and peer.state == "blocked"

    # conversations ------------------------------------------------------------------------

    async def direct(self, did: object) -> tuple[Conversation, bool]:
        """The direct conversation with a contact; (it, whether it is new)."""
        person = await self.contact(did)
        conv_id = direct_id(self.me, person.did)
        found = await self.store.find(conv_id)
        if found is not None:
            return found, False
        return await self.store.save(self._new_direct(person.did)), True

    def _new_direct(self, did: str) -> Conversation:
        """A direct conversation with ``did``, not stored yet."""
        now = time.time()
        return Conversation(direct_id(self.me, did), "direct", "", [self.me, did], [], now, now)

    async def new_group(self, name: object, members: object) -> Conversation:
        name = check_name(name)
        if not isinstance(members, list) or len(members) > _groups.MAX_MEMBERS - 1:
            raise BadInput(f"a group lists up to {_groups.MAX_MEMBERS - 1} other members")
        people = []
        for did in dict.fromkeys(members):
            if did == self.me:
                continue
            people.append(await self.contact(did))
        conv_id = "g" + os.urandom(12).hex()
        event = self.peers.sign(
            _groups.new_event(
                conv_id, 1, self.me, "create", name=name, members=[p.did for p in people]
            )
        )
        log, state = _groups.take(conv_id, [], [event])
        now = time.time()
        conv = Conversation(conv_id, "group", name, [self.me], [self.me], now, now, names={})
        async with self._locks[conv_id]:
            conv = await self._apply_group(conv, log, state, [event])
        await self._send_group(conv, log, [p.did for p in people])
        return conv

    async def change_group(self, conv: Conversation, action: str, **fields: Any) -> Conversation:
        """An admin's change (add, remove, admin, unadmin, rename) or this twin leaving."""
        if conv.kind != "group":
            raise BadInput("only a group has members to change")
        if not conv.active:
            raise Conflict("you are no longer in this group")
        target = fields.get("did")
        if action == "add":
            await self.contact(target)
            if target in conv.members:
                raise Conflict("they are in the group already")
            fields["name"] = None
        elif action in ("remove", "admin", "unadmin"):
            if target not in conv.members:
                raise BadInput("they are not in this group")
            if target == self.me and action == "remove":
                raise BadInput("to leave a group, leave it")
        if action != "leave" and self.me not in conv.admins:
            raise Forbidden("only the group's admins change its members and name")
        async with self._locks[conv.id]:
            conv = await self.store.conversation(conv.id)
            before = list(conv.members)
            event = self.peers.sign(
                _groups.new_event(conv.id, conv.n + 1, self.me, action, **fields)
            )
            log, state = _groups.take(conv.id, await self.store.group_log(conv.id), [event])
            conv = await self._apply_group(conv, log, state, [event])
        told = set(before) | set(conv.members)
        told.discard(self.me)
        # what a change rests on (its signer's promotion, or being added at all) travels with
        # it, so no member finds it unfounded because another's message is still on its way
        rights = [
            e
            for e in log
            if e["action"] in ("admin", "unadmin", "remove", "leave")
            or (e["action"] == "add" and e.get("did") == self.me)
        ]
        shared = [e for e in rights if e["id"] != event["id"]] + [event]
        for did in told:
            if action == "add" and did == target:
                await self._send_group(conv, log, [did])
            else:
                await self._send_group(conv, shared, [did], hints=False)
        return conv

    async def _send_group(
        self, conv: Conversation, events: list[dict[str, Any]], to: list[str], *, hints: bool = True
    ) -> None:
        """Send group changes (and, to new members, every member's signed address)."""
        held: dict[str, Any] = {}
        if hints:
            for did in conv.members:
                if did == self.me:
                    held[did] = self.peers.address()
                else:
                    hint = await self.peers.hint(did)
                    if hint is not None:
                        held[did] = hint
        names = {self.me: await self.contacts.my_name()}
        chunks: list[dict[str, Any]] = [{"c": conv.id, "events": events, "names": names}]
        items = list(held.items())
        for start in range(0, len(items), HINTS_PER_MESSAGE):
            piece = dict(items[start : start + HINTS_PER_MESSAGE])
            if start == 0:
                chunks[0]["hints"] = piece
            else:
                chunks.append({"c": conv.id, "events": [], "hints": piece})
        for did in to:
            if await self.blocked(did):
                continue
            for body in chunks:
                await self.peers.send(did, "chat.group", body)

    async def _apply_group(
        self,
        conv: Conversation,
        log: list[dict[str, Any]],
        state: _groups.Group,
        new: list[dict[str, Any]],
    ) -> Conversation:
        """Keep a group's log and what it folds into; show each new change in the
        conversation."""
        await self.store.keep_log(conv.id, log)
        was_member = self.me in conv.members and conv.active
        conv = replace(
            conv,
            name=state.name,
            members=sorted(state.members),
            admins=sorted(state.admins),
            n=max(conv.n, state.n),
            updated=time.time(),
        )
        if self.me not in state.members:
            conv.active = False
        elif not was_member and not conv.active:
            conv.active = True  # added again
        for event in sorted(new, key=lambda e: (e["n"], e["id"])):
            await self._show_change(conv, event)
        return await self.store.save(conv)

    async def _show_change(self, conv: Conversation, event: dict[str, Any]) -> None:
        by = event["by"]
        about = {
            "create": f"created the group “{event.get('name', '')}”",
            "add": "added {target}",
            "remove": "removed {target}",
            "admin": "made {target} an admin",
            "unadmin": "made {target} no longer an admin",
            "rename": f"renamed the group “{event.get('name', '')}”",
            "leave": "left the group",
        }[event["action"]]
        target = event.get("did")
        if target is not None:
            about = about.format(target=await self.name_of(conv, target))
        now = time.time()
        message = Message(
            conv.id, event["id"], event["n"], by, by == self.me, now, now, about, kind="event"
        )
        await self.store.add(message)
        self._tell("message", message)

    # posting ------------------------------------------------------------------------------

    async def post(
        self,
        conv: Conversation,
        text: object,
        *,
        reply_to: object = None,
        attachments: object = None,
    ) -> Message:
        """Send a message into ``conv`` from this twin (what ``chat:send`` allows)."""
        message, _ = await self._post(conv, text, reply_to=reply_to, attachments=attachments)
        return message

    async def _post(
        self, conv: Conversation, text: object, *, reply_to: object, attachments: object
    ) -> tuple[Message, int]:
        """:meth:`post`; and how many envelopes carry the message."""
        files = await self._attachments_for(conv, attachments)
        text = check_text(text, empty=bool(files))
        if reply_to is not None:
            if not isinstance(reply_to, str):
                raise BadInput("reply_to is a message id")
            await self.store.message(conv.id, reply_to)
        async with self._locks[conv.id]:
            conv = await self._postable(conv)
            now = time.time()
            message = Message(
                conv.id,
                b64url(os.urandom(12)),
                conv.n + 1,
                self.me,
                True,
                now,
                now,
                text,
                reply_to=reply_to,
                attachments=[a.public() for a in files],
            )
            # writing in a conversation is reading it: what came before is no longer unread
            conv = replace(conv, n=message.n, read_n=message.n, updated=now)
            message = await self.store.add(message, conv)
            if files:
                await self.attachments.attached(files, message)
        body: dict[str, Any] = {
            "c": conv.id,
            "id": message.id,
            "n": message.n,
            "sent": round(now, 3),
            "text": text,
            "name": await self.contacts.my_name(),
        }
        if reply_to is not None:
            body["reply"] = reply_to
        if files:
            body["att"] = [a.offer() for a in files]
        envelopes = await self._fan_out(conv, "chat.message", body, message)
        self._tell("message", message)
        return message, envelopes

    async def _postable(self, conv: Conversation) -> Conversation:
        conv = await self.store.conversation(conv.id)
        if not conv.active:
            raise Conflict("you are no longer in this group: nothing can be posted into it")
        if conv.kind == "direct":
            other = self._other(conv)
            if await self.blocked(other):
                raise Conflict("you blocked this contact: unblock them to write to them")
            if await self.peers.peer(other) is None:
                raise Conflict("they are no longer your contact: connect again to write to them")
        return conv

    def _other(self, conv: Conversation) -> str:
        return next((m for m in conv.members if m != self.me), self.me)

    async def _fan_out(
        self, conv: Conversation, type_: str, body: dict[str, Any], message: Message | None
    ) -> int:
        """Send to each member's twin directly; how many envelopes went. For a message, each
        envelope's delivery is noted (written while the caller goes on: the ticks do not hold
        up the message)."""
        sent = []
        for did in conv.members:
            if did == self.me:
                continue
            try:
                envelope = await self.peers.send(did, type_, body)
            except (Conflict, NotFound):  # blocked, or not (yet) pinned: nothing to send to
                continue
            sent.append(envelope)
        if message is not None:
            rows = [(envelope, conv.id, message.id) for envelope in sent]
            for start in range(0, len(sent), 500):
                task = asyncio.ensure_future(self._note_sent(rows[start : start + 500]))
                self._noting.add(task)
                task.add_done_callback(self._noting.discard)
        return len(sent)

    async def _attachments_for(self, conv: Conversation, ids: object) -> list[Any]:
        if ids is None or ids == []:
            return []
        if not isinstance(ids, list) or len(ids) > MAX_ATTACHMENTS:
            raise BadInput(f"a message carries up to {MAX_ATTACHMENTS} attachments")
        return [await self.attachments.uploaded(conv, i) for i in dict.fromkeys(ids)]

    async def mine(self, conv: Conversation, message_id: str) -> Message:
        message = await self.store.message(conv.id, message_id)
        if not message.mine or message.kind != "text":
            raise Forbidden("only its author can change a message")
        if message.deleted:
            raise Conflict("that message was deleted")
        return message

    async def edit(self, conv: Conversation, message_id: str, text: object) -> Message:
        async with self._locks[conv.id]:
            conv = await self._postable(conv)
            message = await self.mine(conv, message_id)
            text = check_text(text, empty=bool(message.attachments))
            message = await self.store.update(
                replace(message, text=text, edited=time.time()), text_changed=True
            )
            conv = await self.store.save(replace(conv, n=conv.n + 1), sealed=False)
        await self._fan_out(
            conv, "chat.edit", {"c": conv.id, "id": message.id, "text": text, "n": conv.n}, None
        )
        self._tell("message", message)
        return message

    async def delete(self, conv: Conversation, message_id: str) -> Message:
        async with self._locks[conv.id]:
            conv = await self.store.conversation(conv.id)
            message = await self.mine(conv, message_id)
            message = await self._tombstone(message)
        if conv.active:
            await self._fan_out(conv, "chat.delete", {"c": conv.id, "id": message.id}, None)
        return message

    async def _tombstone(self, message: Message) -> Message:
        if message.attachments:
            await self.attachments.dropped(message)
        message = await self.store.update(
            replace(message, text="", attachments=[], deleted=True, edited=None), text_changed=True
        )
        self._tell("message", message)
        return message

    async def react(self, conv: Conversation, message_id: str, emoji: object, on: bool) -> Message:
        emoji = check_emoji(emoji)
        async with self._locks[conv.id]:
            conv = await self._postable(conv)
            message = await self.store.message(conv.id, message_id)
            if message.deleted or message.kind != "text":
                raise Conflict("a deleted message (or a group change) takes no reactions")
            await self._set_reaction(conv, message.id, self.me, emoji, on)
        await self._fan_out(
            conv, "chat.react", {"c": conv.id, "id": message.id, "emoji": emoji, "on": on}, None
        )
        return await self.store.message(conv.id, message.id)

    async def _set_reaction(
        self, conv: Conversation, message_id: str, who: str, emoji: str, on: bool
    ) -> None:
        found = (await self.store.reactions(conv.id, [message_id])).get(message_id, {})
        holders = found.setdefault(emoji, [])
        if on and who not in holders:
            if sum(who in dids for dids in found.values()) >= MAX_REACTIONS:
                raise BadInput(f"one person puts at most {MAX_REACTIONS} reactions on a message")
            if len(found) > 100:
                raise BadInput("a message holds at most 100 different reactions")
            holders.append(who)
        elif not on and who in holders:
            holders.remove(who)
        found = {e: dids for e, dids in found.items() if dids}
        await self.store.keep_reactions(conv.id, message_id, found)
        await self.store.touch(conv.id, [message_id])

    async def mark_read(self, conv: Conversation, message_id: str) -> Conversation:
        message = await self.store.message(conv.id, message_id)
        async with self._locks[conv.id]:
            conv = await self.store.conversation(conv.id)
            if message.n <= conv.read_n:
                return conv
            conv = await self.store.save(replace(conv, read_n=message.n), sealed=False)
        if conv.active:
            await self._fan_out(conv, "chat.read", {"c": conv.id, "n": message.n}, None)
        self._tell("conversation", conv)
        return conv

    async def set_muted(self, conv: Conversation, muted: bool) -> Conversation:
        async with self._locks[conv.id]:
            conv = await self.store.conversation(conv.id)
            return await self.store.save(replace(conv, muted=muted))

    async def block(self, did: object) -> None:
        if not isinstance(did, str):
            raise BadInput("name the twin to block by its did")
        public_key_from_did(did)
        if did == self.me:
            raise BadInput("you cannot block your own twin")
        person = await self.contacts.book.by_did(did)
        if person is not None:
            await self.contacts.block(person)
        else:
            await self.peers.block(did)
        await self._touch_sender(did)

    async def unblock(self, did: str) -> None:
        person = await self.contacts.book.by_did(did)
        if person is not None and person.status == "blocked":
            await self.contacts.unblock(person)
        else:
            peer = await self.peers.peer(did)
            if peer is None or peer.state != "blocked":
                raise NotFound("that twin is not blocked")
            convs = await self.store.conversations()
            ours = any(c.kind == "group" and c.active and did in c.members for c in convs)
            if person is None and not ours:
                await self.peers.forget(did)  # a stranger again, not a pinned twin
            else:
                await self.peers.pin(did)  # a member of a group of ours again
        await self._touch_sender(did)

    async def _touch_sender(self, did: str) -> None:
        """Show every conversation with ``did`` again (its blocked marks changed)."""
        for conv in await self.store.conversations():
            if did in conv.members:
                await self.store.save(conv, sealed=False)

    # what other twins send -----------------------------------------------------------------

    async def _member_conversation(
        self, message: Envelope, item: dict[str, Any]
    ) -> Conversation | None:
        """The conversation an incoming item belongs to, once its sender may post in it; None
        when it must wait for its group (kept until it arrives)."""
        conv_id = item["c"]
        conv = await self.store.find(conv_id)
        if conv_id.startswith("d"):
            if conv_id != direct_id(self.me, message.sender):
                raise BadInput("that direct conversation is not between your twin and this one")
            if conv is None:
                person = await self.contacts.book.by_did(message.sender)
                if person is None or person.status != "connected":
                    raise Forbidden("only contacts start a direct conversation")
                if message.type != "chat.message":
                    return None  # nothing of it is here to change or mark read
                # stored once its first message is taken: a refused one leaves nothing behind
                conv = self._new_direct(message.sender)
            return conv
        if conv is None or message.sender not in conv.members:
            if conv is not None and not conv.active:
                return None  # we left or were removed: what comes now is not ours
            await self.store.wait(
                conv_id,
                {
                    "type": message.type,
                    "from": message.sender,
                    "id": message.id,
                    "created": message.created,
                    "body": message.body,
                },
            )
            return None
        if not conv.active:
            return None
        return conv

    def _item(self, message: Envelope) -> dict[str, Any]:
        body = message.body
        if not isinstance(body, dict):
            raise BadInput(f"a {message.type} body is an object")
        conv_id = body.get("c")
        if not isinstance(conv_id, str) or not 2 <= len(conv_id) <= 64 or conv_id[0] not in "dg":
            raise BadInput("a chat message names its conversation")
        target = body.get("id")
        if message.type != "chat.read" and message.type != "chat.group":
            if not isinstance(target, str) or not 1 <= len(target) <= 64:
                raise BadInput("a chat message names its message id")
        return body

    def _counter(self, conv: Conversation, n: object) -> int:
        if type(n) is not int or not 1 <= n <= conv.n + MAX_JUMP:
            raise BadInput("a message's counter is a whole number not far past the others'")
        return n

    def _in_conversation(self, take: Take) -> Callable[[Envelope], Awaitable[None]]:
        """A handler for ``take``: the envelope checked, its conversation found (one change
        of it at a time) and its sender allowed to post in it; kept for later when it must
        wait for its group, dropped when this twin is no longer in it."""

        async def handle(envelope: Envelope) -> None:
            item = self._item(envelope)
            async with self._locks[item["c"]]:
                conv = await self._member_conversation(envelope, item)
                if conv is not None:
                    await take(conv, envelope.sender, item)

        return handle

    async def _take_message(self, conv: Conversation, sender: str, item: dict[str, Any]) -> None:
        n = self._counter(conv, item.get("n"))
        offers = item.get("att") or []
        if not isinstance(offers, list) or len(offers) > MAX_ATTACHMENTS:
            raise BadInput(f"a message carries up to {MAX_ATTACHMENTS} attachments")
        text = check_text(item.get("text", ""), empty=bool(offers))
        reply = item.get("reply")
        if reply is not None and (not isinstance(reply, str) or len(reply) > 64):
            raise BadInput("a reply names a message id")
        sent = item.get("sent")
        now = time.time()
        if not isinstance(sent, (int, float)) or isinstance(sent, bool):
            raise BadInput("a message says when it was sent")
        offered = self.attachments.check_offers(offers) if offers else []
        attachments = [{k: v for k, v in o.items() if k != "key"} for o in offered]
        message = Message(
            conv.id,
            item["id"],
            n,
            sender,
            False,
            min(float(sent), now),  # a clock ahead of ours is not believed
            now,
            text,
            reply_to=reply,
            attachments=attachments,
        )
        name, names = item.get("name"), conv.names
        if isinstance(name, str) and names.get(sender) != name:
            try:
                names = {**names, sender: check_name(name, "a name", 64)}
            except BadInput:
                pass
        moved = replace(conv, n=max(conv.n, n), updated=now, names=names)
        taken = await self.store.add(message, moved, sealed=names is not conv.names)
        if taken is not message:  # that id is held already
            if taken.sender != sender:
                raise BadInput("that message id is taken by another member's message")
            return
        conv = moved
        if offered:
            await self.attachments.receive(message, offered)
        # writing is reading: its author had seen everything before its counter
        await self._read_by(conv, sender, n - 1)
        self._tell("message", message)

    async def _take_edit(self, conv: Conversation, sender: str, item: dict[str, Any]) -> None:
        message = await self._theirs(conv, sender, item["id"])
        if message.deleted:
            return
        text = check_text(item.get("text"), empty=bool(message.attachments))
        message = await self.store.update(
            replace(message, text=text, edited=time.time()), text_changed=True
        )
        n = item.get("n")
        if type(n) is int and conv.n < n <= conv.n + MAX_JUMP:
            await self.store.save(replace(conv, n=n), sealed=False)
        self._tell("message", message)

    async def _theirs(self, conv: Conversation, sender: str, message_id: str) -> Message:
        message = await self.store.find_message(conv.id, message_id)
        if message is None:
            raise BadInput("there is no such message to change")
        if message.sender != sender or message.kind != "text":
            raise Forbidden("only its author can change a message")
        return message

    async def _take_delete(self, conv: Conversation, sender: str, item: dict[str, Any]) -> None:
        message = await self._theirs(conv, sender, item["id"])
        if not message.deleted:
            await self._tombstone(message)
        await self.store.save(conv, sealed=False)

    async def _take_reaction(self, conv: Conversation, sender: str, item: dict[str, Any]) -> None:
        emoji = check_emoji(item.get("emoji"))
        on = item.get("on")
        if not isinstance(on, bool):
            raise BadInput("a reaction is put on (true) or taken back (false)")
        await self._set_reaction(conv, item["id"], sender, emoji, on)

    async def _take_read(self, conv: Conversation, sender: str, item: dict[str, Any]) -> None:
        n = item.get("n")
        if type(n) is not int or not 0 <= n <= conv.n + MAX_JUMP:
            raise BadInput("a read mark is a message's counter")
        await self._read_by(conv, sender, n)

    async def _read_by(self, conv: Conversation, member: str, n: int) -> None:
        """Note that ``member`` read up to counter ``n``; the ticks of this twin's messages
        it covers change."""
        before = await self.store.read_by(conv.id, member)
        if n <= before:
            return
        self.store.keep_read(conv.id, member, n)
        if await self.store.my_last(conv.id) > before:  # some of this twin's ticks change
            await self.store.touch(conv.id, await self.store.mine_between(conv.id, before, n))

    async def _on_group(self, envelope: Envelope) -> None:
        item = self._item(envelope)
        conv_id = item["c"]
        if not conv_id.startswith("g"):
            raise BadInput("only a group has members")
        async with self._locks[conv_id]:
            await self._take_group(envelope.sender, item)
        await self._replay(conv_id)

    async def _take_group(self, sender: str, item: dict[str, Any]) -> None:
        conv_id = item["c"]
        conv = await self.store.find(conv_id)
        held = await self.store.group_log(conv_id) if conv is not None else []
        events = item.get("events")
        if events == [] and conv is not None:  # addresses only
            await self._pin_members(conv, item)
            return
        if conv is None:
            person = await self.contacts.book.by_did(sender)
            if person is None or person.status != "connected":
                raise Forbidden("only a contact can add you to a group")
        elif sender not in conv.members:
            raise Forbidden("only a group's members tell it about changes")
        log, state = _groups.take(conv_id, held, events)
        if conv is None:
            if self.me not in state.members:
                raise BadInput("that group does not have you in it")
            now = time.time()
            conv = Conversation(conv_id, "group", state.name, [], [], now, now)
        new_ids = {e["id"] for e in log} - {e["id"] for e in held}
        new = [e for e in log if e["id"] in new_ids]
        names = item.get("names")
        if isinstance(names, dict) and isinstance(names.get(sender), str):
            try:
                conv.names[sender] = check_name(names[sender], "a name", 64)
            except BadInput:
                pass
        conv = await self._apply_group(conv, log, state, new)
        await self._pin_members(conv, item)

    async def _pin_members(self, conv: Conversation, item: dict[str, Any]) -> None:
        """Pin the group's members this twin did not know, so their messages are taken: their
        keys come from changes signed by the group's admins."""
        given = item.get("hints")
        hints: dict[str, Any] = given if isinstance(given, dict) else {}
        for did in conv.members:
            if did == self.me:
                continue
            peer = await self.peers.peer(did)
            hint = hints.get(did)
            if peer is not None and (hint is None or peer.state == "blocked"):
                continue
            try:
                await self.peers.pin(did, hint)
            except (BadInput, InvalidSignature):  # a hint that does not hold is not kept
                if peer is None:
                    await self.peers.pin(did)

    async def _replay(self, conv_id: str) -> None:
        """Take what waited for this group, now that its members are known."""
        for row_id, held in await self.store.waiting(conv_id):
            conv = await self.store.find(conv_id)
            if conv is None:
                return
            if held["from"] not in conv.members and conv.active:
                continue
            await self.store.done_waiting(row_id)
            if not conv.active:
                continue
            handler = self._handlers.get(held["type"])
            if handler is None:
                continue
            envelope = Envelope(
                held["id"], held["type"], held["from"], held["created"], 0, held["body"]
            )
            try:
                await handler(envelope)
            except (BadInput, Forbidden, Conflict, NotFound) as exc:
                self.context.log.info("a waiting chat message was refused: %s", exc)

    async def on_delivery(self, envelope_id: str, state: State, error: str | None) -> None:
        """Note a delivery state; it is written with the others that came meanwhile, so the
        outbox does not wait for chat."""
        self._statuses[envelope_id] = state
        if self._status_writer is None or self._status_writer.done():
            self._status_writer = asyncio.ensure_future(self._write_statuses())

    async def _write_statuses(self) -> None:
        while self._statuses:
            states, self._statuses = self._statuses, {}
            try:
                changed, missing = await self.store.deliveries_changed(states)
                late = {e: states[e] for e in missing if e in self._noted}
                if late:  # written down while this looked: look again
                    changed += (await self.store.deliveries_changed(late))[0]
                for envelope_id in missing:
                    if envelope_id not in late:
                        # delivered before its fan-out wrote it down (the outbox is that
                        # quick): kept until it is
                        self._early[envelope_id] = states[envelope_id]
                while len(self._early) > EARLY:
                    del self._early[next(iter(self._early))]
                touched: dict[str, list[str]] = {}
                for conv_id, message_id in changed:
                    touched.setdefault(conv_id, []).append(message_id)
                for conv_id, message_ids in touched.items():
                    await self.store.touch(conv_id, dict.fromkeys(message_ids))
            except Exception as exc:  # ticks are not worth stopping for; the next ones go on
                self.context.log.error("delivery ticks were not written (%s)", exc)

    async def _note_sent(self, rows: list[tuple[str, str, str]]) -> None:
        try:
            await self.store.sent(rows)
        except Exception as exc:  # the message went; only its ticks are lost
            self.context.log.error("a message's delivery ticks were not written (%s)", exc)
            return
        self._noted.update(r[0] for r in rows)
        if len(self._noted) > EARLY:
            self._noted.clear()  # only a guard against a late status: none is older
        for envelope_id, *_ in rows:
            state = self._early.pop(envelope_id, None)
            if state is not None:
                await self.on_delivery(envelope_id, state, None)

    # attachments over the peer protocol ------------------------------------------------------

    async def _on_fetch_message(self, envelope: Envelope) -> None:
        """Never called: the inbox refuses a request type (it is asked, not sent)."""

    async def _answer(self, envelope: Envelope) -> Any:
        return await self.attachments.serve(envelope)
