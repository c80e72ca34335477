"""A guestbook: the smallest useful twin capability, with one permission and one experience."""

from __future__ import annotations

import time
from typing import Annotated, Any

import msgspec

from twin import BadInput, Call, Capability, Migration, api

MAX_ENTRIES = 500


class Entry(msgspec.Struct):
    id: int
    author: str
    text: str
    at: float


class NewEntry(msgspec.Struct, forbid_unknown_fields=True):
    author: Annotated[str, msgspec.Meta(min_length=1, max_length=60)]
    text: Annotated[str, msgspec.Meta(min_length=1, max_length=500)]


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
        ]

    async def entries(self, call: Call) -> list[Entry]:
        box = self.context.box()
        rows = await self.db.fetchall("SELECT id, body, at FROM guestbook_entries ORDER BY id DESC")
        return [
            Entry(row["id"], **box.open_json(row["body"], context=str(row["id"])), at=row["at"])
            for row in rows
        ]

    async def sign(self, call: Call) -> Entry:
        new: NewEntry = call.body
        author, text = new.author.strip(), new.text.strip()
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
