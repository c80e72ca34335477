"""Attachments: files the owner attaches are kept in their Files (``Chat/<conversation>/``);
a recipient's twin asks the sender's for each one over the peer protocol (``chat.fetch``),
gets it encrypted with a key only the message carried, and keeps it in its own Files."""

from __future__ import annotations

import asyncio
import base64
import binascii
import mimetypes
import os
import time
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import nacl.bindings as sodium

from twin import BadInput, Conflict, NotFound, TooLarge, TwinError, Unavailable
from twin.identity import b64url
from twin.peers import Message as Envelope

from ._text import check_file_name

if TYPE_CHECKING:
    from . import Chat
    from ._store import Conversation, Message

MAX_ATTACHMENT = 100 * 1024 * 1024
CHUNK = 64 * 1024  # plaintext bytes in one encrypted frame
FRAME = CHUNK + sodium.crypto_secretstream_xchacha20poly1305_ABYTES
HEADER = sodium.crypto_secretstream_xchacha20poly1305_HEADERBYTES
TRIES = (2, 10, 30)  # seconds between the first tries of a fetch; upkeep tries again later
FOLDER = "Chat"
NAME_BYTES = 255  # what Files takes as one name


@dataclass
class Attachment:
    """One attached file, on the sender's twin or a recipient's."""

    id: str
    conv: str
    name: str
    size: int
    type: str
    key: str  # the stream key, base64url: only the message carries it to the recipients
    sender: str
    mine: bool
    state: str = "ready"  # "ready", "fetching", "failed", "too_large"
    path: str | None = None  # where it is in Files, once it is there
    error: str | None = None
    msg: str | None = None

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "size": self.size, "type": self.type}

    def offer(self) -> dict[str, Any]:
        return {**self.public(), "key": self.key}


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def encrypt(key: bytes, content: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    """``content`` as a secretstream: a header, then frames of CHUNK bytes, the last tagged
    final (so a cut-short answer is noticed)."""

    async def frames() -> AsyncIterator[bytes]:
        state = sodium.crypto_secretstream_xchacha20poly1305_state()
        yield sodium.crypto_secretstream_xchacha20poly1305_init_push(state, key)
        pending = b""
        async for piece in content:
            pending += piece
            while len(pending) > CHUNK:
                frame, pending = pending[:CHUNK], pending[CHUNK:]
                yield sodium.crypto_secretstream_xchacha20poly1305_push(state, frame)
        yield sodium.crypto_secretstream_xchacha20poly1305_push(
            state, pending, tag=sodium.crypto_secretstream_xchacha20poly1305_TAG_FINAL
        )

    return frames()


async def decrypt(key: bytes, stream: AsyncIterable[bytes], size: int) -> AsyncIterator[bytes]:
    """The plaintext of :func:`encrypt`'s stream; BadInput if it was altered, cut short or is
    not ``size`` bytes."""
    state = sodium.crypto_secretstream_xchacha20poly1305_state()
    buffer = b""
    started = done = False
    total = 0
    # a whole frame may still be the last one: it is only known once its tag is read
    async for piece in stream:
        buffer += piece
        if not started:
            if len(buffer) < HEADER:
                continue
            header, buffer = buffer[:HEADER], buffer[HEADER:]
            sodium.crypto_secretstream_xchacha20poly1305_init_pull(state, header, key)
            started = True
        while len(buffer) >= FRAME:
            frame, buffer = buffer[:FRAME], buffer[FRAME:]
            if done:
                raise BadInput("the attachment goes on past its end")
            plain, tag = _pull(state, frame)
            done = tag == sodium.crypto_secretstream_xchacha20poly1305_TAG_FINAL
            total += len(plain)
            if total > size:
                raise BadInput("the attachment is longer than its message said")
            yield plain
    if buffer:
        if done or not started:
            raise BadInput("the attachment goes on past its end")
        plain, tag = _pull(state, buffer)
        done = tag == sodium.crypto_secretstream_xchacha20poly1305_TAG_FINAL
        total += len(plain)
        yield plain
    if not done or total != size:
        raise BadInput("the attachment arrived cut short or altered")


def _pull(state: Any, frame: bytes) -> tuple[bytes, int]:
    try:
        plain, tag = sodium.crypto_secretstream_xchacha20poly1305_pull(state, frame)
    except Exception:  # nacl raises its CryptoError, or RuntimeError on a bad state
        raise BadInput("the attachment does not decrypt: it was altered on the way") from None
    return bytes(plain), int(tag)


class Attachments:
    """The attachments of one twin's conversations, and the fetching of others'."""

    def __init__(self, chat: Chat, files: Any) -> None:
        self.chat = chat
        self.files = files
        self.db = chat.db
        self.box = chat.context.box("attachments")
        self.progress: dict[str, int] = {}  # bytes received so far, while fetching
        self._fetching: set[str] = set()
        self._claimed: set[str] = set()  # paths chosen for files still being written
        self._tasks: set[asyncio.Task[None]] = set()

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()

    def row(self, row: Any) -> Attachment:
        data = self.box.open_json(row["data"], context=row["id"])
        return Attachment(id=row["id"], conv=row["conv"], msg=row["msg"], **data)

    async def _keep(self, att: Attachment) -> None:
        data = asdict(att)
        for clear in ("id", "conv", "msg"):
            del data[clear]
        await self.db.execute(
            "INSERT INTO chat_attachments (id, conv, msg, data, created) VALUES (?,?,?,?,?)"
            " ON CONFLICT (id) DO UPDATE SET msg = excluded.msg, data = excluded.data",
            (att.id, att.conv, att.msg, self.box.seal_json(data, context=att.id), time.time()),
        )

    async def get(self, att_id: str) -> Attachment:
        row = await self.db.fetchone("SELECT * FROM chat_attachments WHERE id = ?", (att_id,))
        if row is None:
            raise NotFound("there is no such attachment")
        return self.row(row)

    async def of(self, message: Message) -> list[Attachment]:
        rows = await self.db.fetchall(
            "SELECT * FROM chat_attachments WHERE conv = ? AND msg = ?", (message.conv, message.id)
        )
        return [self.row(r) for r in rows]

    # the sender's side ----------------------------------------------------------------------

    async def upload(
        self, conv: Conversation, name: object, body: AsyncIterable[bytes], length: int | None
    ) -> Attachment:
        """Keep a file the owner attaches in Files, ready to be named by a message."""
        name = check_file_name(name)
        if length is not None and length > MAX_ATTACHMENT:
            raise TooLarge(_too_large(length))
        if not conv.active:
            raise Conflict("you are no longer in this group: nothing can be posted into it")
        path = await self._free_path(conv, name)
        try:
            entry, _ = await self.files.store.write(
                path, _limited(body), length=length, parents=True
            )
        finally:
            self._claimed.discard(path)
        kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
        att = Attachment(
            b64url(os.urandom(12)),
            conv.id,
            name,
            entry.size,
            kind,
            b64url(os.urandom(32)),
            self.chat.me,
            True,
            path=path,
        )
        await self._keep(att)
        return att

    async def _free_path(self, conv: Conversation, name: str) -> str:
        title = await self.chat.title(conv)
        folder = "".join("-" if c in "/\\\x7f" or ord(c) < 32 else c for c in title)
        folder = f"{FOLDER}/{_fit(folder.strip('. '), 100).rstrip('. ') or conv.id}"
        stem, dot, ext = name.rpartition(".")
        if not stem:
            stem, dot, ext = name, "", ""
        number = 1
        while True:
            candidate = f"{folder}/{_numbered(stem, number, dot + ext)}"
            # claimed before looking: two files of one name written at once get two paths
            if candidate not in self._claimed:
                self._claimed.add(candidate)
                if await self.files.store.find(candidate) is None:
                    return candidate  # the caller lets go of it once it is written
                self._claimed.discard(candidate)
            number += 1

    async def uploaded(self, conv: Conversation, att_id: object) -> Attachment:
        if not isinstance(att_id, str):
            raise BadInput("an attachment is named by the id its upload gave")
        try:
            att = await self.get(att_id)
        except NotFound:
            raise BadInput("there is no such upload: upload the file first") from None
        if not att.mine or att.conv != conv.id:
            raise BadInput("that upload belongs to another conversation")
        if att.msg is not None:
            raise Conflict("that upload is attached to a message already: upload it again")
        return att

    async def attached(self, atts: list[Attachment], message: Message) -> None:
        for att in atts:
            att.msg = message.id
            await self._keep(att)

    async def serve(self, envelope: Envelope) -> AsyncIterator[bytes]:
        """The answer to a member's ``chat.fetch``: the file, encrypted to the message's key."""
        body = envelope.body
        if not isinstance(body, dict) or not all(isinstance(body.get(k), str) for k in ("c", "id")):
            raise BadInput("a chat.fetch names the conversation and the attachment")
        try:
            att = await self.get(body["id"])
        except NotFound:
            raise NotFound("there is no such attachment (it may have been deleted)") from None
        conv = await self.chat.store.find(att.conv)
        if (
            not att.mine
            or att.msg is None
            or att.path is None
            or conv is None
            or att.conv != body["c"]
            or envelope.sender not in conv.members
        ):
            raise NotFound("there is no such attachment (it may have been deleted)")
        entry = await self.files.store.find(att.path)
        if entry is None:
            raise NotFound("the attachment is no longer in the sender's files")
        return encrypt(_unb64(att.key), self.files.store.read(entry))

    async def dropped(self, message: Message) -> None:
        """A deleted message's attachments: their copies go to the Files trash."""
        for att in await self.of(message):
            if att.path is not None and await self.files.store.find(att.path) is not None:
                try:
                    await self.files.store.delete(att.path)
                except TwinError:
                    pass
            await self.db.execute("DELETE FROM chat_attachments WHERE id = ?", (att.id,))
            self.progress.pop(att.id, None)

    async def content(self, att_id: str) -> tuple[Attachment, Any]:
        att = await self.get(att_id)
        if att.state != "ready" or att.path is None:
            raise Conflict(f"{att.name} is not here yet ({att.state.replace('_', ' ')})")
        entry = await self.files.store.find(att.path)
        if entry is None:
            raise NotFound(f"{att.name} is no longer in your files (it was moved or deleted)")
        return att, entry

    # the recipient's side -------------------------------------------------------------------

    @staticmethod
    def check_offers(offers: list[Any]) -> list[dict[str, Any]]:
        checked = []
        for offer in offers:
            if not isinstance(offer, dict):
                raise BadInput("an attachment is an object")
            att_id, size, kind, key = (offer.get(k) for k in ("id", "size", "type", "key"))
            if not isinstance(att_id, str) or not 1 <= len(att_id) <= 64:
                raise BadInput("an attachment has an id")
            if type(size) is not int or size < 0:
                raise BadInput("an attachment has a size in bytes")
            if not isinstance(kind, str) or len(kind) > 100:
                raise BadInput("an attachment has a media type")
            try:
                if not isinstance(key, str) or len(_unb64(key)) != 32:
                    raise ValueError
            except (ValueError, binascii.Error):
                raise BadInput("an attachment carries its 32-byte key") from None
            name = check_file_name(offer.get("name"))
            checked.append({"id": att_id, "name": name, "size": size, "type": kind, "key": key})
        return checked

    async def receive(self, message: Message, offers: list[dict[str, Any]]) -> None:
        """Note what a message offers, and start fetching it."""
        for offer in offers:
            too_large = offer["size"] > MAX_ATTACHMENT
            att = Attachment(
                offer["id"],
                message.conv,
                offer["name"],
                offer["size"],
                offer["type"],
                offer["key"],
                message.sender,
                False,
                state="too_large" if too_large else "fetching",
                error=_too_large(offer["size"]) if too_large else None,
                msg=message.id,
            )
            if await self.db.fetchone("SELECT 1 FROM chat_attachments WHERE id = ?", (att.id,)):
                continue  # another message named the same id: the first one keeps it
            await self._keep(att)
            if not too_large:
                self._start(att)

    def _start(self, att: Attachment) -> None:
        if att.id in self._fetching:
            return
        self._fetching.add(att.id)
        task = asyncio.ensure_future(self._fetch_with_tries(att))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def resume(self) -> None:
        rows = await self.db.fetchall("SELECT * FROM chat_attachments WHERE msg IS NOT NULL")
        for row in rows:
            att = self.row(row)
            if not att.mine and att.state == "fetching":
                self._start(att)

    async def _fetch_with_tries(self, att: Attachment) -> None:
        try:
            for wait in (*TRIES, None):
                try:
                    await self._fetch(att)
                    return
                except Unavailable:
                    if wait is None:
                        return  # still "fetching": the next upkeep round tries again
                    await asyncio.sleep(wait)
                except TwinError as exc:
                    await self._settle(att, "failed", exc.message)
                    return
        finally:
            self._fetching.discard(att.id)
            self.progress.pop(att.id, None)

    async def _fetch(self, att: Attachment) -> None:
        conv = await self.chat.store.find(att.conv)
        if conv is None:
            return
        answer = self.chat.peers.fetch(
            att.sender,
            "chat.fetch",
            {"c": att.conv, "id": att.id},
            limit=HEADER + (att.size // CHUNK + 1) * FRAME,
        )
        self.progress[att.id] = 0

        async def counted() -> AsyncIterator[bytes]:
            async for plain in decrypt(_unb64(att.key), answer, att.size):
                self.progress[att.id] = self.progress.get(att.id, 0) + len(plain)
                yield plain

        path = await self._free_path(conv, att.name)
        try:
            # what was written of a refused one is not kept: Files keeps a file once it is whole
            await self.files.store.write(path, counted(), length=att.size, parents=True)
        finally:
            self._claimed.discard(path)
        current = await self.db.fetchone("SELECT 1 FROM chat_attachments WHERE id = ?", (att.id,))
        if current is None:  # the message was deleted meanwhile
            await self.files.store.delete(path)
            return
        att.path = path
        await self._settle(att, "ready", None)

    async def _settle(self, att: Attachment, state: str, error: str | None) -> None:
        att.state, att.error = state, error
        if await self.db.fetchone("SELECT 1 FROM chat_attachments WHERE id = ?", (att.id,)):
            await self._keep(att)
            if att.msg is not None:
                await self.chat.store.touch(att.conv, [att.msg])


def _fit(text: str, size: int) -> str:
    """``text`` cut to at most ``size`` bytes of UTF-8, between characters."""
    return text.encode()[:size].decode("utf-8", "ignore")


def _numbered(stem: str, number: int, ext: str) -> str:
    """A file name for Files (at most NAME_BYTES of UTF-8: a name of 200 characters may be
    more), the stem cut to make room for its number and extension."""
    counted = f" ({number})" if number > 1 else ""
    if len((counted + ext).encode()) >= NAME_BYTES:  # an extension longer than a name may be
        stem, ext = stem + ext, ""
    return _fit(stem, NAME_BYTES - len((counted + ext).encode())) + counted + ext


async def _limited(body: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    size = 0
    async for piece in body:
        size += len(piece)
        if size > MAX_ATTACHMENT:
            raise TooLarge(_too_large(size, more=True))
        yield piece


def _too_large(size: int, *, more: bool = False) -> str:
    over = "more than " if more else ""
    return (
        f"an attachment is at most {MAX_ATTACHMENT // (1024 * 1024)} MiB; this one is "
        f"{over}{size / (1024 * 1024):.1f} MiB: share it from Files with a link instead"
    )
