"""Conversion between Ed25519 public keys and their ``did:key`` identifiers."""

from __future__ import annotations

import functools

from twin.errors import BadInput
from twin.identity._base58 import b58decode, b58encode

_PREFIX = "did:key:"
_BASE58BTC = "z"
_ED25519_PUB = b"\xed\x01"
_KEY_SIZE = 32
# An Ed25519 did:key is 56 characters; the bound keeps base58 decoding of hostile input cheap.
_MAX_LENGTH = 128


def did_from_public_key(public_key: bytes) -> str:
    """The ``did:key`` of a 32-byte Ed25519 public key."""
    if len(public_key) != _KEY_SIZE:
        raise BadInput(f"an Ed25519 public key is {_KEY_SIZE} bytes, not {len(public_key)}")
    return _PREFIX + _BASE58BTC + b58encode(_ED25519_PUB + public_key)


def public_key_from_did(did: str) -> bytes:
    """The 32-byte Ed25519 public key named by a ``did:key``; BadInput for anything else."""
    if not isinstance(did, str):
        raise BadInput("a did must be a string")
    return _decoded(did)


@functools.lru_cache(maxsize=1024)  # the few dids a twin talks to, each read several times
def _decoded(did: str) -> bytes:
    if len(did) > _MAX_LENGTH:
        raise BadInput(f"did is too long ({len(did)} characters) for an Ed25519 did:key")
    if not did.startswith(_PREFIX):
        raise BadInput("not a did:key: it must start with 'did:key:'")
    multibase = did[len(_PREFIX) :]
    if not multibase.startswith(_BASE58BTC):
        raise BadInput("did:key must use base58btc multibase (a 'z' after 'did:key:')")
    try:
        decoded = b58decode(multibase[1:])
    except BadInput as error:
        raise BadInput(f"did:key is not valid base58btc: {error.message}") from None
    if not decoded.startswith(_ED25519_PUB):
        raise BadInput("did:key is not an Ed25519 key (multicodec 0xed01 expected)")
    public_key = decoded[len(_ED25519_PUB) :]
    if len(public_key) != _KEY_SIZE:
        raise BadInput(f"did:key holds {len(public_key)} key bytes; an Ed25519 key is {_KEY_SIZE}")
    return public_key
