"""Vouches: signed statements that one twin makes about another on a topic, shared with its
contacts; and reputation, the vouches this twin holds about someone, weighted by how much
the owner trusts each voucher (a web of trust computed here, nothing global)."""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import AsyncIterator, Iterable
from functools import partial
from typing import Any

from twin import BadInput, InvalidSignature, NotFound
from twin.db import Database
from twin.identity import public_key_from_did, verify
from twin.peers import PeerChannel
from twin.vault import Box

from ._book import Book, clean_text

LEVELS = {-2: "warns strongly", -1: "has doubts", 1: "vouches", 2: "vouches strongly"}
MAX_TOPIC = 64
MAX_COMMENT = 500
MAX_FROM_ONE = 1000  # statements kept from one voucher
EXPORT_PAGE = 1000  # statements read at once for the export
VOUCH_FIELDS = ("v", "type", "id", "by", "about", "topic", "level", "comment", "issued", "sig")
REVOKE_FIELDS = ("v", "type", "id", "by", "vouch", "issued", "sig")


def topic_of(value: object) -> str:
    topic = " ".join(clean_text(value, "topic", MAX_TOPIC).lower().split())
    if not topic:
        raise BadInput("a vouch needs a topic, like 'trustworthy seller' or 'knows python'")
    return topic


def check_statement(statement: object, sender: str) -> dict[str, Any]:
    """A vouch or revocation made and signed by ``sender``."""
    if not isinstance(statement, dict):
        raise BadInput("a statement is an object")
    kind = statement.get("type")
    fields = VOUCH_FIELDS if kind == "contacts.vouch" else REVOKE_FIELDS
    if kind not in {"contacts.vouch", "contacts.revoke"} or sorted(statement) != sorted(fields):
        raise BadInput("a statement is a contacts.vouch or contacts.revoke with its fields")
    if statement["v"] != 1 or statement["by"] != sender:
        raise BadInput("a statement is version 1 and made by the twin that sends it")
    if type(statement["issued"]) is not int or not _is_id(statement["id"]):
        raise BadInput("a statement has an id of 1 to 64 characters and whole seconds in issued")
    if kind == "contacts.revoke" and not _is_id(statement["vouch"]):
        raise BadInput("a revocation names the id of a vouch")
    if kind == "contacts.vouch":
        public_key_from_did(statement["about"])
        if statement["about"] == sender:
            raise BadInput("a twin does not vouch for itself")
        if (
            not isinstance(statement["topic"], str)
            or topic_of(statement["topic"]) != statement["topic"]
        ):
            raise BadInput(
                "a vouch's topic is written as twins write it: lower case, single spaces"
            )
        if statement["level"] not in LEVELS or type(statement["level"]) is not int:
            raise BadInput(f"a vouch's level is one of {sorted(LEVELS)}")
        clean_text(statement["comment"], "comment", MAX_COMMENT, lines=True)
    verify(sender, {k: v for k, v in statement.items() if k != "sig"}, statement["sig"])
    return statement


def _is_id(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= 64


class Vouches:
    """The owner's vouches and those their contacts shared, sealed in ``contacts_vouches``."""

    def __init__(self, db: Database, box: Box, peers: PeerChannel, book: Book) -> None:
        self._db = db
        self._box = box
        self._peers = peers
        self._book = book

    def _signed(self, kind: str, **fields: Any) -> dict[str, Any]:
        """A new statement of ``kind`` by this twin, signed."""
        statement = {"v": 1, "type": kind, "id": os.urandom(12).hex(), "by": self._peers.did}
        return self._peers.sign({**statement, **fields, "issued": int(time.time())})

    def _row_id(self, by: str, statement_id: str) -> str:
        return self._box.blind(f"{by} {statement_id}")

    async def make(
        self, about: str, topic: object, level: object, comment: object
    ) -> dict[str, Any]:
        if level not in LEVELS or type(level) is not int:
            raise BadInput(f"level is one of {sorted(LEVELS)}: {LEVELS}")
        statement = self._signed(
            "contacts.vouch",
            about=about,
            topic=topic_of(topic),
            level=level,
            comment=clean_text(comment, "comment", MAX_COMMENT, lines=True),
        )
        await self._keep(statement)
        return statement

    async def revoke(self, vouch_id: str) -> dict[str, Any]:
        mine = [v for v in await self.mine() if v["id"] == vouch_id]
        if not mine:
            raise NotFound("no such vouch of yours (it may be revoked already)")
        revocation = self._signed("contacts.revoke", vouch=vouch_id)
        await self._revoke(revocation)
        return revocation

    async def mine(self) -> list[dict[str, Any]]:
        return await self._statements("by_key = ?", (self._box.blind(self._peers.did),))

    async def about(self, did: str) -> list[dict[str, Any]]:
        return await self._statements("about_key = ?", (self._box.blind(did),))

    async def _statements(self, where: str, params: tuple[Any, ...]) -> list[dict[str, Any]]:
        rows = await self._db.fetchall(
            f"SELECT id, data FROM contacts_vouches WHERE {where} AND revoked IS NULL "
            "ORDER BY issued DESC",
            params,
        )
        return [self._box.open_json(row["data"], context=row["id"]) for row in rows]

    async def take(self, statements: Iterable[object], sender: str) -> int:
        """Keep the statements a contact shared (each checked); how many were new."""
        kept = 0
        held = await self._db.fetchval(
            "SELECT count(*) FROM contacts_vouches WHERE by_key = ?", (self._box.blind(sender),)
        )
        for raw in statements:
            try:
                statement = check_statement(raw, sender)
            except (BadInput, InvalidSignature):
                continue  # one bad statement does not spoil the others
            if held + kept >= MAX_FROM_ONE:  # revocations count too: each is a row
                break
            if statement["type"] == "contacts.revoke":
                await self._revoke(statement)
                kept += 1
            elif await self._keep(statement):
                kept += 1
        return kept

    async def _keep(self, statement: dict[str, Any]) -> bool:
        result = await self._db.execute(
            "INSERT OR IGNORE INTO contacts_vouches (id, by_key, about_key, data, issued) "
            "VALUES (?,?,?,?,?)",
            (
                self._row_id(statement["by"], statement["id"]),
                self._box.blind(statement["by"]),
                self._box.blind(statement["about"]),
                self._box.seal_json(
                    statement, context=self._row_id(statement["by"], statement["id"])
                ),
                statement["issued"],
            ),
        )
        return result.rowcount == 1

    async def _revoke(self, revocation: dict[str, Any]) -> None:
        row_id = self._row_id(revocation["by"], revocation["vouch"])
        await self._db.execute(
            "INSERT INTO contacts_vouches (id, by_key, about_key, data, issued, revoked) "
            "VALUES (?,?,'',?,?,?) ON CONFLICT (id) DO UPDATE SET "
            "data = excluded.data, about_key = '', revoked = excluded.revoked",
            (
                row_id,
                self._box.blind(revocation["by"]),
                self._box.seal_json(revocation, context=row_id),
                revocation["issued"],
                time.time(),
            ),
        )

    async def forget(self, did: str) -> None:
        """Drop what a removed contact shared."""
        await self._db.execute(
            "DELETE FROM contacts_vouches WHERE by_key = ?", (self._box.blind(did),)
        )

    async def every_statement(
        self, *, revoked: bool
    ) -> AsyncIterator[tuple[dict[str, Any], float | None]]:
        """Every vouch kept (``revoked=False``: the owner's and those contacts shared) or every
        revocation kept, each as signed, with when it was taken; in the order they came."""
        which = "revoked IS NOT NULL" if revoked else "revoked IS NULL"
        after = 0
        while True:
            rows = await self._db.fetchall(
                f"SELECT rowid, id, data, revoked FROM contacts_vouches WHERE {which} "
                "AND rowid > ? ORDER BY rowid LIMIT ?",
                (after, EXPORT_PAGE),
            )
            if not rows:
                return
            for row in rows:
                yield self._box.open_json(row["data"], context=row["id"]), row["revoked"]
            after = rows[-1]["rowid"]

    @staticmethod
    def restored(statement: object, kind: str) -> dict[str, Any]:
        """A statement of an export, checked and its signature verified as when a contact
        shares one (:func:`check_statement`); it must be a ``kind``."""
        by = statement.get("by") if isinstance(statement, dict) else None
        if not isinstance(by, str):
            raise BadInput("a statement names the twin that made it in by")
        try:
            checked = check_statement(statement, by)
        except InvalidSignature:
            raise BadInput(
                f"the signature of {by}'s statement does not verify: it was altered"
            ) from None
        if checked["type"] != kind:
            raise BadInput(f"it is a {checked['type']}, not a {kind}")
        return checked

    async def restore(self, statements: list[tuple[str, dict[str, Any], float | None]]) -> None:
        """Keep statements of an export (each :meth:`restored`) as they were kept: vouches
        with ``None``, revocations with when they were taken; after those kept before them."""
        rows = []
        for where, statement, revoked in statements:
            if revoked is None:
                row_id = self._row_id(statement["by"], statement["id"])
                about = self._box.blind(statement["about"])
            else:  # a revocation takes the place of the vouch it revokes
                row_id = self._row_id(statement["by"], statement["vouch"])
                about = ""
            by = self._box.blind(statement["by"])
            data = self._box.seal_json(statement, context=row_id)
            rows.append((where, (row_id, by, about, data, statement["issued"], revoked)))
        await self._db.write(partial(_insert, rows=rows))

    async def revocations(self) -> list[dict[str, Any]]:
        rows = await self._db.fetchall(
            "SELECT id, data FROM contacts_vouches WHERE by_key = ? AND revoked IS NOT NULL",
            (self._box.blind(self._peers.did),),
        )
        return [self._box.open_json(row["data"], context=row["id"]) for row in rows]

    async def reputation(self, did: str) -> dict[str, Any]:
        """What this twin holds about ``did``: each vouch with its voucher and the weight the
        owner's trust gives it, and a weighted score per topic (-2 to 2)."""
        me = self._peers.did
        topics: dict[str, dict[str, Any]] = {}
        for statement in await self.about(did):
            by = statement["by"]
            if by == me:
                voucher, weight, trust = "you", 1.0, None
            else:
                person = await self._book.by_did(by)
                if person is None or person.status != "connected":
                    continue  # said by someone who is no longer a contact
                voucher, trust = person.name, person.trust
                weight = person.trust / 4
            topic = topics.setdefault(
                statement["topic"], {"vouches": [], "sum": 0.0, "weight": 0.0}
            )
            topic["vouches"].append(
                {
                    "id": statement["id"],
                    "by": by,
                    "voucher": voucher,
                    "mine": by == me,
                    "trust": trust,
                    "weight": weight,
                    "level": statement["level"],
                    "says": LEVELS[statement["level"]],
                    "comment": statement["comment"],
                    "issued": statement["issued"],
                }
            )
            topic["sum"] += weight * statement["level"]
            topic["weight"] += weight
        return {
            "did": did,
            "topics": [
                {
                    "topic": name,
                    "score": round(t["sum"] / t["weight"], 2) if t["weight"] else None,
                    "weight": round(t["weight"], 2),
                    "vouches": t["vouches"],
                }
                for name, t in sorted(topics.items(), key=lambda kv: -kv[1]["weight"])
            ],
        }


def _insert(conn: sqlite3.Connection, rows: list[tuple[str, tuple[Any, ...]]]) -> None:
    for where, row in rows:
        try:
            conn.execute(
                "INSERT INTO contacts_vouches (id, by_key, about_key, data, issued, revoked) "
                "VALUES (?,?,?,?,?,?)",
                row,
            )
        except sqlite3.IntegrityError:
            raise BadInput(
                f"{where}: the statement is listed twice, or its vouch both kept and revoked"
            ) from None
