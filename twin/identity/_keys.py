"""The twin's Ed25519 root key: creating, restoring from a recovery phrase, signing, verifying."""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import re

import nacl.exceptions
import nacl.signing

from twin.errors import BadInput, InvalidSignature
from twin.identity._canonical import canonical_json
from twin.identity._did import did_from_public_key, public_key_from_did

SEED_SIZE = 32
_PHRASE_WORDS = 24
_SIGNATURE_SIZE = 64
_BASE64URL = re.compile(r"[A-Za-z0-9_-]*={0,2}")


@functools.cache
def _wordlist() -> tuple[list[str], dict[str, int]]:
    from mnemonic import Mnemonic  # loaded when a phrase is read or shown, not at start-up

    words: list[str] = Mnemonic("english").wordlist
    return words, {word: index for index, word in enumerate(words)}


def _entropy_from_phrase(phrase: str) -> bytes:
    words = phrase.lower().split()
    if len(words) != _PHRASE_WORDS:
        raise BadInput(f"recovery phrase has {len(words)} words; it must have {_PHRASE_WORDS}")
    _, index = _wordlist()
    bits = 0
    for position, word in enumerate(words, start=1):
        # The word itself stays out of the message: a typo of a secret word is nearly the word.
        if word not in index:
            raise BadInput(f"recovery phrase word {position} is not in the BIP-39 English list")
        bits = bits << 11 | index[word]
    # 24 words carry 264 bits: 256 bits of seed and an 8-bit checksum (BIP-39).
    entropy = (bits >> 8).to_bytes(SEED_SIZE, "big")
    if hashlib.sha256(entropy).digest()[0] != bits & 0xFF:
        raise BadInput("recovery phrase checksum does not match: a word is wrong or misplaced")
    return entropy


def b64url(data: bytes) -> str:
    """``data`` as base64url without padding, as signatures and envelopes write bytes."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode_signature(signature: str) -> bytes:
    if not isinstance(signature, str) or _BASE64URL.fullmatch(signature) is None:
        raise BadInput("signature is not base64url text")
    unpadded = signature.rstrip("=")
    try:
        raw = base64.urlsafe_b64decode(unpadded + "=" * (-len(unpadded) % 4))
    except (binascii.Error, ValueError):
        raise BadInput("signature is not valid base64url") from None
    if len(raw) != _SIGNATURE_SIZE:
        raise BadInput(f"signature is {len(raw)} bytes; an Ed25519 signature is {_SIGNATURE_SIZE}")
    # One signature, one spelling: stray low bits would let a replayed envelope look new.
    if b64url(raw) != unpadded:
        raise BadInput("signature is not canonical base64url")
    return raw


class Identity:
    """An Ed25519 signing key and the ``did:key`` it answers to."""

    __slots__ = ("_signing_key", "_did", "_exchange")

    def __init__(self, signing_key: nacl.signing.SigningKey) -> None:
        self._signing_key = signing_key
        self._did = did_from_public_key(bytes(signing_key.verify_key))
        self._exchange = bytes(signing_key.to_curve25519_private_key())

    @classmethod
    def generate(cls) -> Identity:
        """A new identity from a fresh random seed."""
        return cls(nacl.signing.SigningKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> Identity:
        """The identity of a 32-byte Ed25519 seed."""
        if not isinstance(seed, bytes) or len(seed) != SEED_SIZE:
            raise BadInput(f"an identity seed must be {SEED_SIZE} bytes")
        return cls(nacl.signing.SigningKey(seed))

    @classmethod
    def from_phrase(cls, phrase: str) -> Identity:
        """The identity restored from its 24-word BIP-39 English recovery phrase."""
        if not isinstance(phrase, str):
            raise BadInput("a recovery phrase must be a string")
        return cls.from_seed(_entropy_from_phrase(phrase))

    @property
    def seed(self) -> bytes:
        return bytes(self._signing_key)

    @property
    def public_key(self) -> bytes:
        return bytes(self._signing_key.verify_key)

    @property
    def did(self) -> str:
        return self._did

    def exchange_secret(self) -> bytes:
        """The X25519 secret key derived from the Ed25519 one (what envelopes are opened with)."""
        return self._exchange

    def phrase(self) -> str:
        """The 24-word BIP-39 English recovery phrase that encodes the seed."""
        from mnemonic import Mnemonic

        return str(Mnemonic("english").to_mnemonic(self.seed))

    def sign(self, payload: object) -> str:
        """The Ed25519 signature over the payload's canonical JSON, base64url without padding."""
        return b64url(self.sign_bytes(canonical_json(payload)))

    def sign_bytes(self, data: bytes) -> bytes:
        """The raw 64-byte Ed25519 signature over ``data``."""
        return self._signing_key.sign(data).signature

    def __repr__(self) -> str:
        return f"Identity(did={self._did!r})"


def verify(did: str, payload: object, signature: str) -> None:
    """Check a ``sign()`` signature of ``payload`` by ``did``; raises InvalidSignature if wrong."""
    verify_key = nacl.signing.VerifyKey(public_key_from_did(did))
    raw = _b64url_decode_signature(signature)
    try:
        verify_key.verify(canonical_json(payload), raw)
    except nacl.exceptions.BadSignatureError:
        raise InvalidSignature(f"signature does not verify for {did}") from None
