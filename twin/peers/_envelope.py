"""The wire format between twins: envelopes (signed, body encrypted to the recipient), signed
address hints and signed receipts; pure functions, no I/O (docs/protocol.md describes them)."""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import os
import re
import time
import urllib.parse
from typing import Any

import msgspec
import nacl.bindings
import nacl.exceptions

from twin.errors import BadInput, Expired, InvalidSignature, Misdirected
from twin.identity import Identity, b64url, canonical_json, public_key_from_did, verify
from twin.peers._types import Message

VERSION = 1
ID_BYTES = 16
MAX_TTL = 30 * 24 * 3600  # an envelope lives at most 30 days, so seen ids are kept at most that
CLOCK_SKEW = 300  # a sender's clock may run this far ahead of ours
MAX_ENVELOPE = 256 * 1024  # encoded size of one envelope
ADDRESS_TTL = 30 * 24 * 3600
MAX_URLS = 4
MAX_URL = 512
_KDF_LABEL = b"twin envelope/1"
_NONCE = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
_KEY = 32
_TYPE = re.compile(r"[a-z][a-z0-9_]{0,31}\.[a-z][a-z0-9_.]{0,62}")
_ID = re.compile(r"[A-Za-z0-9_-]{22}")
_URL = re.compile(r"https?://[^\s/?#@]+(/[^\s?#]*)?")
HEADER_FIELDS = ("v", "id", "type", "from", "to", "created", "expires")
ENVELOPE_FIELDS = (*HEADER_FIELDS, "body", "sig")


def unb64url(text: str, what: str) -> bytes:
    if not isinstance(text, str) or re.fullmatch(r"[A-Za-z0-9_-]*", text) is None:
        raise BadInput(f"{what} is not base64url text (no padding)")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise BadInput(f"{what} is not valid base64url") from None


def new_id() -> str:
    """A fresh envelope or statement id: 16 random bytes, base64url (22 characters)."""
    return b64url(os.urandom(ID_BYTES))


def check_type(name: object) -> str:
    """A message type name, ``<capability>.<name>`` in lower case."""
    if not isinstance(name, str) or _TYPE.fullmatch(name) is None:
        raise BadInput(
            f"message type {name!r} must look like 'chat.message': a capability id, a dot and "
            "a name, in lower case letters, digits and underscores"
        )
    return name


@functools.lru_cache(maxsize=1024)
@functools.lru_cache(maxsize=1024)  # the X25519 key of each did a twin seals to or opens for
def _exchange_public(did: str) -> bytes:
    try:
        return nacl.bindings.crypto_sign_ed25519_pk_to_curve25519(public_key_from_did(did))
    except nacl.exceptions.RuntimeError:
        raise BadInput(f"{did} is not a usable Ed25519 key") from None


def _body_key(shared: bytes, ephemeral: bytes, recipient: bytes) -> bytes:
    if shared == bytes(32):
        raise BadInput("the envelope's ephemeral key is a low-order point")
    return hashlib.blake2b(
        _KDF_LABEL + ephemeral + recipient, digest_size=_KEY, key=shared
    ).digest()


def seal(
    identity: Identity,
    recipient: str,
    type_: str,
    body: object,
    *,
    ttl: int,
    now: int | None = None,
    envelope_id: str | None = None,
    ephemeral_secret: bytes | None = None,
    nonce: bytes | None = None,
) -> dict[str, Any]:
    """A signed envelope to ``recipient`` carrying ``body`` (any JSON value) encrypted to it.

    ``now``, ``envelope_id``, ``ephemeral_secret`` and ``nonce`` are for test vectors only:
    left out, they are the clock and fresh randomness, as they must be.
    """
    created = int(time.time()) if now is None else now
    if not 0 < ttl <= MAX_TTL:
        raise BadInput(f"an envelope's time to live is 1 second to {MAX_TTL // 86400} days")
    header = {
        "v": VERSION,
        "id": envelope_id or new_id(),
        "type": check_type(type_),
        "from": identity.did,
        "to": recipient,
        "created": created,
        "expires": created + ttl,
    }
    recipient_key = _exchange_public(recipient)
    secret = ephemeral_secret or os.urandom(32)
    ephemeral = nacl.bindings.crypto_scalarmult_base(secret)
    key = _body_key(
        nacl.bindings.crypto_scalarmult(secret, recipient_key), ephemeral, recipient_key
    )
    nonce = nonce or os.urandom(_NONCE)
    plaintext = msgspec.json.encode(body)
    ciphertext = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
        plaintext, canonical_json(header), nonce, key
    )
    envelope = {**header, "body": b64url(ephemeral + nonce + ciphertext)}
    return {**envelope, "sig": identity.sign(envelope)}


def check_header(envelope: object, me: str, now: float) -> dict[str, Any]:
    """The envelope's fields once their shapes, its recipient and its dates are right."""
    if not isinstance(envelope, dict):
        raise BadInput("an envelope is a JSON object")
    missing = [name for name in ENVELOPE_FIELDS if name not in envelope]
    if missing:
        raise BadInput(f"the envelope lacks {', '.join(missing)}")
    extra = sorted(set(envelope) - set(ENVELOPE_FIELDS))
    if extra:
        raise BadInput(f"the envelope has fields this version does not know: {', '.join(extra)}")
    if envelope["v"] != VERSION or type(envelope["v"]) is not int:
        raise BadInput(f"envelope version {envelope['v']!r} is not supported (this twin speaks 1)")
    if not isinstance(envelope["id"], str) or _ID.fullmatch(envelope["id"]) is None:
        raise BadInput("the envelope id must be 22 base64url characters (16 bytes)")
    check_type(envelope["type"])
    for name in ("from", "to"):
        public_key_from_did(envelope[name])
    if envelope["to"] != me:
        raise Misdirected("this envelope is for another twin")
    created, expires = envelope["created"], envelope["expires"]
    if type(created) is not int or type(expires) is not int:
        raise BadInput("created and expires are whole seconds since 1970")
    if created > now + CLOCK_SKEW:
        raise BadInput("the envelope was created in the future: check the sender's clock")
    if expires <= now:
        raise Expired("the envelope has expired")
    if not created < expires <= created + MAX_TTL:
        raise BadInput(f"an envelope expires after it was created, within {MAX_TTL // 86400} days")
    if not isinstance(envelope["body"], str) or not isinstance(envelope["sig"], str):
        raise BadInput("body and sig are base64url text")
    return envelope


def check_signature(envelope: dict[str, Any]) -> None:
    """InvalidSignature unless ``sig`` is the sender's over every other field."""
    unsigned = {name: envelope[name] for name in ENVELOPE_FIELDS if name != "sig"}
    verify(envelope["from"], unsigned, envelope["sig"])


def open_body(identity: Identity, envelope: dict[str, Any]) -> Message:
    """The envelope's body, decrypted with our key (after the header and signature checks)."""
    raw = unb64url(envelope["body"], "body")
    if len(raw) < 32 + _NONCE + 16:
        raise BadInput("the envelope body is too short to hold a key, a nonce and a tag")
    ephemeral, nonce, ciphertext = raw[:32], raw[32 : 32 + _NONCE], raw[32 + _NONCE :]
    secret = identity.exchange_secret()
    public = _exchange_public(identity.did)
    key = _body_key(nacl.bindings.crypto_scalarmult(secret, ephemeral), ephemeral, public)
    header = {name: envelope[name] for name in HEADER_FIELDS}
    try:
        plaintext = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
            ciphertext, canonical_json(header), nonce, key
        )
    except nacl.exceptions.CryptoError:
        raise InvalidSignature("the envelope body does not decrypt: it was altered") from None
    try:
        body = msgspec.json.decode(plaintext)
    except msgspec.DecodeError:
        raise BadInput("the envelope body is not JSON") from None
    return Message(
        envelope["id"],
        envelope["type"],
        envelope["from"],
        header["created"],
        header["expires"],
        body,
    )


def check_urls(urls: object) -> list[str]:
    """1 to 4 http(s) URLs without credentials, query or fragment."""
    if not isinstance(urls, list) or not 1 <= len(urls) <= MAX_URLS:
        raise BadInput(f"an address hint lists 1 to {MAX_URLS} URLs")
    for url in urls:
        if not isinstance(url, str) or len(url) > MAX_URL or _URL.fullmatch(url) is None:
            raise BadInput(
                f"address {str(url)[:80]!r} is not an http(s) URL without user, query or fragment"
            )
        try:
            parts = urllib.parse.urlsplit(url)
            usable = bool(parts.hostname) and (parts.port is None or parts.port > 0)
        except ValueError:
            usable = False
        if not usable:
            raise BadInput(f"address {url[:80]!r} has no usable host and port")
    return [url.rstrip("/") for url in urls]


def address_hint(
    identity: Identity, urls: list[str], *, now: int | None = None, ttl: int = ADDRESS_TTL
) -> dict[str, Any]:
    """Our signed statement of where we are reached, valid ``ttl`` seconds."""
    issued = int(time.time()) if now is None else now
    hint = {
        "v": VERSION,
        "type": "twin.address",
        "did": identity.did,
        "urls": check_urls(urls),
        "issued": issued,
        "expires": issued + ttl,
    }
    return {**hint, "sig": identity.sign(hint)}


def check_address(hint: object, did: str) -> dict[str, Any]:
    """A peer's address hint, once it is well formed and signed by ``did`` itself.

    An expired hint is still returned (the last place known to reach the peer); the caller
    prefers a newer one.
    """
    fields = ("v", "type", "did", "urls", "issued", "expires", "sig")
    if not isinstance(hint, dict) or sorted(hint) != sorted(fields):
        raise BadInput(f"an address hint is an object with exactly {', '.join(fields)}")
    if hint["v"] != VERSION or hint["type"] != "twin.address":
        raise BadInput("not a version 1 twin.address hint")
    if hint["did"] != did:
        raise InvalidSignature("the address hint speaks for another twin")
    check_urls(hint["urls"])
    if type(hint["issued"]) is not int or type(hint["expires"]) is not int:
        raise BadInput("issued and expires are whole seconds since 1970")
    if hint["issued"] > time.time() + CLOCK_SKEW:
        raise BadInput("the address hint was issued in the future: check the sender's clock")
    verify(did, {k: v for k, v in hint.items() if k != "sig"}, hint["sig"])
    return hint


def receipt(
    identity: Identity,
    sender: str,
    ids: list[str],
    refused: list[str] | None = None,
    *,
    now: int | None = None,
) -> dict[str, Any]:
    """Our signed answer to ``sender``: the envelopes ``ids`` were taken, and those in
    ``refused`` (each signed by the sender) never will be."""
    body = {
        "v": VERSION,
        "type": "twin.receipt",
        "by": identity.did,
        "to": sender,
        "ids": ids,
        "refused": refused or [],
        "at": int(time.time()) if now is None else now,
    }
    return {**body, "sig": identity.sign(body)}


def check_receipt(value: object, recipient: str, me: str) -> tuple[set[str], set[str]]:
    """The ids a receipt says were taken, and those refused for good, once it is signed by
    the twin we sent them to and addressed to us."""
    fields = ("v", "type", "by", "to", "ids", "refused", "at", "sig")
    if not isinstance(value, dict) or sorted(value) != sorted(fields):
        raise BadInput("the answer's receipt is not a twin.receipt")
    if value["by"] != recipient or value["to"] != me or value["type"] != "twin.receipt":
        raise InvalidSignature("the receipt is not from the twin the envelopes were sent to")
    for name in ("ids", "refused"):
        if not isinstance(value[name], list) or not all(isinstance(i, str) for i in value[name]):
            raise BadInput(f"a receipt's {name} are a list of envelope ids")
    verify(recipient, {k: v for k, v in value.items() if k != "sig"}, value["sig"])
    return set(value["ids"]), set(value["refused"])


def safety_number(did_a: str, did_b: str) -> str:
    """Twelve groups of five digits derived from both keys, the same on both twins, for
    comparing out of band (read aloud, or side by side)."""
    keys = sorted((public_key_from_did(did_a), public_key_from_did(did_b)))
    digest = hashlib.blake2b(b"twin safety number/1" + keys[0] + keys[1], digest_size=60).digest()
    groups = [int.from_bytes(digest[i : i + 5], "big") % 100000 for i in range(0, 60, 5)]
    return " ".join(f"{g:05d}" for g in groups)
