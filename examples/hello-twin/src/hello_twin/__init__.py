"""A guestbook: the smallest useful twin capability, with an experience, and a message type that
lets a contact's twin write in it from afar (the peer protocol, as a plugin uses it)."""

from __future__ import annotations

import time
from typing import Annotated, Any

import msgspec

from twin import (
    BadInput,
    Call,
    Capability,
    Conflict,
    Message,
    MessageType,
    Migration,
    NotFound,
    api,
)

MAX_ENTRIES = 500


class Entry(msgspec.Struct):
    id: int
    author: str
    text: str
    at: float


class NewEntry(msgspec.Struct, forbid_unknown_fields=True):
    author: Annotated[str, msgspec.Meta(min_length=1, max_length=60)]
    text: Annotated[str, msgspec.Meta(min_length=1, max_length=500)]


class ExportedEntry(msgspec.Struct):
    """One line of entries.jsonl, as export() writes it and restore() reads it back."""

    # The limits a new entry has: an export is a file anyone may have edited.
    id: Annotated[int, msgspec.Meta(ge=1)]
    author: Annotated[str, msgspec.Meta(min_length=1, max_length=60)]
    text: Annotated[str, msgspec.Meta(min_length=1, max_length=500)]
    at: Annotated[float, msgspec.Meta(ge=0, lt=2**33)]  # seconds since 1970


class Note(msgspec.Struct, forbid_unknown_fields=True):
    to: Annotated[str, msgspec.Meta(max_length=128)]
    author: Annotated[str, msgspec.Meta(min_length=1, max_length=60)]
    text: Annotated[str, msgspec.Meta(min_length=1, max_length=500)]


class Sent(msgspec.Struct):
    id: str
    state: str
    error: str | None = None


class Guestbook(Capability):
    """Keeps entries encrypted in the twin's vault."""

    migrations = [
        Migration(
            "create entries",
            """
            CREATE TABLE guestbook_entries (
                id INTEGER PRIMARY KEY,
                body BLOB NOT NULL,
                at REAL NOT NULL
            );
        """,
        ),
    ]

    def routes(self):
        return [
            api.get(
                "/entries",
                self.entries,
                permission="sign",
                response=list[Entry],
                summary="Every entry, newest first",
            ),
            api.post(
                "/entries",
                self.sign,
                permission="sign",
                body=NewEntry,
                response=Entry,
                status=201,
                summary="Write in the guestbook",
            ),
            api.post(
                "/send",
                self.send,
                permission="send",
                body=Note,
                response=Sent,
                status=202,
                summary="Write in a contact's guestbook, from this twin to theirs",
            ),
            api.get(
                "/sent/{id}",
                self.sent,
                permission="send",
                response=Sent,
                summary="Whether a note sent to a contact arrived",
            ),
        ]

    def messages(self):
        # The core checks, decrypts and de-duplicates; the handler sees each note once.
        return [MessageType("guestbook.note", self.on_note, max_body=2048)]

    async def on_note(self, message: Message) -> None:
        body = message.body
        if not isinstance(body, dict) or not all(
            isinstance(body.get(k), str) for k in ("author", "text")
        ):
            raise BadInput("a guestbook note has an author and a text")
        await self.write(body["author"][:60], body["text"][:500])

    async def send(self, call: Call) -> Sent:
        note: Note = call.body
        body = {"author": note.author.strip(), "text": note.text.strip()}
        sent = await self.context.peers.send(note.to, "guestbook.note", body)
        return Sent(sent, "queued")

    async def sent(self, call: Call) -> Sent:
        delivery = await self.context.peers.delivery(call.params["id"])
        if delivery is None:
            raise NotFound("no note was sent with that id")
        return Sent(delivery.id, delivery.state, delivery.error)

    async def entries(self, call: Call) -> list[Entry]:
        box = self.context.box()
        rows = await self.db.fetchall("SELECT id, body, at FROM guestbook_entries ORDER BY id DESC")
        return [
            Entry(row["id"], **box.open_json(row["body"], context=str(row["id"])), at=row["at"])
            for row in rows
        ]

    async def export(self, out) -> None:
        # `twin export` calls this: the entries in clear, oldest first, one JSON object a line.
        # At most MAX_ENTRIES rows, so reading them at once is fine.
        box = self.context.box()
        rows = await self.db.fetchall("SELECT id, body, at FROM guestbook_entries ORDER BY id")
        await out.lines(
            "entries.jsonl",
            (
                {
                    "id": row["id"],
                    **box.open_json(row["body"], context=str(row["id"])),
                    "at": row["at"],
                }
                for row in rows
            ),
        )

    async def restore(self, part) -> None:
        # `twin import` calls this on a new twin with what export() wrote, entry by entry in
        # the order export() wrote them. Check every value as if a stranger wrote it, keep ids
        # and times as they were, and say which line is wrong (BadInput) if one is.
        if await self.db.fetchval("SELECT COUNT(*) FROM guestbook_entries"):
            raise Conflict("the guestbook holds entries already: import into a new twin")
        item = await part.expect("entries.jsonl")  # BadInput if another entry comes first
        box = self.context.box()
        rows = []
        number = 0
        async for line in item.lines():  # each line decoded from JSON; a broken one is refused
            number += 1
            if number > MAX_ENTRIES:
                raise BadInput(f"{item.path} holds more than {MAX_ENTRIES} entries")
            try:
                entry = msgspec.convert(line, ExportedEntry)
            except msgspec.ValidationError as exc:
                raise BadInput(f"line {number} of {item.path}: {exc}") from None
            if not entry.author.strip() or not entry.text.strip():
                raise BadInput(
                    f"line {number} of {item.path}: author and text need more than spaces"
                )
            if rows and entry.id <= rows[-1][0]:
                raise BadInput(f"line {number} of {item.path}: ids go up, oldest entry first")
            # Sealed to its row id, as write() seals it.
            body = box.seal_json(
                {"author": entry.author, "text": entry.text}, context=str(entry.id)
            )
            rows.append((entry.id, body, entry.at))
        if part.peek() is not None:  # something a newer version wrote: do not drop it unread
            raise BadInput(f"{part.folder}/{part.peek()} is not a guestbook's: update hello-twin")
        await self.db.executemany(
            "INSERT INTO guestbook_entries (id, body, at) VALUES (?,?,?)", rows
        )

    async def sign(self, call: Call) -> Entry:
        new: NewEntry = call.body
        return await self.write(new.author, new.text)

    async def write(self, author: str, text: str) -> Entry:
        author, text = author.strip(), text.strip()
        if not author or not text:
            raise BadInput("author and text need more than spaces")
        at = time.time()
        box = self.context.box()

        async def write(conn: Any) -> int:
            # Counting and inserting in one transaction: two visitors cannot both take the
            # last place. Each body is sealed to its row id, so it cannot be moved to another.
            cursor = await conn.execute("SELECT COUNT(*) FROM guestbook_entries")
            (count,) = await cursor.fetchone()
            if count >= MAX_ENTRIES:
                raise BadInput(f"the guestbook is full ({MAX_ENTRIES} entries)")
            cursor = await conn.execute(
                "INSERT INTO guestbook_entries (body, at) VALUES (x'', ?)", (at,)
            )
            row_id = int(cursor.lastrowid)
            sealed = box.seal_json({"author": author, "text": text}, context=str(row_id))
            await conn.execute(
                "UPDATE guestbook_entries SET body = ? WHERE id = ?", (sealed, row_id)
            )
            return row_id

        return Entry(await self.db.transaction(write), author, text, at)
