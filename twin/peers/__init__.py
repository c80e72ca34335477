"""Twin to twin: signed, end-to-end encrypted envelopes, the peers they go to, the outbox that
delivers them and the inbox that takes them (docs/protocol.md is the wire contract)."""

from twin.peers._envelope import address_hint, check_address, safety_number, seal
from twin.peers._service import PeerChannel, Peers
from twin.peers._types import Delivery, Health, Message, MessageType, Peer, State

__all__ = [
    "Delivery",
    "Health",
    "Message",
    "MessageType",
    "Peer",
    "PeerChannel",
    "Peers",
    "State",
    "address_hint",
    "check_address",
    "safety_number",
    "seal",
]
