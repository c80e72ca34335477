"""The ``contacts`` capability: invites, contact requests, the address book (names, notes,
trust, verified keys), vouches and reputation, over the twin's peer protocol."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, replace
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from twin import BadInput, Capability, Conflict, Holding, Migration, NotFound, Unavailable
from twin.api import Endpoint
from twin.doors import Mount
from twin.export import at
from twin.peers import Message, MessageType, PeerChannel

from ..profile import ProfileCapability
from ._book import (
    INVITE_DAYS,
    MAX_NAME,
    MAX_PEOPLE,
    MAX_REQUEST_NOTE,
    TRUST_LEVELS,
    Book,
    Person,
    check_time,
    clean_text,
    decode_invite,
)
from ._vouches import EXPORT_PAGE, Vouches

if TYPE_CHECKING:
    from twin.export import Export, Part

__all__ = ["Contacts", "Person"]
SHARE_CHUNK = 40  # statements in one contacts.vouches message
PARTS = ("contacts.jsonl", "vouches.jsonl", "revocations.jsonl", "invites.json")  # in order
P = ParamSpec("P")
T = TypeVar("T")


def _one_at_a_time(
    method: Callable[P, Awaitable[T]],
) -> Callable[P, Awaitable[T]]:
    """Run a change of the address book alone: the owner's answer to a request and the
    other twin's next message must not interleave (two records for one twin)."""

    @functools.wraps(method)
    async def serialized(*args: P.args, **kwargs: P.kwargs) -> T:
        contacts = args[0]
        assert isinstance(contacts, Contacts)
        async with contacts.changing:
            return await method(*args, **kwargs)

    return serialized


class Contacts(Capability):
    """The people this twin talks to, and what they say about others."""

    migrations = (
        Migration(
            "create people, invites and vouches",
            """
            CREATE TABLE contacts_people (
                id TEXT PRIMARY KEY,
                key TEXT NOT NULL UNIQUE,
                data BLOB NOT NULL,
                created REAL NOT NULL,
                updated REAL NOT NULL
            );
            CREATE TABLE contacts_invites (
                id TEXT PRIMARY KEY,
                token BLOB NOT NULL UNIQUE,
                label BLOB NOT NULL,
                created REAL NOT NULL,
                expires REAL NOT NULL,
                used REAL
            );
            CREATE TABLE contacts_vouches (
                id TEXT PRIMARY KEY,
                by_key TEXT NOT NULL,
                about_key TEXT NOT NULL,
                data BLOB NOT NULL,
                issued REAL NOT NULL,
                revoked REAL
            );
            CREATE INDEX contacts_vouches_by ON contacts_vouches (by_key);
            CREATE INDEX contacts_vouches_about ON contacts_vouches (about_key);
        """,
        ),
    )

    def __init__(self, context: Any) -> None:
        super().__init__(context)
        if context.peers is None:
            raise BadInput("the contacts capability needs the twin's peers")
        self.peers: PeerChannel = context.peers
        self.book = Book(context.db, context.box("people"), self.peers)
        self.vouches = Vouches(context.db, context.box("vouches"), self.peers, self.book)
        self.changing = asyncio.Lock()

    def routes(self) -> Sequence[Endpoint]:
        from ._http import endpoints

        return endpoints(self)

    def mounts(self) -> Sequence[Mount]:
        from ._connect import connect_app

        return [Mount("/connect", connect_app(self))]

    def messages(self) -> Sequence[MessageType]:
        return [
            MessageType("contacts.request", self._on_request, strangers=True),
            MessageType("contacts.accept", self._on_accept, max_body=4096),
            MessageType("contacts.vouches", self._on_vouches),
            MessageType("contacts.ask", self._on_ask, max_body=256, ttl=86400),
        ]

    async def holdings(self) -> Sequence[Holding]:
        people = [p for p in await self.book.all() if p.status == "connected"]
        if not people:
            return []
        return [Holding("contacts", len(people), 0, None, "contacts")]

    async def export(self, out: Export) -> None:
        """``contacts.jsonl``, ``vouches.jsonl``, ``revocations.jsonl`` and ``invites.json``
        (docs/export-format.md); keys and addresses are in the twin's ``peers.json``."""
        people = sorted(await self.book.all(), key=lambda p: (p.created, p.id))
        await out.lines(
            "contacts.jsonl",
            ({**asdict(p), "trust_label": TRUST_LEVELS[p.trust]} for p in people),
        )
        await out.lines(
            "vouches.jsonl",
            (statement async for statement, _ in self.vouches.every_statement(revoked=False)),
        )
        await out.lines(
            "revocations.jsonl",
            (
                {"statement": statement, "revoked": when}
                async for statement, when in self.vouches.every_statement(revoked=True)
            ),
        )
        await out.json("invites.json", await self.book.every_invite())

    async def restore(self, part: Part) -> None:
        """The address book, vouches, revocations and invites back as they were exported, every
        signed statement verified again; the keys pinned come with ``twin/peers.json``."""
        held = await self.db.fetchval(
            "SELECT (SELECT count(*) FROM contacts_people) + "
            "(SELECT count(*) FROM contacts_invites) + (SELECT count(*) FROM contacts_vouches)"
        )
        if held:
            raise Conflict(
                "this twin holds contacts, invites or vouches already: import into a new twin"
            )
        item = await part.expect(PARTS[0])
        people: list[Person] = []
        seen: set[str] = set()
        async for where, line in item.numbered():
            with at(where):
                person = self.book.restored(line)
                if person.id in seen or person.did in seen:
                    raise BadInput("this contact is listed before (the same id or did)")
                if len(people) >= MAX_PEOPLE:
                    raise BadInput(f"the address book holds at most {MAX_PEOPLE} people")
            seen |= {person.id, person.did}
            people.append(person)
        await self.book.restore(people)
        for name, kind in ((PARTS[1], "contacts.vouch"), (PARTS[2], "contacts.revoke")):
            item = await part.expect(name)
            page: list[tuple[str, dict[str, Any], float | None]] = []
            async for where, line in item.numbered():
                with at(where):
                    page.append((where, *_statement(line, kind)))
                if len(page) >= EXPORT_PAGE:
                    await self.vouches.restore(page)
                    page = []
            await self.vouches.restore(page)
        item = await part.expect(PARTS[3])
        invites = await item.json()
        with at(item.path):
            await self.book.restore_invites(invites)
        if (extra := part.peek()) is not None:
            raise BadInput(f"{part.folder}/{extra} is not part of contacts: the export is damaged")

    async def my_name(self) -> str:
        profile = await self.require(ProfileCapability).current()
        return profile.display_name or "someone"

    # What the owner does ----------------------------------------------------------------

    @_one_at_a_time
    async def connect(self, text: object, note: object) -> Person:
        """Use someone's invite: pin their key and send them a contact request."""
        invite = self.book.check_invite(decode_invite(text))
        note = clean_text(note, "note", MAX_REQUEST_NOTE, lines=True)
        did = invite["did"]
        person = await self.book.by_did(did)
        if person is not None:
            if person.status == "connected":
                raise Conflict(f"{person.name} is already a contact")
            if person.status == "blocked":
                raise Conflict(f"you blocked {person.name}: unblock them first")
            if person.status == "incoming":  # they asked us first: that is an answer
                return await self._accept(person)
        await self.peers.pin(did, invite["address"])
        if person is None:
            name = clean_text(invite["name"], "name", MAX_NAME) or "someone"
            person = await self.book.add(did, "requested", name)
        await self.peers.send(
            did,
            "contacts.request",
            {
                "name": await self.my_name(),
                "note": note,
                "token": invite["token"],
                "address": self.peers.address(),
            },
        )
        return person

    @_one_at_a_time
    async def accept(self, person: Person) -> Person:
        return await self._accept(person)

    async def _accept(self, person: Person) -> Person:
        person = await self.book.get(person.id)  # as it is now, not as the caller read it
        if person.status != "incoming":
            raise Conflict(f"{person.name} is not asking to connect")
        await self.peers.pin(person.did, person.hint)
        person = await self.book.save(replace(person, status="connected", hint=None))
        await self.peers.send(person.did, "contacts.accept", {"name": await self.my_name()})
        await self._share_all(person)
        return person

    @_one_at_a_time
    async def decline(self, person: Person) -> None:
        person = await self.book.get(person.id)
        if person.status != "incoming":
            raise Conflict(f"{person.name} is not asking to connect")
        await self.book.remove(person)

    @_one_at_a_time
    async def block(self, person: Person) -> Person:
        person = await self.book.get(person.id)
        if person.status == "blocked":
            return person
        await self.peers.block(person.did)
        return await self.book.save(replace(person, status="blocked", was=person.status, hint=None))

    @_one_at_a_time
    async def unblock(self, person: Person) -> Person | None:
        person = await self.book.get(person.id)
        if person.status != "blocked":
            raise Conflict(f"{person.name} is not blocked")
        if person.was == "connected":
            await self.peers.pin(person.did)
            return await self.book.save(replace(person, status="connected", was=None))
        await self.peers.forget(person.did)  # they may ask again
        await self.book.remove(person)
        return None

    @_one_at_a_time
    async def remove(self, person: Person) -> None:
        person = await self.book.get(person.id)
        try:
            await self.peers.forget(person.did)
        except NotFound:
            pass
        await self.vouches.forget(person.did)
        await self.book.remove(person)

    @_one_at_a_time
    async def edit(self, person: Person, changes: dict[str, Any]) -> Person:
        person = await self.book.get(person.id)
        if "name" in changes:
            name = clean_text(changes["name"], "name", MAX_NAME)
            person = replace(person, name=name or person.their_name or "someone")
        if "note" in changes:
            person = replace(person, note=clean_text(changes["note"], "note", 1000, lines=True))
        if "trust" in changes:
            trust = changes["trust"]
            if type(trust) is not int or not 0 <= trust < len(TRUST_LEVELS):
                raise BadInput(f"trust is 0 to {len(TRUST_LEVELS) - 1}: {', '.join(TRUST_LEVELS)}")
            person = replace(person, trust=trust)
        if "verified" in changes:
            if not isinstance(changes["verified"], bool):
                raise BadInput("verified is true or false")
            person = replace(person, verified=changes["verified"])
        return await self.book.save(person)

    async def vouch(self, person: Person, topic: object, level: object, comment: object) -> Any:
        if person.status != "connected":
            raise Conflict("you can vouch only for a connected contact")
        statement = await self.vouches.make(person.did, topic, level, comment)
        await self._broadcast([statement])
        return statement

    async def ask_vouches(self, person: Person) -> None:
        """Ask a contact's twin for every vouch it made again (its answer replaces nothing
        but adds what is missing here)."""
        if person.status != "connected":
            raise Conflict(f"{person.name} is not a connected contact")
        await self.peers.send(person.did, "contacts.ask", {"what": "vouches"})

    async def revoke(self, vouch_id: str) -> Any:
        revocation = await self.vouches.revoke(vouch_id)
        await self._broadcast([revocation])
        return revocation

    async def _broadcast(self, statements: list[dict[str, Any]]) -> None:
        for person in await self.book.all():
            if person.status == "connected":
                await self.peers.send(person.did, "contacts.vouches", {"statements": statements})

    async def _share_all(self, person: Person) -> None:
        """Send a new contact every vouch (and revocation) this twin has made."""
        statements = await self.vouches.mine() + await self.vouches.revocations()
        for start in range(0, len(statements), SHARE_CHUNK):
            chunk = statements[start : start + SHARE_CHUNK]
            await self.peers.send(person.did, "contacts.vouches", {"statements": chunk})

    # What other twins send --------------------------------------------------------------

    @_one_at_a_time
    async def _on_request(self, message: Message) -> None:
        body = message.body
        if not isinstance(body, dict):
            raise BadInput("a contact request is an object")
        name = clean_text(body.get("name", ""), "name", MAX_NAME)
        note = clean_text(body.get("note", ""), "note", MAX_REQUEST_NOTE, lines=True)
        hint = self.peers.check_address(body.get("address"), message.sender)
        person = await self.book.by_did(message.sender)
        if person is None:
            token = body.get("token")
            if not await self.book.holds_invite(token) and not await self.book.room_for_a_request():
                # not "never": the sender's twin tries again once the owner has answered some
                raise Unavailable("too many requests are waiting for an answer; try later")
            label = await self.book.use_invite(token)
            await self.book.add(
                message.sender,
                "incoming",
                name,
                request_note=note,
                invite=label,
                hint=hint,
            )
        elif person.status == "requested":  # we asked each other: that is a yes both ways
            await self.peers.pin(person.did, hint)
            person = await self.book.save(replace(person, status="connected", their_name=name))
            await self.peers.send(person.did, "contacts.accept", {"name": await self.my_name()})
            await self._share_all(person)
        elif person.status == "connected":  # they lost us (a new twin from their phrase)
            await self.peers.pin(person.did, hint)
            await self.peers.send(person.did, "contacts.accept", {"name": await self.my_name()})
        elif person.status == "incoming":
            await self.book.save(replace(person, request_note=note, their_name=name, hint=hint))

    @_one_at_a_time
    async def _on_accept(self, message: Message) -> None:
        body = message.body if isinstance(message.body, dict) else {}
        person = await self.book.by_did(message.sender)
        if person is None or person.status != "requested":
            return
        name = clean_text(body.get("name", ""), "name", MAX_NAME)
        renamed = person.name if person.name != person.their_name else (name or person.name)
        person = await self.book.save(
            replace(person, status="connected", their_name=name or person.their_name, name=renamed)
        )
        await self._share_all(person)

    async def _on_ask(self, message: Message) -> None:
        person = await self.book.by_did(message.sender)
        if person is not None and person.status == "connected":
            await self._share_all(person)

    @_one_at_a_time
    async def _on_vouches(self, message: Message) -> None:
        person = await self.book.by_did(message.sender)
        if person is None or person.status != "connected":
            return
        statements = message.body.get("statements") if isinstance(message.body, dict) else None
        if not isinstance(statements, list):
            raise BadInput("contacts.vouches carries a list of statements")
        await self.vouches.take(statements, message.sender)

    # Views ------------------------------------------------------------------------------

    async def view(self, person: Person) -> dict[str, Any]:
        peer = await self.peers.peer(person.did)
        health = await self.peers.health(peer) if peer is not None else None
        return {
            "id": person.id,
            "did": person.did,
            "status": person.status,
            "name": person.name,
            "their_name": person.their_name,
            "note": person.note,
            "trust": person.trust,
            "trust_label": TRUST_LEVELS[person.trust],
            "verified": person.verified,
            "safety_number": self.peers.safety_number(person.did),
            "request_note": person.request_note,
            "invite": person.invite,
            "created": person.created,
            "last_seen": peer.last_seen if peer else None,
            "address": list(peer.urls) if peer else [],
            "delivery": health,
        }

    def invite_link(self, code: str) -> str:
        return f"{self.context.settings.url}/connect#{code}"

    @staticmethod
    def invite_days(value: object) -> float:
        days = INVITE_DAYS if value is None else value
        if not isinstance(days, (int, float)) or not 0 < days <= 30:
            raise BadInput("an invite lasts more than 0 and at most 30 days")
        return float(days)


def _statement(line: Any, kind: str) -> tuple[dict[str, Any], float | None]:
    """A line of ``vouches.jsonl`` (a vouch) or of ``revocations.jsonl`` (a revocation and
    when it was taken), checked and verified."""
    if kind == "contacts.vouch":
        return Vouches.restored(line, kind), None
    if not isinstance(line, dict) or "statement" not in line:
        raise BadInput('it is not an object of a "statement" and when it was "revoked"')
    return Vouches.restored(line["statement"], kind), check_time(line.get("revoked"), "revoked")
