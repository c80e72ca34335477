"""A guestbook: the smallest useful twin capability, with one permission and one experience."""

from __future__ import annotations

import time
from typing import Annotated

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
            Entry(row["id"], **box.open_json(row["body"], context=str(row["at"])), at=row["at"])
            for row in rows
        ]

    async def sign(self, call: Call) -> Entry:
        count = await self.db.fetchval("SELECT COUNT(*) FROM guestbook_entries")
        if count >= MAX_ENTRIES:
            raise BadInput(f"the guestbook is full ({MAX_ENTRIES} entries)")
        new: NewEntry = call.body
        at = time.time()
        body = self.context.box().seal_json(
            {"author": new.author.strip(), "text": new.text.strip()}, context=str(at)
        )
        result = await self.db.execute(
            "INSERT INTO guestbook_entries (body, at) VALUES (?, ?)", (body, at)
        )
        return Entry(result.lastrowid, new.author.strip(), new.text.strip(), at)
