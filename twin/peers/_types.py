"""What capabilities see of the peer protocol: message types they register, the messages their
handlers get, the peers they talk to and the delivery state of what they sent."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

DEFAULT_TTL = 14 * 24 * 3600
DEFAULT_MAX_BODY = 64 * 1024
STRANGER_MAX_BODY = 8 * 1024

State = Literal["queued", "sent", "delivered", "failed"]
STATES: tuple[State, ...] = ("queued", "sent", "delivered", "failed")


@dataclass(frozen=True)
class Message:
    """One envelope's content, as a handler gets it: checked, decrypted and seen only once.

    ``known`` is False for a sender who is not a contact (only ``strangers`` types see those).
    """

    id: str
    type: str
    sender: str
    created: int
    expires: int
    body: Any
    known: bool = True


Handler = Callable[[Message], Awaitable[None]]
StatusHandler = Callable[[str, State, str | None], Awaitable[None]]
Answerer = Callable[[Message], Awaitable[AsyncIterator[bytes]]]


@dataclass(frozen=True)
class MessageType:
    """A message type a capability sends and receives, from ``Capability.messages()``.

    ``name`` is ``<capability id>.<name>``. ``handler`` runs once per envelope (a duplicate is
    acknowledged without running it again); raising BadInput refuses the envelope for good, any
    other exception makes the sender retry. ``strangers`` lets twins that are not contacts send
    it (a contact request): such bodies are held to ``STRANGER_MAX_BODY`` and a tight rate.
    ``on_status`` hears each change of a sent envelope's delivery state.

    A type with ``answer`` is a request instead: ``PeerChannel.fetch()`` sends it straight to
    the peer's ``/p2p/v1/fetch`` (never through the outbox), and the peer's ``answer`` gives
    the bytes it answers with (a file, encrypted by the capability to a key both sides hold).
    """

    name: str
    handler: Handler
    max_body: int = DEFAULT_MAX_BODY
    ttl: int = DEFAULT_TTL
    strangers: bool = False
    on_status: StatusHandler | None = None
    answer: Answerer | None = None


@dataclass(frozen=True)
class Peer:
    """A twin we hold a pinned key for (``state`` ``pinned``) or have blocked."""

    id: str
    did: str
    state: Literal["pinned", "blocked"]
    urls: tuple[str, ...]
    address_expires: int | None
    created: float
    last_seen: float | None
    last_delivered: float | None
    last_error: str | None


@dataclass(frozen=True)
class Delivery:
    """Where one sent envelope stands."""

    id: str
    type: str
    state: State
    attempts: int
    created: float
    expires: float
    done: float | None
    error: str | None


@dataclass(frozen=True)
class Health:
    """How delivery to one peer goes: what waits, what failed, when it last worked."""

    queued: int
    sent: int
    failed: int
    last_delivered: float | None
    last_error: str | None
    retry_at: float | None
