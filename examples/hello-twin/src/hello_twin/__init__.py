"""A guestbook: the smallest useful twin capability, with an experience, and a message type that
lets a contact's twin write in it from afar (the peer protocol, as a plugin uses it)."""

from __future__ import annotations

import time
from typing import Annotated, Any

import msgspec

from twin import BadInput, Call, Capability, Message, MessageType, Migration, NotFound, api

MAX_ENTRIES = 500


class Entry(msgspec.Struct):
    id: int
    author: str
    text: str
    at: float


class NewEntry(msgspec.Struct, forbid_unknown_fields=True):
    author: Annotated[str, msgspec.Meta(min_length=1, max_length=60)]
    text: Annotated[str, msgspec.Meta(min_length=1, max_length=500)]


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
