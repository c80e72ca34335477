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
from dataclasses import MISSING, asdict, dataclass, fields, replace
from typing import Any, Literal, get_args

from twin import BadInput, Conflict, Gone, InvalidSignature, NotFound
from twin.db import Database
from twin.identity import public_key_from_did, verify
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
MAX_LABEL = 64
MAX_TIME = 2**33  # seconds since 1970: past the year 2200
_INVITE_PREFIX = "twin-invite:"
_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_SHA256 = re.compile(r"[0-9a-f]{64}")


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

    def restored(self, line: object) -> Person:
        """A person as the export wrote them (each field, and a ``trust_label``), checked as
        the API checks what it is given; their signed address too, while they are asking."""
        if not isinstance(line, dict):
            raise BadInput("it is not an object")
        required = [f.name for f in fields(Person) if f.default is MISSING]
        if missing := [name for name in required if name not in line]:
            raise BadInput(f"it has no {missing[0]}")
        person_id, did = line["id"], line["did"]
        if not isinstance(person_id, str) or not _ID.fullmatch(person_id):
            raise BadInput("id is 1 to 64 letters, digits, - or _")
        public_key_from_did(did)
        statuses = get_args(Status)
        status, was = line["status"], line.get("was")
        if status not in statuses:
            raise BadInput(f"status is one of {', '.join(statuses)}, not {status!r}")
        if was is not None and (status != "blocked" or was not in statuses or was == "blocked"):
            raise BadInput("was is the status before a block: only a blocked contact has one")
        name = clean_text(line["name"], "name", MAX_NAME)
        if not name:
            raise BadInput("name is empty")
        trust = line["trust"]
        if type(trust) is not int or not 0 <= trust < len(TRUST_LEVELS):
            raise BadInput(f"trust is 0 to {len(TRUST_LEVELS) - 1}, not {trust!r}")
        if line.get("trust_label", TRUST_LEVELS[trust]) != TRUST_LEVELS[trust]:
            raise BadInput(f"trust_label of trust {trust} is {TRUST_LEVELS[trust]!r}")
        if not isinstance(line["verified"], bool):
            raise BadInput("verified is true or false")
        invite = line.get("invite")
        hint = line.get("hint")
        if hint is not None:
            try:
                hint = self._peers.check_address(hint, did)
            except InvalidSignature:
                raise BadInput("hint is not an address signed by the twin it names") from None
        return Person(
            id=person_id,
            did=did,
            status=status,
            name=name,
            their_name=clean_text(line["their_name"], "their_name", MAX_NAME),
            note=clean_text(line["note"], "note", MAX_NOTE, lines=True),
            trust=trust,
            verified=line["verified"],
            created=check_time(line["created"], "created"),
            updated=check_time(line["updated"], "updated"),
            request_note=clean_text(
                line.get("request_note", ""), "request_note", MAX_REQUEST_NOTE, lines=True
            ),
            invite=None if invite is None else clean_text(invite, "invite", MAX_LABEL),
            hint=hint,
            was=was,
        )

    async def restore(self, people: list[Person]) -> None:
        """Put the people of an export (each :meth:`restored`, once) into an empty book, with
        their ids and times as they were."""
        await self._db.executemany(
            "INSERT INTO contacts_people (id, key, data, created, updated) VALUES (?,?,?,?,?)",
            [
                (
                    p.id,
                    self._box.blind(p.did),
                    self._box.seal_json(asdict(p), context=p.id),
                    p.created,
                    p.updated,
                )
                for p in people
            ],
        )
        self._people = None

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

    async def restore_invites(self, invites: object) -> None:
        """Put the invites of an export (:meth:`every_invite`) into an empty table: by their
        token's hash, so an invite given out before still works, or is still used."""
        if not isinstance(invites, list):
            raise BadInput("it is not a list of invites")
        rows: list[tuple[Any, ...]] = []
        ids: set[str] = set()
        tokens: set[bytes] = set()
        for number, invite in enumerate(invites, 1):
            try:
                row = self._invite_row(invite)
                if row[0] in ids or row[1] in tokens:
                    raise BadInput("it is listed twice (the same id or token)")
            except BadInput as exc:
                raise BadInput(f"invite {number}: {exc.message}") from None
            ids.add(row[0])
            tokens.add(row[1])
            rows.append(row)
        await self._db.executemany(
            "INSERT INTO contacts_invites (id, token, label, created, expires, used) "
            "VALUES (?,?,?,?,?,?)",
            rows,
        )

    def _invite_row(self, invite: object) -> tuple[Any, ...]:
        if not isinstance(invite, dict):
            raise BadInput("it is not an object")
        invite_id, token = invite.get("id"), invite.get("token_sha256")
        if not isinstance(invite_id, str) or not _ID.fullmatch(invite_id):
            raise BadInput("id is 1 to 64 letters, digits, - or _")
        if not isinstance(token, str) or not _SHA256.fullmatch(token):
            raise BadInput("token_sha256 is 64 lower-case hex digits")
        label = clean_text(invite.get("label"), "label", MAX_LABEL)
        used = invite.get("used")
        return (
            invite_id,
            bytes.fromhex(token),
            self._box.seal(label, context=invite_id),
            check_time(invite.get("created"), "created"),
            check_time(invite.get("expires"), "expires"),
            None if used is None else check_time(used, "used"),
        )

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


def check_time(value: Any, what: str) -> float:
    """A time of an export: seconds since 1970, as a number."""
    if type(value) not in (int, float) or not 0 <= value < MAX_TIME:
        raise BadInput(f"{what} is seconds since 1970, not {value!r}")
    return float(value)
