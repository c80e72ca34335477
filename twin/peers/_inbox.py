"""The inbox: checks each envelope that arrives (recipient, dates, sender, signature, replay)
before anything else, hands it to its type's handler once, and answers with a signed receipt."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from twin.db import Database
from twin.errors import (
    BadInput,
    Forbidden,
    Misdirected,
    RateLimited,
    TooLarge,
    TwinError,
    Unavailable,
    VaultLocked,
)
from twin.guards import RateLimiter
from twin.identity import Identity
from twin.peers._directory import Directory
from twin.peers._envelope import (
    MAX_ENVELOPE,
    check_header,
    check_signature,
    open_body,
    receipt,
)
from twin.peers._types import STRANGER_MAX_BODY, Message, MessageType, Peer
from twin.vault import Vault

log = logging.getLogger("twin.peers")

MAX_BATCH = 64
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
        if any(i.get("from") != sender for i in items):
            raise BadInput("the envelopes of one request come from one sender")
        # Before any signature is checked: a bucket per address and claimed sender, so neither
        # a flood nor someone claiming a contact's did slows the others down.
        cost = min(len(items), self._peer_limit.burst)
        self._peer_limit.check(f"{address} {sender[:80]}", cost)
        peer = await self._directory.get(sender)
        results: list[dict[str, Any]] = []
        taken: list[str] = []
        stop: TwinError | None = None
        errors: list[TwinError] = []
        keys = [self._seen.blind(f"{sender} {item.get('id')}") for item in items]
        seen = await self._already_seen(keys)
        now = time.time()
        for item, key in zip(items, keys, strict=True):
            try:
                if stop is not None:
                    raise _NotTried("not tried: an earlier envelope has to be taken first")
                await self._take(item, key, key in seen, peer, address, now)
            except TwinError as exc:
                stop = stop or (exc if _retry(exc) else None)
                errors.append(exc)
                results.append(
                    {
                        "id": item.get("id") if isinstance(item.get("id"), str) else None,
                        "error": {"code": exc.code, "message": exc.message},
                        "retry": _retry(exc),
                    }
                )
            else:
                taken.append(item["id"])
                results.append({"id": item["id"], "ok": True})
        if taken:
            await self._db.flush()  # what the handlers wrote, and the seen ids, are on disk
            if peer is not None and peer.state == "pinned":
                self._directory.seen(peer, now)
                self._on_arrival(peer)
        body = {"results": results, "receipt": receipt(self._identity(), sender, taken)}
        if single and errors:  # one envelope, not taken: its error is the answer's
            return Answer({**body, **results[0]}, single, errors[0])
        return Answer(body, single)

    async def _already_seen(self, keys: list[str]) -> set[str]:
        marks = ",".join("?" * len(keys))
        rows = await self._db.fetchall(f"SELECT key FROM twin_seen WHERE key IN ({marks})", keys)
        return {row["key"] for row in rows}

    async def _take(
        self,
        item: dict[str, Any],
        key: str,
        seen: bool,
        peer: Peer | None,
        address: str,
        now: float,
    ) -> None:
        """Check and hand over one envelope; one seen before, or from a blocked twin, is taken
        without its handler."""
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
            self._knocks.check(f"knock {address}")
            self._all_knocks.check("knock")
        check_signature(envelope)
        if peer is not None and peer.state == "blocked":
            return  # taken and dropped: the answer is the same as for any envelope
        if seen:
            return
        if key in self._in_flight:
            raise _InProgress("this envelope is being taken right now; try again shortly")
        if kind is None:
            raise UnknownType(f"this twin takes no {envelope['type']!r} messages")
        limit = kind.max_body if peer is not None else min(kind.max_body, STRANGER_MAX_BODY)
        if len(envelope["body"]) > _encoded(limit):
            raise TooLarge(f"a {kind.name} body is at most {limit} bytes")
        self._in_flight.add(key)
        try:
            opened = open_body(self._identity(), envelope)
            message = Message(
                opened.id,
                opened.type,
                opened.sender,
                opened.created,
                opened.expires,
                opened.body,
                known=peer is not None,
            )
            try:
                await kind.handler(message)
            except TwinError:
                raise
            except Exception:
                log.exception("the %s handler failed; the sender will try again", kind.name)
                raise _HandlerFailed(
                    "this twin could not take it just now; try again later"
                ) from None
            self._db.enqueue(
                "INSERT OR IGNORE INTO twin_seen (key, expires) VALUES (?, ?)",
                (key, envelope["expires"]),
            )
        finally:
            self._in_flight.discard(key)

    async def purge(self, now: float) -> int:
        """Forget seen ids whose envelopes have expired (they would be refused anyway)."""
        result = await self._db.execute("DELETE FROM twin_seen WHERE expires < ?", (now,))
        return result.rowcount


def _encoded(size: int) -> int:
    """The length of a body field holding ``size`` bytes of JSON: base64url of the ephemeral
    key, the nonce, the ciphertext and its tag."""
    return -(-(32 + 24 + size + 16) * 4 // 3)


class _InProgress(Unavailable):
    code = "in_progress"


class _HandlerFailed(_NotTried):
    code = "try_later"
