"""What ``twin export`` takes of chat and ``twin import`` puts back: ``conversations.json``
(every conversation, its members, read marks and, for a group, its signed log of changes),
then each conversation's messages, one a line, in ``messages/<conversation id>.jsonl``, then
``waiting.jsonl`` (what came for a group before the group did); docs/export-format.md.

Attachments stay in Files (``Chat/<conversation>/``), which exports them itself: a message
names each one's path there. Import keeps every id, counter and time, so what the other
members' twins send later (edits, reactions, read marks, delivery receipts) still matches."""

from __future__ import annotations

import base64
import binascii
import json
import math
import os
import re
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from twin import BadInput, Conflict, InvalidSignature
from twin.archive import check_path
from twin.export import Export, Item, Part, at, whole
from twin.identity import public_key_from_did
from twin.peers._types import STATES

from . import _groups, direct_id
from ._store import INDEX_BATCH, MAX_WAITING, Conversation, Message
from ._text import MAX_TEXT, check_emoji, check_file_name, check_name, check_text

if TYPE_CHECKING:
    from . import Chat

CONVERSATIONS = "conversations.json"
WAITING = "waiting.jsonl"
PAGE = 500  # messages read, or written, at once
MAX_TIME = 2.0**40  # seconds either side of 1970: any time a twin could have noted
MAX_ID = 64
MAX_DELIVERIES = 10_000  # envelopes one message went out in
MAX_REACTIONS = 101  # distinct emoji on one message (chat refuses a 102nd)
MAX_WAITING_BODY = 256 * 1024
ATTACHMENT_STATES = ("ready", "fetching", "failed", "too_large")
WAITING_TYPES = ("chat.message", "chat.edit", "chat.delete", "chat.react", "chat.read")
_SAFE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_MESSAGE_ROWS = (
    "SELECT * FROM chat_messages WHERE conv = ? AND (n > ? OR (n = ? AND id > ?))"
    " ORDER BY n, id LIMIT ?"
)


# export


async def export_chat(chat: Chat, out: Export) -> None:
    """``conversations.json``, each conversation's messages, then what waits for its group."""
    store = chat.store
    convs = sorted(await store.conversations(), key=lambda c: (c.created, c.id))
    files = _file_names(convs)
    listed = []
    reads: dict[str, dict[str, int]] = {}
    for conv in convs:
        line, reads[conv.id] = await _conversation_line(chat, conv, files[conv.id])
        listed.append(line)
    await out.json(CONVERSATIONS, listed)
    for conv in convs:
        await out.lines(files[conv.id], _message_lines(chat, conv, reads[conv.id], out.open))
    await out.lines(WAITING, _waiting_lines(chat))


def _file_names(convs: list[Conversation]) -> dict[str, str]:
    """Each conversation's messages file: its id, unless that is no safe file name (an id
    another twin made up)."""
    names = {}
    for number, conv in enumerate(convs, 1):
        stem = conv.id if _SAFE.fullmatch(conv.id) else f"conversation-{number}"
        names[conv.id] = f"messages/{stem}.jsonl"
    return names


async def _conversation_line(
    chat: Chat, conv: Conversation, messages: str
) -> tuple[dict[str, Any], dict[str, int]]:
    """A conversation as ``conversations.json`` lists it; and how far each member read."""
    log = await chat.store.group_log(conv.id) if conv.kind == "group" else []
    reads = {}
    for did in _known_dids(conv, log):
        if did != chat.me and (n := await chat.store.read_by(conv.id, did)) > 0:
            reads[did] = n
    line: dict[str, Any] = {
        "id": conv.id,
        "kind": conv.kind,
        "title": await chat.title(conv),
        "name": conv.name,
        "members": [
            {"did": did, "name": await chat.name_of(conv, did), "admin": did in conv.admins}
            for did in conv.members
        ],
        "names": dict(conv.names),
        "created": conv.created,
        "updated": conv.updated,
        "counter": conv.n,
        "read_up_to": conv.read_n,
        "read_by": reads,
        "muted": conv.muted,
        "active": conv.active,
        "messages": messages,
    }
    if conv.kind == "group":
        line["group_log"] = log
    return line, reads


def _known_dids(conv: Conversation, log: list[dict[str, Any]]) -> dict[str, None]:
    """Every twin a conversation's read marks may be from (they are kept under a keyed hash
    of the did, so only a did known otherwise is found again)."""
    dids = dict.fromkeys([*conv.members, *conv.names])
    for event in log:
        dids[event["by"]] = None
        if isinstance(event.get("did"), str):
            dids[event["did"]] = None
        for member in event.get("members") or ():
            if isinstance(member, str):
                dids[member] = None
    return dids


async def _message_lines(
    chat: Chat, conv: Conversation, reads: dict[str, int], open: bool
) -> AsyncIterator[dict[str, Any]]:
    """Every message of ``conv`` in conversation order, a page at a time."""
    store = chat.store
    after: tuple[int, str] = (-1, "")
    while True:
        rows = await store.db.fetchall(_MESSAGE_ROWS, (conv.id, after[0], after[0], after[1], PAGE))
        if not rows:
            return
        messages = [store._message(row) for row in rows]
        ids = [m.id for m in messages]
        reactions = await store.reactions(conv.id, ids)
        deliveries = await _deliveries(chat, conv.id, [m.id for m in messages if m.mine])
        attachments = await _attachments(chat, conv.id, [m.id for m in messages if m.attachments])
        for m in messages:
            line: dict[str, Any] = {
                "id": m.id,
                "counter": m.n,
                "kind": m.kind,
                "author": m.sender,
                "mine": m.mine,
                "sent": m.sent,
                "received": m.received,
                "text": m.text,
                "reply_to": m.reply_to,
                "edited": m.edited,
                "deleted": m.deleted,
                "status": _status(m, conv, deliveries.get(m.id, []), reads),
                "attachments": [
                    _attachment_line(a, attachments.get(str(a.get("id"))), open)
                    for a in m.attachments
                ],
                "reactions": reactions.get(m.id, {}),
            }
            if m.mine and m.kind == "text":
                line["deliveries"] = deliveries.get(m.id, [])
            yield line
        last = messages[-1]
        after = (last.n, last.id)


async def _deliveries(chat: Chat, conv_id: str, ids: list[str]) -> dict[str, list[Any]]:
    if not ids:
        return {}
    marks = ",".join("?" * len(ids))
    rows = await chat.db.fetchall(
        f"SELECT envelope, msg, state FROM chat_sent WHERE conv = ? AND msg IN ({marks})"
        " ORDER BY rowid",
        (conv_id, *ids),
    )
    found: dict[str, list[Any]] = {}
    for row in rows:
        found.setdefault(row["msg"], []).append(
            {"envelope": row["envelope"], "state": row["state"]}
        )
    return found


async def _attachments(chat: Chat, conv_id: str, ids: list[str]) -> dict[str, Any]:
    """The attachment rows of messages ``ids``, by attachment id."""
    if not ids:
        return {}
    marks = ",".join("?" * len(ids))
    rows = await chat.db.fetchall(
        f"SELECT * FROM chat_attachments WHERE conv = ? AND msg IN ({marks})", (conv_id, *ids)
    )
    box = chat.context.box("attachments")
    return {
        row["id"]: (box.open_json(row["data"], context=row["id"]), row["created"]) for row in rows
    }


def _attachment_line(public: dict[str, Any], held: Any, open: bool) -> dict[str, Any]:
    """What a message says of an attachment, and where this twin keeps it (a path in Files);
    its stream key only in the encrypted archive."""
    line = {k: public.get(k) for k in ("id", "name", "size", "type")}
    if held is not None:
        data, created = held
        line.update(state=data["state"], path=data["path"], error=data["error"], created=created)
        if not open:
            line["key"] = data["key"]
    return line


def _status(
    m: Message, conv: Conversation, deliveries: list[dict[str, Any]], reads: dict[str, int]
) -> str | None:
    """What the ticks of one of this twin's messages say (as the API shows them), or whether
    the owner has read one of the others'."""
    if m.kind != "text" or m.deleted:
        return None
    if not m.mine:
        return "read" if m.n <= conv.read_n else "unread"
    counts: dict[str, int] = {}
    for d in deliveries:
        counts[d["state"]] = counts.get(d["state"], 0) + 1
    total = sum(counts.values())
    delivered = counts.get("delivered", 0)
    read = sum(1 for n in reads.values() if n >= m.n)
    if counts.get("failed"):
        return "failed"
    if total and read >= total:
        return "read"
    if delivered == total and total:
        return "delivered"
    if counts.get("sent") or delivered:
        return "sent"
    return "queued" if total else "delivered"


async def _waiting_lines(chat: Chat) -> AsyncIterator[dict[str, Any]]:
    rows = await chat.db.fetchall("SELECT id, conv, data, received FROM chat_waiting ORDER BY id")
    for row in rows:
        held = chat.store.box.open_json(row["data"], context="waiting " + row["conv"])
        yield {"conversation": row["conv"], "received": row["received"], **held}


# restore


async def restore_chat(chat: Chat, part: Part) -> None:
    """Every conversation and message back as exported, into a chat that holds none; the
    search index written anew."""
    if part.peek() is None:
        return
    held = await chat.db.fetchval(
        "SELECT (SELECT count(*) FROM chat_conversations) + (SELECT count(*) FROM chat_messages)"
    )
    if held:
        raise Conflict(
            "chat holds conversations already: import into a new twin (or use --replace)"
        )
    first = await part.next()
    assert first is not None
    if first.name != CONVERSATIONS:
        raise BadInput(f"chat's part does not begin with {part.folder}/{CONVERSATIONS}")
    restore = _Restore(chat, part.folder)
    await restore.conversations(first)
    async for item in part:
        if item.name in restore.files:
            await restore.messages(item)
        elif item.name == WAITING and not restore.waited:
            await restore.waiting(item)
        else:
            raise BadInput(f"{item.path} is not one chat's export has (or it comes twice)")
    await restore.flush()
    store = chat.store
    store._my_last.clear()
    store._read_marks.clear()
    await store.index_pending()
    store.wake()


@dataclass
class _Rows:
    """Rows of one batch of messages, written together."""

    messages: list[tuple[Any, ...]] = field(default_factory=list)
    unindexed: list[tuple[str, str]] = field(default_factory=list)
    reactions: list[tuple[str, str, bytes]] = field(default_factory=list)
    sent: list[tuple[str, str, str, str]] = field(default_factory=list)
    attachments: list[tuple[Any, ...]] = field(default_factory=list)

    def write(self, conn: sqlite3.Connection) -> None:
        conn.executemany(
            "INSERT INTO chat_messages (conv, id, n, mine, counts, data, received, seq)"
            " VALUES (?,?,?,?,?,?,?,?)",
            self.messages,
        ).close()
        conn.executemany("INSERT INTO chat_unindexed (conv, msg) VALUES (?,?)", self.unindexed)
        conn.executemany(
            "INSERT INTO chat_reactions (conv, msg, data) VALUES (?,?,?)", self.reactions
        )
        conn.executemany(
            "INSERT INTO chat_sent (envelope, conv, msg, state) VALUES (?,?,?,?)", self.sent
        ).close()
        conn.executemany(
            "INSERT INTO chat_attachments (id, conv, msg, data, created) VALUES (?,?,?,?,?)",
            self.attachments,
        ).close()


class _Restore:
    """What has been read back so far, to check what follows against it."""

    def __init__(self, chat: Chat, folder: str) -> None:
        self.chat = chat
        self.store = chat.store
        self.me = chat.me
        self.folder = folder
        self.files: dict[str, Conversation] = {}  # messages file: its conversation
        self.waited = False
        self._dids: set[str] = set()
        self._envelopes: set[str] = set()
        self._attachments: set[str] = set()
        self._rows = _Rows()
        self._count = 0

    # conversations.json

    async def conversations(self, item: Item) -> None:
        listed = await item.json()
        if not isinstance(listed, list):
            raise BadInput(f"{item.path} is not a list of conversations")
        ids: set[str] = set()
        restored = []
        for number, line in enumerate(listed, 1):
            where = f"conversation {number} of {item.path}"
            if not isinstance(line, dict):
                raise BadInput(f"{where} is not an object")
            try:
                conv, log, reads, name = self._conversation(line)
                if conv.id in ids:
                    raise BadInput(f"id {conv.id} is listed twice")
                if name in self.files:
                    raise BadInput(f"messages {name} is another conversation's")
            except BadInput as exc:
                raise BadInput(f"{where}: {exc.message}") from None
            ids.add(conv.id)
            self.files[name] = conv
            restored.append((conv, log, reads))
        store = self.store
        for conv, log, reads in restored:
            if log:
                await store.keep_log(conv.id, log)
            await store.save(conv)
            if reads:
                await store.db.executemany(
                    "INSERT INTO chat_reads (conv, who, n) VALUES (?,?,?)",
                    [(conv.id, store._reader(conv.id, did), n) for did, n in reads.items()],
                )

    def _conversation(
        self, line: dict[str, Any]
    ) -> tuple[Conversation, list[dict[str, Any]], dict[str, int], str]:
        conv_id = _conversation_id(line.get("id"))
        kind = line.get("kind")
        if kind not in ("direct", "group"):
            raise BadInput(f"kind is 'direct' or 'group', not {kind!r}")
        members = line.get("members")
        if not isinstance(members, list) or not 1 <= len(members) <= _groups.MAX_MEMBERS:
            raise BadInput(f"members is a list of 1 to {_groups.MAX_MEMBERS} members")
        dids, admins = [], []
        for member in members:
            if not isinstance(member, dict) or not isinstance(member.get("admin"), bool):
                raise BadInput('each member is {"did": …, "name": …, "admin": true or false}')
            did = self._did(member.get("did"), "a member's did")
            if did in dids:
                raise BadInput(f"member {did} is listed twice")
            dids.append(did)
            if member["admin"]:
                admins.append(did)
        names = line.get("names")
        if not isinstance(names, dict) or len(names) > 10 * _groups.MAX_MEMBERS:
            raise BadInput("names is an object of what each member calls themselves, by did")
        names = {
            self._did(d, "a did in names"): check_name(n, "a name", 64) for d, n in names.items()
        }
        name = line.get("name")
        log: list[dict[str, Any]] = []
        if kind == "direct":
            others = [d for d in dids if d != self.me]
            if len(dids) != 2 or len(others) != 1:
                raise BadInput("a direct conversation's members are your twin and one other")
            if conv_id != direct_id(self.me, others[0]):
                raise BadInput(f"{conv_id} is not the id of your direct conversation with them")
            if admins or name != "":
                raise BadInput('a direct conversation has no admins and its name is ""')
            if line.get("group_log") is not None:
                raise BadInput("a direct conversation has no group log")
        else:
            if not conv_id.startswith("g"):
                raise BadInput(f"a group's id begins with 'g', not {conv_id[:1]!r}")
            name = check_name(name)
            log = self._group_log(conv_id, line.get("group_log"))
            state = _groups.fold(conv_id, log)[0]
            if (set(dids), set(admins), name) != (set(state.members), state.admins, state.name):
                raise BadInput("its name, members and admins are not what its group log makes")
        active = line.get("active")
        muted = line.get("muted")
        if not isinstance(active, bool) or not isinstance(muted, bool):
            raise BadInput("active and muted are true or false")
        if active and self.me not in dids:
            raise BadInput("a conversation your twin is not a member of is not active")
        conv = Conversation(
            conv_id,
            kind,
            name,
            dids,
            admins,
            _time(line.get("created"), "created"),
            _time(line.get("updated"), "updated"),
            n=whole(line.get("counter"), "counter", 0),
            read_n=whole(line.get("read_up_to"), "read_up_to", 0),
            names=names,
            muted=muted,
            active=active,
        )
        reads = line.get("read_by")
        if not isinstance(reads, dict) or len(reads) > 10 * _groups.MAX_MEMBERS:
            raise BadInput("read_by is an object of counters, by did")
        reads = {
            self._did(d, "a did in read_by"): whole(n, "a read mark", 1) for d, n in reads.items()
        }
        return conv, log, reads, _messages_file(line.get("messages"), self.folder)

    def _group_log(self, conv_id: str, log: object) -> list[dict[str, Any]]:
        if not isinstance(log, list) or not 1 <= len(log) <= _groups.MAX_EVENTS:
            raise BadInput(f"group_log is a list of 1 to {_groups.MAX_EVENTS} signed changes")
        seen = set()
        for number, event in enumerate(log, 1):
            try:
                _groups._shape(event, conv_id)
                assert isinstance(event, dict)
                _groups.check_signature(event)
            except (BadInput, InvalidSignature) as exc:
                raise BadInput(f"change {number} of its group_log: {exc.message}") from None
            if event["id"] in seen:
                raise BadInput(f"change {number} of its group_log is listed twice")
            seen.add(event["id"])
        return list(log)

    def _did(self, value: object, what: str) -> str:
        if isinstance(value, str) and value in self._dids:
            return value
        if not isinstance(value, str):
            raise BadInput(f"{what} is a did:key, not {value!r}")
        try:
            public_key_from_did(value)
        except BadInput as exc:
            raise BadInput(f"{what}: {exc.message}") from None
        self._dids.add(value)
        return value

    # messages/<conversation>.jsonl

    async def messages(self, item: Item) -> None:
        conv = self.files.pop(item.name)
        ids: set[str] = set()
        async for where, line in item.numbered():
            if not isinstance(line, dict):
                raise BadInput(f"{where} is not an object")
            with at(where):
                self._message(conv, line, ids)
            if self._count >= PAGE:
                await self.flush()

    def _message(self, conv: Conversation, line: dict[str, Any], ids: set[str]) -> None:
        message_id = _id(line.get("id"), "id")
        if message_id in ids:
            raise BadInput(f"message {message_id} is listed twice")
        ids.add(message_id)
        kind = line.get("kind")
        if kind not in ("text", "event"):
            raise BadInput(f"kind is 'text' or 'event', not {kind!r}")
        author = self._did(line.get("author"), "author")
        mine = author == self.me
        if line.get("mine", mine) is not mine:
            raise BadInput("mine is whether your twin is its author")
        deleted = line.get("deleted")
        if not isinstance(deleted, bool):
            raise BadInput("deleted is true or false")
        reply_to = line.get("reply_to")
        if reply_to is not None:
            reply_to = _id(reply_to, "reply_to")
        edited = line.get("edited")
        if edited is not None:
            edited = _time(edited, "edited")
        offered = line.get("attachments")
        if not isinstance(offered, list) or len(offered) > 10:
            raise BadInput("attachments is a list of up to 10 files")
        public = []
        for att in offered:
            public.append(self._attachment(conv, message_id, author, att))
        text = line.get("text")
        if not isinstance(text, str) or len(text) > MAX_TEXT + 200:
            raise BadInput(f"text is a string of at most {MAX_TEXT} characters")
        if text:
            text = check_text(text, empty=True)
        message = Message(
            conv.id,
            message_id,
            whole(line.get("counter"), "counter", 1),
            author,
            mine,
            _time(line.get("sent"), "sent"),
            _time(line.get("received"), "received"),
            text,
            kind=kind,
            reply_to=reply_to,
            attachments=public,
            edited=edited,
            deleted=deleted,
        )
        store, rows = self.store, self._rows
        message.seq = store.next_seq()
        rows.messages.append(
            (
                conv.id,
                message_id,
                message.n,
                int(mine),
                int(message.counts),
                store.box.seal_json(message.sealed(), context=f"{conv.id} {message_id}"),
                message.received,
                message.seq,
            )
        )
        if not message.deleted and message.kind == "text" and message.text:
            rows.unindexed.append((conv.id, message_id))
        reactions = self._reactions(line.get("reactions"))
        if reactions:
            sealed = store.box.seal_json(reactions, context=f"react {conv.id} {message_id}")
            rows.reactions.append((conv.id, message_id, sealed))
        deliveries = line.get("deliveries", [])
        if not isinstance(deliveries, list) or len(deliveries) > MAX_DELIVERIES:
            raise BadInput(f"deliveries is a list of up to {MAX_DELIVERIES:,} envelopes")
        if deliveries and not (mine and kind == "text"):
            raise BadInput("only your twin's own messages have deliveries")
        for delivery in deliveries:
            if not isinstance(delivery, dict) or delivery.get("state") not in STATES:
                raise BadInput(
                    f'a delivery is {{"envelope": …, "state": one of {", ".join(STATES)}}}'
                )
            envelope = _id(delivery.get("envelope"), "a delivery's envelope")
            if envelope in self._envelopes:
                raise BadInput(f"envelope {envelope} is listed twice")
            self._envelopes.add(envelope)
            rows.sent.append((envelope, conv.id, message_id, delivery["state"]))
        self._count += 1

    def _attachment(
        self, conv: Conversation, message_id: str, author: str, att: object
    ) -> dict[str, Any]:
        """An attachment's public part for its message; its row (state, path in Files, key)
        noted to be written when the export has one."""
        if not isinstance(att, dict):
            raise BadInput("an attachment is an object")
        att_id = _id(att.get("id"), "an attachment's id")
        size = att.get("size")
        if type(size) is not int or not 0 <= size < 2**53:
            raise BadInput("an attachment's size is a whole number of bytes")
        kind = att.get("type")
        if not isinstance(kind, str) or len(kind) > 100:
            raise BadInput("an attachment's type is a media type")
        public = {
            "id": att_id,
            "name": check_file_name(att.get("name")),
            "size": size,
            "type": kind,
        }
        state = att.get("state")
        if state is None:  # the message names it, this twin keeps nothing of it
            return public
        if state not in ATTACHMENT_STATES:
            raise BadInput(f"an attachment's state is one of {', '.join(ATTACHMENT_STATES)}")
        path, error = att.get("path"), att.get("error")
        if path is not None and (not isinstance(path, str) or not 0 < len(path) <= 4096):
            raise BadInput("an attachment's path is where it is in your Files")
        if error is not None and (not isinstance(error, str) or len(error) > 1000):
            raise BadInput("an attachment's error is a sentence")
        key = att.get("key")
        if key is None:  # the plain copy: those still to fetch cannot be
            key = base64.urlsafe_b64encode(os.urandom(32)).rstrip(b"=").decode()
            if state == "fetching":
                state, error = "failed", "its key was not in the export it was imported from"
        elif not _is_key(key):
            raise BadInput("an attachment's key is 32 bytes, base64url")
        created = _time(att.get("created"), "an attachment's created")
        if att_id in self._attachments:  # another message named it first: that one keeps it
            return public
        self._attachments.add(att_id)
        data = {
            "name": public["name"],
            "size": size,
            "type": kind,
            "key": key,
            "sender": author,
            "mine": author == self.me,
            "state": state,
            "path": path,
            "error": error,
        }
        box = self.chat.context.box("attachments")
        self._rows.attachments.append(
            (att_id, conv.id, message_id, box.seal_json(data, context=att_id), created)
        )
        return public

    def _reactions(self, value: object) -> dict[str, list[str]]:
        if not isinstance(value, dict) or len(value) > MAX_REACTIONS:
            raise BadInput(
                f"reactions is an object of up to {MAX_REACTIONS} emoji, each a list of dids"
            )
        found = {}
        for emoji, dids in value.items():
            if not isinstance(dids, list) or not 0 < len(dids) <= _groups.MAX_MEMBERS:
                raise BadInput(f"reaction {emoji[:16]!r} is a list of the dids who put it on")
            checked = [self._did(d, "a did in reactions") for d in dids]
            if len(set(checked)) != len(checked):
                raise BadInput(f"reaction {emoji[:16]!r} lists a did twice")
            found[check_emoji(emoji)] = checked
        return found

    async def flush(self) -> None:
        rows, self._rows, self._count = self._rows, _Rows(), 0
        if rows.messages:
            await self.store.db.write(rows.write)
            if len(rows.unindexed) >= INDEX_BATCH:
                await self.store.index_pending()  # a page at a time, as it goes

    # waiting.jsonl

    async def waiting(self, item: Item) -> None:
        self.waited = True
        await self.flush()
        rows = []
        async for where, line in item.numbered():
            if not isinstance(line, dict):
                raise BadInput(f"{where} is not an object")
            with at(where):
                rows.append(self._waiting(line))
            if len(rows) > MAX_WAITING:
                raise BadInput(f"{item.path} holds more than the {MAX_WAITING} chat keeps")
        if rows:
            await self.store.db.executemany(
                "INSERT INTO chat_waiting (conv, data, received) VALUES (?,?,?)", rows
            )

    def _waiting(self, line: dict[str, Any]) -> tuple[str, bytes, float]:
        conv_id = _conversation_id(line.get("conversation"))
        if line.get("type") not in WAITING_TYPES:
            raise BadInput(f"type is one of {', '.join(WAITING_TYPES)}")
        body = line.get("body")
        if not isinstance(body, dict) or len(json.dumps(body)) > MAX_WAITING_BODY:
            raise BadInput(f"body is an object of at most {MAX_WAITING_BODY:,} bytes")
        held = {
            "type": line["type"],
            "from": self._did(line.get("from"), "from"),
            "id": _id(line.get("id"), "id"),
            "created": _time(line.get("created"), "created"),
            "body": body,
        }
        sealed = self.store.box.seal_json(held, context="waiting " + conv_id)
        return conv_id, sealed, _time(line.get("received"), "received")


def _is_key(value: object) -> bool:
    if not isinstance(value, str) or len(value) > 64:
        return False
    try:
        return len(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))) == 32
    except (ValueError, binascii.Error):
        return False


def _conversation_id(value: object) -> str:
    if (
        not isinstance(value, str)
        or not 2 <= len(value) <= MAX_ID
        or value[0] not in "dg"
        or not value.isprintable()
    ):
        raise BadInput(f"a conversation's id is 2 to {MAX_ID} characters from 'd' or 'g'")
    return value


def _messages_file(value: object, folder: str) -> str:
    if (
        not isinstance(value, str)
        or not value.startswith("messages/")
        or not value.endswith(".jsonl")
        or value.count("/") != 1
    ):
        raise BadInput("messages names its file, messages/<name>.jsonl")
    check_path(f"{folder}/{value}")
    return value


def _id(value: object, what: str) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_ID or not value.isprintable():
        raise BadInput(f"{what} is 1 to {MAX_ID} characters, not {value!r:.80}")
    return value


def _time(value: object, what: str) -> float:
    if (
        not isinstance(value, (int, float))
        or isinstance(value, bool)
        or not math.isfinite(value)
        or abs(value) > MAX_TIME
    ):
        raise BadInput(f"{what} is seconds since 1970, not {value!r:.80}")
    return float(value)
