"""The HTTP face of contacts: ``/api/contacts/…`` for the Contacts experience and scripts."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import msgspec

from twin import BadInput, Call, api
from twin.api import Endpoint
from twin.identity import public_key_from_did
from twin.peers import Health

from ._book import clean_text
from ._vouches import LEVELS

if TYPE_CHECKING:
    from . import Contacts

_Id = Annotated[str, msgspec.Meta(max_length=64)]


class NewInvite(msgspec.Struct, forbid_unknown_fields=True):
    label: Annotated[str, msgspec.Meta(max_length=64)] = ""
    days: float | None = None


class Connect(msgspec.Struct, forbid_unknown_fields=True):
    invite: Annotated[str, msgspec.Meta(max_length=8192)]
    note: Annotated[str, msgspec.Meta(max_length=280)] = ""


class Change(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    name: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    note: Annotated[str, msgspec.Meta(max_length=1000)] | None = None
    trust: Annotated[int, msgspec.Meta(ge=0, le=4)] | None = None
    verified: bool | None = None


class NewVouch(msgspec.Struct, forbid_unknown_fields=True):
    topic: Annotated[str, msgspec.Meta(max_length=64)]
    level: Annotated[int, msgspec.Meta(ge=-2, le=2)]
    comment: Annotated[str, msgspec.Meta(max_length=500)] = ""


class ContactInfo(msgspec.Struct):
    id: str
    did: str
    status: str
    name: str
    their_name: str
    note: str
    trust: int
    trust_label: str
    verified: bool
    safety_number: str
    request_note: str
    invite: str | None
    created: float
    last_seen: float | None
    address: list[str]
    delivery: Health | None


class ContactList(msgspec.Struct):
    contacts: list[ContactInfo]


class InviteInfo(msgspec.Struct):
    id: str
    label: str
    created: float
    expires: float
    used: float | None = None
    code: str | None = None
    link: str | None = None
    qr: str | None = None


class InviteList(msgspec.Struct):
    invites: list[InviteInfo]


class Statement(msgspec.Struct):
    """A signed vouch (``contacts.vouch``) or revocation (``contacts.revoke``)."""

    v: int
    type: str
    id: str
    by: str
    issued: int
    sig: str
    about: str | None = None
    topic: str | None = None
    level: int | None = None
    comment: str | None = None
    vouch: str | None = None


class VouchList(msgspec.Struct):
    vouches: list[Statement]


class Said(msgspec.Struct):
    id: str
    by: str
    voucher: str
    mine: bool
    trust: int | None
    weight: float
    level: int
    says: str
    comment: str
    issued: int


class Topic(msgspec.Struct):
    topic: str
    score: float | None
    weight: float
    vouches: list[Said]


class Reputation(msgspec.Struct):
    did: str
    topics: list[Topic]


class Me(msgspec.Struct):
    did: str
    name: str
    address: list[str]


def endpoints(cap: Contacts) -> list[Endpoint]:
    book = cap.book

    async def listing(call: Call) -> dict[str, Any]:
        return {"contacts": [await cap.view(p) for p in await book.all()]}

    async def one(call: Call) -> dict[str, Any]:
        return await cap.view(await book.get(call.params["id"]))

    async def change(call: Call) -> dict[str, Any]:
        changes = {k: v for k, v in msgspec.structs.asdict(call.body).items() if v is not None}
        person = await cap.edit(await book.get(call.params["id"]), changes)
        return await cap.view(person)

    async def remove(call: Call) -> None:
        await cap.remove(await book.get(call.params["id"]))

    async def accept(call: Call) -> dict[str, Any]:
        return await cap.view(await cap.accept(await book.get(call.params["id"])))

    async def decline(call: Call) -> None:
        await cap.decline(await book.get(call.params["id"]))

    async def block(call: Call) -> dict[str, Any]:
        return await cap.view(await cap.block(await book.get(call.params["id"])))

    async def unblock(call: Call) -> dict[str, Any] | None:
        person = await cap.unblock(await book.get(call.params["id"]))
        return None if person is None else await cap.view(person)

    async def retry(call: Call) -> dict[str, Any]:
        person = await book.get(call.params["id"])
        peer = await cap.peers.peer(person.did)
        if peer is not None:
            cap.peers.retry(peer)
        return await cap.view(person)

    async def connect(call: Call) -> dict[str, Any]:
        return await cap.view(await cap.connect(call.body.invite, call.body.note))

    async def new_invite(call: Call) -> dict[str, Any]:
        from twin.account import qr_svg

        body: NewInvite = call.body
        invite = await book.create_invite(
            clean_text(body.label, "label", 64), cap.invite_days(body.days), await cap.my_name()
        )
        link = cap.invite_link(invite["code"])
        return {**invite, "link": link, "qr": qr_svg(link)}

    async def invites(call: Call) -> dict[str, Any]:
        return {"invites": await book.invites()}

    async def revoke_invite(call: Call) -> None:
        await book.revoke_invite(call.params["id"])

    async def me(call: Call) -> dict[str, Any]:
        return {
            "did": cap.peers.did,
            "name": await cap.my_name(),
            "address": cap.peers.address()["urls"],
        }

    async def vouch(call: Call) -> Any:
        body: NewVouch = call.body
        if body.level not in LEVELS:
            raise BadInput(f"level is one of {sorted(LEVELS)} (0 is no vouch at all)")
        person = await book.get(call.params["id"])
        return await cap.vouch(person, body.topic, body.level, body.comment)

    async def ask(call: Call) -> dict[str, Any]:
        person = await book.get(call.params["id"])
        await cap.ask_vouches(person)
        return await cap.view(person)

    async def my_vouches(call: Call) -> dict[str, Any]:
        return {"vouches": await cap.vouches.mine()}

    async def revoke(call: Call) -> Any:
        return await cap.revoke(call.params["id"])

    async def reputation(call: Call) -> dict[str, Any]:
        did = call.params["did"]
        public_key_from_did(did)
        return await cap.vouches.reputation(did)

    return [
        api.get(
            "/",
            listing,
            permission="read",
            response=ContactList,
            summary="Every contact, request and blocked twin",
        ),
        api.get(
            "/me",
            me,
            permission="read",
            response=Me,
            summary="This twin's did, name and address, as contacts see them",
        ),
        api.post(
            "/invites",
            new_invite,
            permission="write",
            body=NewInvite,
            response=InviteInfo,
            status=201,
            summary="A one-time invite: a link and its QR code",
        ),
        api.get(
            "/invites",
            invites,
            permission="read",
            response=InviteList,
            summary="The invites made, used or not",
        ),
        api.delete(
            "/invites/{id}",
            revoke_invite,
            permission="write",
            summary="Revoke an invite nobody used yet",
        ),
        api.post(
            "/connect",
            connect,
            permission="write",
            body=Connect,
            response=ContactInfo,
            status=201,
            summary="Use someone's invite: send them a contact request",
        ),
        api.get(
            "/vouches",
            my_vouches,
            permission="read",
            response=VouchList,
            summary="Your vouches, as signed statements",
        ),
        api.delete(
            "/vouches/{id}",
            revoke,
            permission="vouch",
            response=Statement,
            summary="Revoke one of your vouches (your contacts are told)",
        ),
        api.get(
            "/reputation/{did}",
            reputation,
            permission="read",
            response=Reputation,
            summary="What you and the people you trust say about a twin",
        ),
        api.get("/{id}", one, permission="read", response=ContactInfo, summary="One contact"),
        api.patch(
            "/{id}",
            change,
            permission="write",
            body=Change,
            response=ContactInfo,
            summary="Change a contact's name, note, trust or verified mark",
        ),
        api.delete(
            "/{id}",
            remove,
            permission="write",
            summary="Remove a contact: their key, queue and vouches go",
        ),
        api.post(
            "/{id}/accept",
            accept,
            permission="write",
            response=ContactInfo,
            summary="Accept a contact request",
        ),
        api.post(
            "/{id}/decline",
            decline,
            permission="write",
            summary="Decline a contact request (the asker is not told)",
        ),
        api.post(
            "/{id}/block",
            block,
            permission="write",
            response=ContactInfo,
            summary="Block a twin: what it sends is dropped unseen",
        ),
        api.post(
            "/{id}/unblock",
            unblock,
            permission="write",
            response=ContactInfo,
            other_statuses=(204,),
            summary="Unblock a twin (a blocked request is forgotten, so it may ask again)",
        ),
        api.post(
            "/{id}/retry",
            retry,
            permission="write",
            response=ContactInfo,
            summary="Try to deliver what waits for this contact now",
        ),
        api.post(
            "/{id}/ask",
            ask,
            permission="read",
            response=ContactInfo,
            summary="Ask a contact's twin to send all its vouches again",
        ),
        api.post(
            "/{id}/vouches",
            vouch,
            permission="vouch",
            body=NewVouch,
            status=201,
            response=Statement,
            summary="Vouch for a contact on a topic, with a level from -2 to 2 and a comment",
        ),
    ]
