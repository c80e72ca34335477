"""The inbox: checks each envelope that arrives (recipient, dates, sender, signature, replay)
before anything else, hands it to its type's handler once, and answers with a signed receipt."""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import msgspec

from twin.db import Database
from twin.errors import (
    BadInput,
    Forbidden,
    Misdirected,
    NotFound,
    RateLimited,
    TooLarge,
    TwinError,
    Unavailable,
    VaultLocked,
)
from twin.guards import RateLimiter
from twin.identity import Identity, public_key_from_did
from twin.peers._directory import Directory
from twin.peers._envelope import (
    MAX_ENVELOPE,
    check_header,
    check_signature,
    open_body,
    receipt,
)
from twin.peers._types import STRANGER_MAX_BODY, MessageType, Peer
from twin.vault import Vault

log = logging.getLogger("twin.peers")

MAX_BATCH = 64
MAX_ASK_LIFE = 900  # seconds a fetch request may live: it is asked at once, never queued
KNOCKS_PER_MINUTE = 10  # contact requests from one address (and a twin overall: 6 times that)


class UnknownSender(Forbidden):
    code = "unknown_sender"


class UnknownType(BadInput):
    code = "unknown_type"


class _NotTried(Unavailable):
    code = "not_tried"


@dataclass(frozen=True)
class Answer:
    """What the inbox answers: the JSON body, and for a lone envelope that was not taken, why
    (the app gives that error's status; otherwise 200 for a batch, 202 for one envelope)."""

    body: dict[str, Any]
    single: bool
    error: TwinError | None = None


def _retry(exc: TwinError) -> bool:
    """Whether the sender should send this envelope again later."""
    return isinstance(exc, (RateLimited, VaultLocked, UnknownSender, Unavailable, Misdirected))


class Inbox:
    """Receives envelope batches from peers (``POST /p2p/v1/inbox``)."""

    def __init__(
        self,
        db: Database,
        vault: Vault,
        directory: Directory,
        identity: Callable[[], Identity],
        types: Mapping[str, MessageType],
        on_arrival: Callable[[Peer], None],
        rate: float,
    ) -> None:
        self._db = db
        self._vault = vault
        self._seen = vault.box("twin", "seen")
        self._directory = directory
        self._identity = identity
        self._types = types
        self._on_arrival = on_arrival
        self._peer_limit = RateLimiter(rate)
        self._knocks = RateLimiter(KNOCKS_PER_MINUTE / 60, burst=KNOCKS_PER_MINUTE)
        self._all_knocks = RateLimiter(6 * KNOCKS_PER_MINUTE / 60, burst=6 * KNOCKS_PER_MINUTE)
        self._in_flight: set[str] = set()

    async def receive(self, raw: bytes, address: str) -> Answer:
        """Take one request's body: an envelope, or a JSON array of up to 64 from one sender."""
        if self._vault.locked:
            raise VaultLocked("this twin is locked; its owner has to unlock it, try later")
        try:
            decoded = msgspec.json.decode(raw)
        except msgspec.DecodeError as exc:
            raise BadInput(f"the body is not JSON: {exc}") from None
        except RecursionError:
            raise BadInput("the body is nested too deeply") from None
        single = isinstance(decoded, dict)
        items = [decoded] if single else decoded
        if not isinstance(items, list) or not 1 <= len(items) <= MAX_BATCH:
            raise BadInput(f"send one envelope (an object) or an array of 1 to {MAX_BATCH}")
        if not all(isinstance(i, dict) for i in items):
            raise BadInput("every envelope is a JSON object")
        sender = items[0].get("from")
        if not isinstance(sender, str):
            check_header(items[0], self._identity().did, time.time())  # says what is missing
            raise BadInput("an envelope's 'from' is the sender's did")
        public_key_from_did(sender)  # a did, before anything is counted or signed for it
        if any(i.get("from") != sender for i in items):
            raise BadInput("the envelopes of one request come from one sender")
        # Before any signature is checked: a bucket per address and claimed sender, so neither
        # a flood nor someone claiming a contact's did slows the others down.
        cost = min(len(items), self._peer_limit.burst)
        self._peer_limit.check(f"{address} {sender}", cost)
        peer = await self._directory.get(sender)
        results: list[dict[str, Any]] = []
        taken: list[str] = []
        refused: list[str] = []  # refused for good, once their signature held
        verified: set[str] = set()
        held: set[str] = set()  # taken here: in flight until what their handlers wrote is on disk
        stop: TwinError | None = None
        errors: list[TwinError] = []
        keys = [self._seen.blind(f"{sender} {item.get('id')}") for item in items]
        seen = await self._already_seen(keys)
        now = time.time()
        try:
            for item, key in zip(items, keys, strict=True):
                envelope_id = item.get("id") if isinstance(item.get("id"), str) else None
                try:
                    if stop is not None:
                        raise _NotTried("not tried: an earlier envelope has to be taken first")
                    await self._take(item, key, seen, held, verified, peer, address, now)
                except TwinError as exc:
                    retry = _retry(exc)
                    stop = stop or (exc if retry else None)
                    if not retry and envelope_id in verified:
                        refused.append(envelope_id)
                    errors.append(exc)
                    results.append(
                        {
                            "id": envelope_id,
                            "error": {"code": exc.code, "message": exc.message},
                            "retry": retry,
                        }
                    )
                else:
                    taken.append(item["id"])
                    results.append({"id": item["id"], "ok": True})
            if taken:
                await self._db.flush()  # what the handlers wrote, and the taken ids, are on disk
                if peer is not None and peer.state == "pinned":
                    self._directory.seen(peer, now)
                    self._on_arrival(peer)
        finally:
            self._in_flight.difference_update(held)
        signed = receipt(self._identity(), sender, taken, refused)
        body = {"results": results, "receipt": signed}
        if single and errors:  # one envelope, not taken: its error is the answer's
            return Answer({**body, **results[0]}, single, errors[0])
        return Answer(body, single)

    async def ask(self, raw: bytes, address: str) -> AsyncIterator[bytes]:
        """Check a request envelope (``POST /p2p/v1/fetch``) as the inbox checks any, and
        the bytes its type's ``answer`` gives. Only a pinned contact may ask; a blocked one
        is told there is nothing there."""
        if self._vault.locked:
            raise VaultLocked("this twin is locked; its owner has to unlock it, try later")
        if len(raw) > MAX_ENVELOPE:
            raise TooLarge(f"a request envelope is at most {MAX_ENVELOPE} bytes")
        try:
            item = msgspec.json.decode(raw)
        except (msgspec.DecodeError, RecursionError):
            raise BadInput("the body is not one JSON envelope") from None
        if not isinstance(item, dict) or not isinstance(item.get("from"), str):
            raise BadInput("send one envelope, an object with the sender's did in 'from'")
        sender = item["from"]
        public_key_from_did(sender)
        self._peer_limit.check(f"{address} {sender}")
        envelope = check_header(item, self._identity().did, time.time())
        if envelope["expires"] - envelope["created"] > MAX_ASK_LIFE:
            raise BadInput(f"a request lives at most {MAX_ASK_LIFE} seconds")
        peer = await self._directory.get(sender)
        if peer is None:
            raise UnknownSender("this twin does not know yours: only contacts may ask it")
        check_signature(envelope)
        kind = self._types.get(envelope["type"])
        if kind is None or kind.answer is None:
            raise UnknownType(f"this twin answers no {envelope['type']!r} requests")
        if len(envelope["body"]) > _encoded(kind.max_body):
            raise TooLarge(f"a {kind.name} body is at most {kind.max_body} bytes")
        if peer.state == "blocked":
            raise NotFound("there is nothing here for that request")
        self._directory.seen(peer, time.time())
        return await kind.answer(open_body(self._identity(), envelope))

    async def _already_seen(self, keys: list[str]) -> set[str]:
        marks = ",".join("?" * len(keys))
        rows = await self._db.fetchall(f"SELECT key FROM twin_seen WHERE key IN ({marks})", keys)
        return {row["key"] for row in rows}

    async def _take(
        self,
        item: dict[str, Any],
        key: str,
        seen: set[str],
        held: set[str],
        verified: set[str],
        peer: Peer | None,
        address: str,
        now: float,
    ) -> None:
        """Check and hand over one envelope. One taken before (here, or by another request
        whose writes are not on disk yet: that one says to wait), or from a blocked twin, is
        taken without its handler; a blocked twin's envelope goes through every other check
        first, so the answer tells it nothing."""
        body = item.get("body")
        if isinstance(body, str) and len(body) > MAX_ENVELOPE:
            raise TooLarge(f"an envelope's body is at most {MAX_ENVELOPE} characters")
        me = self._identity().did
        envelope = check_header(item, me, now)
        if envelope["from"] == me:
            raise BadInput("this envelope claims to come from this very twin")
        kind = self._types.get(envelope["type"])
        if peer is None:
            if kind is None or not kind.strangers:
                raise UnknownSender("this twin does not know yours: send a contact request first")
            if len(envelope["body"]) > _encoded(STRANGER_MAX_BODY):
                raise TooLarge(f"a stranger's envelope body is at most {STRANGER_MAX_BODY} bytes")
            self._knocks.check(f"knock {_network(address)}")
        check_signature(envelope)
        verified.add(envelope["id"])
        if peer is None:  # counted once signed: forged knocks do not use up everyone's turn
            self._all_knocks.check("knock")
        if kind is None:
            raise UnknownType(f"this twin takes no {envelope['type']!r} messages")
        if kind.answer is not None:
            raise UnknownType(f"{kind.name} is a request: ask it at /p2p/v1/fetch")
        limit = kind.max_body if peer is not None else min(kind.max_body, STRANGER_MAX_BODY)
        if len(envelope["body"]) > _encoded(limit):
            raise TooLarge(f"a {kind.name} body is at most {limit} bytes")
        if peer is not None and peer.state == "blocked":
            return  # taken and dropped: the answer is the same as for any envelope
        if key in seen:
            return
        if key in self._in_flight:
            raise _InProgress("this envelope is being taken right now; try again shortly")
        self._in_flight.add(key)
        try:
            message = replace(open_body(self._identity(), envelope), known=peer is not None)
            try:
                await kind.handler(message)
            except TwinError:
                raise
            except Exception as exc:
                # the traceback may quote what the envelope said: only at debug level
                log.error(
                    "the %s handler failed (%s); the sender will try again",
                    kind.name,
                    type(exc).__name__,
                )
                log.debug("the %s handler's failure", kind.name, exc_info=True)
                raise _HandlerFailed(
                    "this twin could not take it just now; try again later"
                ) from None
        except BaseException:
            self._in_flight.discard(key)
            raise
        self._db.enqueue(
            "INSERT OR IGNORE INTO twin_seen (key, expires) VALUES (?, ?)",
            (key, envelope["expires"]),
        )
        seen.add(key)  # a second copy in this request is a repeat
        held.add(key)  # and in another request, in progress until the writes are on disk

    async def purge(self, now: float) -> int:
        """Forget seen ids whose envelopes have expired (they would be refused anyway)."""
        result = await self._db.execute("DELETE FROM twin_seen WHERE expires < ?", (now,))
        return result.rowcount


def _network(address: str) -> str:
    """The address a knock is counted against: an IPv6 client by its /64 (one host commonly
    holds all of it), anything else as it is."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if ip.version == 6:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return address


def _encoded(size: int) -> int:
    """The length of a body field holding ``size`` bytes of JSON: base64url of the ephemeral
    key, the nonce, the ciphertext and its tag."""
    return -(-(32 + 24 + size + 16) * 4 // 3)


class _InProgress(Unavailable):
    code = "in_progress"


class _HandlerFailed(_NotTried):
    code = "try_later"
