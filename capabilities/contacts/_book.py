"""The address book: each person a pinned twin (or one asking, or blocked) with the owner's name,
note, trust level and verified mark for them; and the invites that bring new people in."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
import time
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

from twin import BadInput, Conflict, Gone, InvalidSignature, NotFound
from twin.db import Database
from twin.identity import verify
from twin.peers import PeerChannel
from twin.vault import Box

Status = Literal["requested", "incoming", "connected", "blocked"]
TRUST_LEVELS = ("none", "a little", "some", "a lot", "fully")  # 0..4, weight level / 4
MAX_PEOPLE = 5000
MAX_INCOMING = 200
MAX_NAME = 64
MAX_NOTE = 1000
MAX_REQUEST_NOTE = 280
INVITE_DAYS = 7
MAX_INVITES = 100
_INVITE_PREFIX = "twin-invite:"


@dataclass(frozen=True)
class Person:
    """One twin in the book, as its owner sees it."""

    id: str
    did: str
    status: Status
    name: str  # what the owner calls them; their own name until renamed
    their_name: str
    note: str
    trust: int
    verified: bool
    created: float
    updated: float
    request_note: str = ""  # what they wrote when asking
    invite: str | None = None  # the label of the invite they came through
    hint: dict[str, Any] | None = None  # their signed address while they are asking
    was: Status | None = None  # the status before a block


def clean_text(value: object, what: str, limit: int, *, lines: bool = False) -> str:
    if not isinstance(value, str):
        raise BadInput(f"{what} must be text")
    text = value.strip()
    if len(text) > limit:
        raise BadInput(f"{what} is {len(text)} characters; the limit is {limit}")
    allowed = "\n\t" if lines else ""
    if any((ord(c) < 32 and c not in allowed) or 0x7F <= ord(c) < 0xA0 for c in text):
        raise BadInput(f"{what} must not contain control characters")
    return text


def encode_invite(invite: dict[str, Any]) -> str:
    raw = json.dumps(invite, separators=(",", ":")).encode()
    return _INVITE_PREFIX + base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_invite(text: object) -> dict[str, Any]:
    """An invite's content, from its code or from a link that ends in ``#<code>``."""
    if not isinstance(text, str) or len(text) > 8192:
        raise BadInput("an invite is a link or code of at most 8192 characters")
    code = text.strip().rpartition("#")[2]
    code = code.removeprefix("invite=")
    if not code.startswith(_INVITE_PREFIX):
        raise BadInput(
            "that is not a twin invite: paste the whole link or code the other person sent"
        )
    payload = code[len(_INVITE_PREFIX) :]
    if re.fullmatch(r"[A-Za-z0-9_-]+", payload) is None:
        raise BadInput("the invite is cut short or has stray characters: copy it again")
    try:
        data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise BadInput("the invite is damaged: copy it again, all of it") from None
    if (
        not isinstance(data, dict)
        or data.get("v") != 1
        or data.get("type") != "contacts.invite"
        or not all(isinstance(data.get(k), str) for k in ("did", "token", "name", "sig"))
        or not isinstance(data.get("address"), dict)
        or type(data.get("expires")) is not int
    ):
        raise BadInput("the invite is not one this twin understands (version 1)")
    return data


class Book:
    """The people and invites, sealed in the contacts tables."""

    def __init__(self, db: Database, box: Box, peers: PeerChannel) -> None:
        self._db = db
        self._box = box
        self._peers = peers
        self._people: dict[str, Person] | None = None

    async def _load(self) -> dict[str, Person]:
        """The people by did: one twin, one record (the table's key column holds the same)."""
        if self._people is None:
            rows = await self._db.fetchall("SELECT id, data FROM contacts_people")
            people = {}
            for row in rows:
                person = Person(**self._box.open_json(row["data"], context=row["id"]))
                people[person.did] = person
            self._people = people
        return self._people

    async def all(self) -> list[Person]:
        return sorted((await self._load()).values(), key=lambda p: (p.name.lower(), p.created))

    async def get(self, person_id: str) -> Person:
        person = next((p for p in (await self._load()).values() if p.id == person_id), None)
        if person is None:
            raise NotFound("no such contact: it was removed, or the id is mistyped")
        return person

    async def by_did(self, did: str) -> Person | None:
        return (await self._load()).get(did)

    async def save(self, person: Person) -> Person:
        people = await self._load()
        if person.did not in people and len(people) >= MAX_PEOPLE:
            raise BadInput(f"the address book holds at most {MAX_PEOPLE} people")
        person = replace(person, updated=time.time())
        await self._db.execute(
            "INSERT OR REPLACE INTO contacts_people (id, key, data, created, updated) "
            "VALUES (?,?,?,?,?)",
            (
                person.id,
                self._box.blind(person.did),
                self._box.seal_json(asdict(person), context=person.id),
                person.created,
                person.updated,
            ),
        )
        people[person.did] = person  # a row of another id for this did was replaced too
        return person

    async def remove(self, person: Person) -> None:
        await self._db.execute("DELETE FROM contacts_people WHERE id = ?", (person.id,))
        (await self._load()).pop(person.did, None)

    async def add(self, did: str, status: Status, their_name: str, **fields: Any) -> Person:
        now = time.time()
        person = Person(
            id=os.urandom(9).hex(),
            did=did,
            status=status,
            name=their_name or "someone",
            their_name=their_name,
            note="",
            trust=0,
            verified=False,
            created=now,
            updated=now,
            **fields,
        )
        return await self.save(person)

    async def room_for_a_request(self) -> bool:
        """Whether a request without an invite may wait for the owner (at most 200 do)."""
        waiting = [p for p in (await self._load()).values() if p.status == "incoming"]
        return len(waiting) < MAX_INCOMING

    # Invites ----------------------------------------------------------------------------

    async def create_invite(self, label: str, days: float, name: str) -> dict[str, Any]:
        count = await self._db.fetchval(
            "SELECT count(*) FROM contacts_invites WHERE used IS NULL AND expires > ?",
            (time.time(),),
        )
        if count >= MAX_INVITES:
            raise BadInput(f"{MAX_INVITES} invites are open; revoke some before making more")
        token = base64.urlsafe_b64encode(os.urandom(16)).rstrip(b"=").decode()
        invite_id = os.urandom(9).hex()
        now = time.time()
        expires = now + days * 86400
        await self._db.execute(
            "INSERT INTO contacts_invites (id, token, label, created, expires) VALUES (?,?,?,?,?)",
            (invite_id, _token_hash(token), self._box.seal(label, context=invite_id), now, expires),
        )
        invite = {
            "v": 1,
            "type": "contacts.invite",
            "did": self._peers.did,
            "name": name,
            "token": token,
            "address": self._peers.address(),
            "expires": int(expires),
        }
        code = encode_invite(self._peers.sign(invite))
        return {"id": invite_id, "label": label, "code": code, "created": now, "expires": expires}

    async def invites(self) -> list[dict[str, Any]]:
        """The invites made, newest first; those a week past their end are forgotten."""
        await self._db.execute(
            "DELETE FROM contacts_invites WHERE expires < ?", (time.time() - 7 * 86400,)
        )
        rows = await self._db.fetchall(
            "SELECT id, label, created, expires, used FROM contacts_invites ORDER BY created DESC"
        )
        return [
            {
                "id": row["id"],
                "label": self._box.open_text(row["label"], context=row["id"]),
                "created": row["created"],
                "expires": row["expires"],
                "used": row["used"],
            }
            for row in rows
        ]

    async def every_invite(self) -> list[dict[str, Any]]:
        """Every invite kept, oldest first, with its token's hash (not the token, which only
        the invite's code holds), for the export; nothing is forgotten on the way."""
        rows = await self._db.fetchall(
            "SELECT id, token, label, created, expires, used FROM contacts_invites "
            "ORDER BY created, id"
        )
        return [
            {
                "id": row["id"],
                "label": self._box.open_text(row["label"], context=row["id"]),
                "token_sha256": bytes(row["token"]).hex(),
                "created": row["created"],
                "expires": row["expires"],
                "used": row["used"],
            }
            for row in rows
        ]

    async def revoke_invite(self, invite_id: str) -> None:
        result = await self._db.execute("DELETE FROM contacts_invites WHERE id = ?", (invite_id,))
        if result.rowcount == 0:
            raise NotFound("no such invite")

    async def _open_invite(self, token: object) -> Any:
        if not isinstance(token, str) or not token or len(token) > 64:
            return None
        row = await self._db.fetchone(
            "SELECT id, label, expires, used FROM contacts_invites WHERE token = ?",
            (_token_hash(token),),
        )
        if row is None or row["used"] is not None or row["expires"] < time.time():
            return None
        return row

    async def holds_invite(self, token: object) -> bool:
        """Whether ``token`` is that of an open invite (without using it)."""
        return await self._open_invite(token) is not None

    async def use_invite(self, token: object) -> str | None:
        """The label of the open invite ``token`` belongs to, now used; None if there is none."""
        row = await self._open_invite(token)
        if row is None:
            return None
        result = await self._db.execute(
            "UPDATE contacts_invites SET used = ? WHERE id = ? AND used IS NULL",
            (time.time(), row["id"]),
        )
        if result.rowcount == 0:
            return None
        return self._box.open_text(row["label"], context=row["id"])

    def check_invite(self, invite: dict[str, Any]) -> dict[str, Any]:
        """An invite someone else made, with its address checked; not one of our own."""
        if invite["did"] == self._peers.did:
            raise Conflict(
                "this is your own invite: send it to the person you want to connect with"
            )
        try:
            verify(invite["did"], {k: v for k, v in invite.items() if k != "sig"}, invite["sig"])
            self._peers.check_address(invite["address"], invite["did"])
        except BadInput as exc:
            raise BadInput(f"the invite does not hold: {exc.message}") from None
        except InvalidSignature:
            raise BadInput("the invite was altered: its signature does not match") from None
        if invite["expires"] < time.time():
            raise Gone("this invite has expired: ask for a new one")
        return invite


def _token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()
