"""The twin's side of the peer protocol: its peers, the message types capabilities registered,
the outbox and the inbox, and what each capability may do with them (a ``PeerChannel``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import msgspec

from twin.db import Database
from twin.errors import (
    BadInput,
    Conflict,
    Forbidden,
    NotFound,
    PluginError,
    TooLarge,
    TwinError,
    Unavailable,
)
from twin.identity import Identity
from twin.peers._directory import Directory
from twin.peers._envelope import (
    ADDRESS_TTL,
    MAX_TTL,
    address_hint,
    check_address,
    check_type,
    safety_number,
    seal,
)
from twin.peers._inbox import Inbox
from twin.peers._outbox import Outbox
from twin.peers._types import Delivery, Health, Message, MessageType, Peer, State
from twin.settings import Settings
from twin.vault import Vault

log = logging.getLogger("twin.peers")
JANITOR_EVERY = 3600.0
ADDRESS_TYPE = "twin.address"


class Peers:
    """Everything between this twin and others; capabilities reach it through a PeerChannel."""

    def __init__(
        self, db: Database, vault: Vault, settings: Settings, identity: Callable[[], Identity]
    ) -> None:
        self._db = db
        self._vault = vault
        self._settings = settings
        self._identity = identity
        self.directory = Directory(db, vault)
        self.types: dict[str, MessageType] = {
            ADDRESS_TYPE: MessageType(
                ADDRESS_TYPE,
                self._on_address,
                max_body=4096,
                ttl=7 * 86400,
                on_status=self._address_status,
            )
        }
        self.outbox = Outbox(
            db, vault, self.directory, identity, self._status, settings.peer_backoff
        )
        self.inbox = Inbox(
            db, vault, self.directory, identity, self.types, self._arrived, settings.peer_rate
        )
        self._hint: dict[str, Any] | None = None
        self._janitor: asyncio.Task[None] | None = None
        self._running = False

    def register(self, capability: str, types: Iterable[MessageType]) -> None:
        """Take a capability's message types; PluginError if a name is not its own or taken
        (and then none of them)."""
        kinds = list(types)
        for kind in kinds:
            if not isinstance(kind, MessageType):
                raise PluginError(f"messages() returned {kind!r}, not a twin.MessageType")
            try:
                check_type(kind.name)
            except BadInput as exc:
                raise PluginError(exc.message) from None
            if not kind.name.startswith(capability + "."):
                raise PluginError(f"message type {kind.name} must start with '{capability}.'")
            if kind.name in self.types or [k.name for k in kinds].count(kind.name) > 1:
                raise PluginError(f"message type {kind.name} is registered twice")
            if not 0 < kind.ttl <= MAX_TTL:
                raise PluginError(f"{kind.name}: ttl must be 1 s to {MAX_TTL // 86400} days")
        self.types.update((kind.name, kind) for kind in kinds)

    def channel(self, capability: str) -> PeerChannel:
        return PeerChannel(self, capability)

    async def start(self) -> None:
        """Resume delivery and tell peers a new address; a locked twin does this on unlock."""
        if self._vault.locked or self._running:
            return
        self._running = True
        await self.outbox.resume()
        now = time.time()
        await self.outbox.purge(now)
        await self.inbox.purge(now)
        await self.announce()
        self._janitor = asyncio.get_running_loop().create_task(self._sweep())

    async def stop(self) -> None:
        if self._janitor is not None:
            self._janitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._janitor
        await self.outbox.close()

    # Addresses --------------------------------------------------------------------------

    def address(self) -> dict[str, Any]:
        """Our signed address hint, re-signed once half its life has gone."""
        hint = self._hint
        url = self._settings.url
        if hint is None or hint["urls"] != [url] or hint["issued"] + ADDRESS_TTL / 2 < time.time():
            hint = self._hint = address_hint(self._identity(), [url])
        return hint

    async def announce(self) -> int:
        """Send our address to every pinned peer not yet told this one; how many were told."""
        hint = self.address()
        told = self._vault.box("twin", "peers").blind(" ".join(hint["urls"]))
        rows = await self._db.fetchall(
            "SELECT id FROM twin_peers WHERE state = 'pinned' AND (told IS NULL OR told != ?)",
            (told,),
        )
        for row in rows:
            peer = await self.directory.by_id(row["id"])
            if peer is None:
                continue
            await self._send(peer, ADDRESS_TYPE, hint, 7 * 86400)
            await self._db.execute("UPDATE twin_peers SET told = ? WHERE id = ?", (told, peer.id))
        return len(rows)

    async def _address_status(self, envelope_id: str, state: State, error: str | None) -> None:
        if state == "failed":  # never told: tell it again at the next announce
            peer_id = await self.outbox.peer_of(envelope_id)
            if peer_id is not None:
                await self._db.execute("UPDATE twin_peers SET told = NULL WHERE id = ?", (peer_id,))

    async def _on_address(self, message: Message) -> None:
        peer = await self.directory.get(message.sender)
        if peer is not None:
            peer = await self.directory.take_address(peer, check_address(message.body, peer.did))
            self.outbox.wake(peer.id)

    # Peers ------------------------------------------------------------------------------

    async def pin(self, did: str, hint: object = None) -> Peer:
        peer = await self.directory.pin(did, hint)
        await self._db.execute("UPDATE twin_peers SET told = NULL WHERE id = ?", (peer.id,))
        self.outbox.wake(peer.id)
        return peer

    async def _send(self, peer: Peer, type_: str, body: object, ttl: int) -> str:
        envelope = seal(self._identity(), peer.did, type_, body, ttl=ttl)
        await self.outbox.put(peer, envelope)
        return str(envelope["id"])

    def _arrived(self, peer: Peer) -> None:
        self.outbox.wake(peer.id)  # it answers again: what waits for it may go now

    async def _status(self, type_: str, envelope_id: str, state: State, error: str | None) -> None:
        kind = self.types.get(type_)
        if kind is None or kind.on_status is None:
            return
        try:
            await kind.on_status(envelope_id, state, error)
        except Exception:
            log.exception("the %s status handler failed", type_)

    async def _sweep(self) -> None:
        """Every hour: forget settled envelopes and expired ids, and tell contacts our address
        if it changed or an earlier telling failed."""
        while True:
            await asyncio.sleep(JANITOR_EVERY)
            now = time.time()
            try:
                await self.outbox.purge(now)
                await self.inbox.purge(now)
                await self.announce()
            except Exception as exc:
                log.error("the peers' upkeep failed (%s); it runs again in an hour", exc)


class PeerChannel:
    """What one capability may do with peers: send its own message types, read their delivery
    state, and (for the contacts capability) pin, block and forget twins.

        sent = await self.context.peers.send(did, "chat.message", {"text": "hi"})
        state = (await self.context.peers.delivery(sent)).state
    """

    def __init__(self, peers: Peers, capability: str) -> None:
        self._peers = peers
        self._capability = capability

    @property
    def did(self) -> str:
        return self._peers._identity().did

    async def send(self, did: str, type_: str, body: object, *, ttl: int | None = None) -> str:
        """Queue ``body`` for the pinned twin ``did``; the envelope id, once it is stored."""
        if not type_.startswith(self._capability + "."):
            raise PluginError(f"{self._capability} may only send its own message types")
        kind = self._peers.types.get(type_)
        if kind is None:
            raise PluginError(f"{type_} is not a registered message type")
        try:
            size = len(msgspec.json.encode(body))
        except (TypeError, msgspec.EncodeError) as exc:
            raise BadInput(f"a message body is JSON: {exc}") from None
        if size > kind.max_body:
            raise TooLarge(f"a {type_} body is at most {kind.max_body} bytes; this one is {size}")
        peer = await self._peers.directory.get(did)
        if peer is None:
            raise NotFound("that twin is not a contact: pin it before sending to it")
        if peer.state == "blocked":
            raise Conflict("that twin is blocked: unblock it before sending to it")
        return await self._peers._send(peer, type_, body, ttl or kind.ttl)

    async def fetch(
        self, did: str, type_: str, body: object, *, limit: int
    ) -> AsyncIterator[bytes]:
        """Ask the pinned twin ``did`` a request of this capability's (a type with ``answer``)
        and stream the bytes it answers with, at most ``limit``. Unavailable when it cannot
        be reached now; the error it answered with otherwise."""
        import httpx

        kind = self._peers.types.get(type_)
        if not type_.startswith(self._capability + ".") or kind is None or kind.answer is None:
            raise PluginError(f"{type_} is not a request type of {self._capability}")
        peer = await self._peers.directory.get(did)
        if peer is None or peer.state == "blocked":
            raise NotFound("that twin is not a contact (or is blocked): nothing to ask it")
        if not peer.urls:
            raise Unavailable("no address is known for that twin yet")
        envelope = seal(self._peers._identity(), did, type_, body, ttl=600)
        wire = msgspec.json.encode(envelope)
        client = await self._peers.outbox._http()
        for url in peer.urls:
            try:
                async with client.stream(
                    "POST",
                    url.rstrip("/") + "/p2p/v1/fetch",
                    content=wire,
                    headers={"Content-Type": "application/json"},
                    timeout=httpx.Timeout(60.0, connect=5.0),
                ) as response:
                    if response.status_code != 200:
                        raise _refusal(response.status_code, await response.aread())
                    size = 0
                    async for chunk in response.aiter_bytes():
                        size += len(chunk)
                        if size > limit:
                            raise TooLarge(f"the answer is over {limit} bytes")
                        yield chunk
                    return
            except (httpx.ConnectError, httpx.ConnectTimeout):
                continue
            except (httpx.InvalidURL, httpx.UnsupportedProtocol, ValueError):
                continue
            except httpx.HTTPError as exc:
                raise Unavailable(f"that twin stopped answering: {type(exc).__name__}") from None
        raise Unavailable("that twin cannot be reached now")

    async def hint(self, did: str) -> dict[str, Any] | None:
        """The signed address hint held for ``did`` (to pass on to others who need it)."""
        peer = await self._peers.directory.get(did)
        return None if peer is None else self._peers.directory.hint(peer.id)

    async def delivery(self, envelope_id: str) -> Delivery | None:
        delivery = await self._peers.outbox.delivery(envelope_id)
        if delivery is None or not delivery.type.startswith(self._capability + "."):
            return None
        return delivery

    async def peer(self, did: str) -> Peer | None:
        return await self._peers.directory.get(did)

    async def peers(self) -> list[Peer]:
        return await self._peers.directory.all()

    async def health(self, peer: Peer) -> Health:
        return await self._peers.outbox.health(peer)

    async def pin(self, did: str, hint: object = None) -> Peer:
        """Pin ``did``'s key (it may now send to us), keeping its signed address ``hint``."""
        return await self._peers.pin(did, hint)

    async def block(self, did: str) -> Peer:
        """Drop everything ``did`` sends from now on, answering as if it were taken."""
        return await self._peers.directory.pin(did, state="blocked")

    async def forget(self, did: str) -> Peer:
        return await self._peers.directory.forget(did)

    def retry(self, peer: Peer) -> None:
        self._peers.outbox.wake(peer.id)

    def address(self) -> dict[str, Any]:
        """This twin's signed address hint, to put in an invite or a request."""
        return self._peers.address()

    def sign(self, statement: dict[str, Any]) -> dict[str, Any]:
        """``statement`` signed by this twin's root key (a ``sig`` added), for statements of
        this capability's own (``type`` starts with its id and a dot)."""
        kind = statement.get("type")
        if not isinstance(kind, str) or not kind.startswith(self._capability + "."):
            raise PluginError(f"{self._capability} may only sign statements of its own types")
        if "sig" in statement:
            raise BadInput("the statement is signed already")
        return {**statement, "sig": self._peers._identity().sign(statement)}

    def check_address(self, hint: object, did: str) -> dict[str, Any]:
        return check_address(hint, did)

    def safety_number(self, did: str) -> str:
        return safety_number(self.did, did)


def _refusal(status: int, raw: bytes) -> TwinError:
    """The error a peer answered a request with, as this twin's own kind of error."""
    message = ""
    try:
        decoded = msgspec.json.decode(raw[:4096])
        message = str(decoded["error"]["message"])[:300]
    except (msgspec.DecodeError, KeyError, TypeError):
        pass
    said = f"the other twin answered {status}" + (f": {message}" if message else "")
    if status == 404:
        return NotFound(said)
    if status == 413:
        return TooLarge(said)
    if status in (401, 403):
        return Forbidden(said)
    if 400 <= status < 500 and status not in (408, 429):
        return BadInput(said)
    return Unavailable(said)
