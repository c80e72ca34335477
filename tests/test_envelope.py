"""The wire format of docs/protocol.md: its test vectors (rebuilt here step by step from the
document's description, independently of twin.peers), round trips, and every kind of tampering.

Regenerate the vectors after a deliberate change of format: python tests/test_envelope.py
"""

from __future__ import annotations

import base64
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import nacl.bindings
import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from twin.errors import BadInput, Expired, InvalidSignature, Misdirected
from twin.identity import Identity
from twin.peers import address_hint, check_address, safety_number, seal
from twin.peers._envelope import (
    check_header,
    check_receipt,
    check_signature,
    open_body,
    receipt,
)

VECTORS = Path(__file__).parent.parent / "docs" / "protocol-vectors.json"
ALICE = Identity.from_seed(bytes(range(32)))
BOB = Identity.from_seed(bytes(range(32, 64)))


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def ed25519(identity: Identity, message: bytes) -> str:
    """An Ed25519 signature as the document describes it, made with libsodium directly."""
    secret = identity.seed + identity.public_key
    return b64(nacl.bindings.crypto_sign(message, secret)[:64])


def safety(one: bytes, other: bytes) -> str:
    low, high = sorted((one, other))
    digest = hashlib.blake2b(b"twin safety number/1" + low + high, digest_size=60).digest()
    return " ".join(
        f"{int.from_bytes(digest[i : i + 5], 'big') % 100000:05d}" for i in range(0, 60, 5)
    )


def vectors() -> dict[str, Any]:
    """Every value of docs/protocol.md's worked example, computed from the description alone."""
    ephemeral_secret = bytes([7] * 32)
    nonce = bytes([9] * 24)
    header = {
        "v": 1,
        "id": b64(bytes(range(16))),
        "type": "guestbook.note",
        "from": ALICE.did,
        "to": BOB.did,
        "created": 1790000000,
        "expires": 1790000000 + 14 * 86400,
    }
    body = {"author": "Ada", "text": "Hello, Bob ✓ — 你好"}
    bob_x25519 = nacl.bindings.crypto_sign_ed25519_pk_to_curve25519(BOB.public_key)
    ephemeral_public = nacl.bindings.crypto_scalarmult_base(ephemeral_secret)
    shared = nacl.bindings.crypto_scalarmult(ephemeral_secret, bob_x25519)
    key = hashlib.blake2b(
        b"twin envelope/1" + ephemeral_public + bob_x25519, digest_size=32, key=shared
    ).digest()
    aad = rfc8785.dumps(header)
    plaintext = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    ciphertext = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
        plaintext, aad, nonce, key
    )
    unsigned = {**header, "body": b64(ephemeral_public + nonce + ciphertext)}
    signing_input = rfc8785.dumps(unsigned)
    envelope = {
        **unsigned,
        "sig": b64(nacl.bindings.crypto_sign(signing_input, ALICE.seed + ALICE.public_key)[:64]),
    }
    hint_unsigned = {
        "v": 1,
        "type": "twin.address",
        "did": ALICE.did,
        "urls": ["https://alice.example.org"],
        "issued": 1790000000,
        "expires": 1790000000 + 30 * 86400,
    }
    hint = {**hint_unsigned, "sig": ed25519(ALICE, rfc8785.dumps(hint_unsigned))}
    receipt_unsigned = {
        "v": 1,
        "type": "twin.receipt",
        "by": BOB.did,
        "to": ALICE.did,
        "ids": [header["id"]],
        "refused": [],
        "at": 1790000001,
    }
    return {
        "about": "Worked example of docs/protocol.md. Seeds, the ephemeral secret and the nonce "
        "are fixed here only so the output can be checked; real ones are random.",
        "alice": {"seed": ALICE.seed.hex(), "did": ALICE.did},
        "bob": {
            "seed": BOB.seed.hex(),
            "did": BOB.did,
            "x25519_public": bob_x25519.hex(),
            "x25519_secret": nacl.bindings.crypto_sign_ed25519_sk_to_curve25519(
                BOB.seed + BOB.public_key
            ).hex(),
        },
        "envelope": {
            "header": header,
            "body_json": plaintext.decode(),
            "ephemeral_secret": ephemeral_secret.hex(),
            "ephemeral_public": ephemeral_public.hex(),
            "shared_secret": shared.hex(),
            "body_key": key.hex(),
            "nonce": nonce.hex(),
            "aad": aad.decode(),
            "ciphertext": ciphertext.hex(),
            "signing_input": signing_input.decode(),
            "result": envelope,
        },
        "address_hint": {"signing_input": rfc8785.dumps(hint_unsigned).decode(), "result": hint},
        "receipt": {
            "signing_input": rfc8785.dumps(receipt_unsigned).decode(),
            "result": {**receipt_unsigned, "sig": ed25519(BOB, rfc8785.dumps(receipt_unsigned))},
        },
        "safety_number": {
            "input": "BLAKE2b-480 of 'twin safety number/1' || the two Ed25519 public keys in "
            "byte order; twelve 5-byte groups, each as a big-endian number mod 100000",
            "result": safety(ALICE.public_key, BOB.public_key),
        },
    }


def test_the_documented_vectors_are_what_this_twin_computes() -> None:
    assert json.loads(VECTORS.read_text()) == vectors()


def test_the_twin_seals_the_vector_byte_for_byte_and_opens_it() -> None:
    example = vectors()["envelope"]
    header = example["header"]
    made = seal(
        ALICE,
        BOB.did,
        header["type"],
        json.loads(example["body_json"]),
        ttl=header["expires"] - header["created"],
        now=header["created"],
        envelope_id=header["id"],
        ephemeral_secret=bytes.fromhex(example["ephemeral_secret"]),
        nonce=bytes.fromhex(example["nonce"]),
    )
    assert made == example["result"]
    when = header["created"] + 60
    checked = check_header(dict(made), BOB.did, when)
    check_signature(checked)
    opened = open_body(BOB, checked)
    assert opened.body == {"author": "Ada", "text": "Hello, Bob ✓ — 你好"}
    assert (opened.sender, opened.type, opened.id) == (ALICE.did, "guestbook.note", header["id"])
    hint = vectors()["address_hint"]["result"]
    assert address_hint(ALICE, hint["urls"], now=hint["issued"]) == hint
    assert check_address(hint, ALICE.did) == hint
    assert receipt(BOB, ALICE.did, [header["id"]], now=1790000001) == vectors()["receipt"]["result"]
    assert safety_number(ALICE.did, BOB.did) == vectors()["safety_number"]["result"]


def fresh(body: object = None, **changes: Any) -> dict[str, Any]:
    envelope = seal(ALICE, BOB.did, "guestbook.note", body or {"text": "hi"}, ttl=3600)
    return {**envelope, **changes}


def accept(envelope: dict[str, Any], now: float | None = None) -> Any:
    checked = check_header(envelope, BOB.did, time.time() if now is None else now)
    check_signature(checked)
    return open_body(BOB, checked)


@pytest.mark.parametrize("field", ["v", "id", "type", "from", "to", "created", "expires"])
def test_changing_any_signed_field_is_caught(field: str) -> None:
    envelope = fresh()
    other = {
        "v": 2,
        "id": b64(bytes(16)),
        "type": "guestbook.other",
        "from": Identity.generate().did,
        "to": ALICE.did,
        "created": envelope["created"] - 1,
        "expires": envelope["expires"] - 1,
    }
    with pytest.raises((BadInput, InvalidSignature)):
        accept({**envelope, field: other[field]})


def test_a_flipped_bit_in_the_body_or_signature_is_caught() -> None:
    envelope = fresh()
    for name in ("body", "sig"):
        raw = bytearray(unb64(envelope[name]))
        for position in (0, len(raw) // 2, len(raw) - 1):
            flipped = bytearray(raw)
            flipped[position] ^= 1
            with pytest.raises((BadInput, InvalidSignature)):
                accept({**envelope, name: b64(bytes(flipped))})


def test_a_body_re_signed_by_someone_else_is_caught() -> None:
    """Mallory takes Alice's envelope and signs it herself, still claiming to be Alice."""
    mallory = Identity.generate()
    envelope = fresh()
    unsigned = {k: v for k, v in envelope.items() if k != "sig"}
    with pytest.raises(InvalidSignature):
        accept({**unsigned, "sig": mallory.sign(unsigned)})


def test_only_the_recipient_can_read_the_body() -> None:
    carol = Identity.generate()
    envelope = fresh({"secret": "for bob"})
    assert "for bob" not in json.dumps(envelope)
    with pytest.raises(Misdirected):
        check_header(envelope, carol.did, time.time())
    with pytest.raises(InvalidSignature):  # even ignoring the address, Carol's key fails
        open_body(carol, envelope)


def test_dates_are_checked() -> None:
    envelope = fresh()
    with pytest.raises(Expired):
        accept(envelope, now=envelope["expires"] + 1)
    with pytest.raises(BadInput, match="future"):
        accept(envelope, now=envelope["created"] - 3600)
    too_long = seal(ALICE, BOB.did, "guestbook.note", {}, ttl=30 * 86400)
    assert accept(too_long).expires - accept(too_long).created == 30 * 86400
    with pytest.raises(BadInput):
        seal(ALICE, BOB.did, "guestbook.note", {}, ttl=30 * 86400 + 1)


@pytest.mark.parametrize(
    "broken",
    [
        [],
        "envelope",
        {"v": 1},
        {**fresh(), "extra": 1},
        {**fresh(), "id": "short"},
        {**fresh(), "type": "NoDot"},
        {**fresh(), "type": "../etc"},
        {**fresh(), "from": "did:web:example.org"},
        {**fresh(), "created": 1.5},
        {**fresh(), "created": True},
        {**fresh(), "body": 5},
        {**fresh(), "sig": "not base64!"},
    ],
)
def test_malformed_envelopes_say_what_is_wrong(broken: Any) -> None:
    with pytest.raises((BadInput, InvalidSignature)) as caught:
        accept(broken)
    assert caught.value.message


@settings(max_examples=60, deadline=None)
@given(
    body=st.recursive(
        st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=40),
        lambda inner: (
            st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
        ),
        max_leaves=20,
    )
)
def test_any_json_body_round_trips(body: Any) -> None:
    assert accept(seal(ALICE, BOB.did, "guestbook.note", body, ttl=60)).body == body


def test_receipts_bind_the_ids_to_the_recipient() -> None:
    envelope = fresh()
    signed = receipt(BOB, ALICE.did, [envelope["id"]], ["other"])
    assert check_receipt(signed, BOB.did, ALICE.did) == ({envelope["id"]}, {"other"})
    with pytest.raises(InvalidSignature):  # someone else's receipt
        check_receipt(receipt(Identity.generate(), ALICE.did, [envelope["id"]]), BOB.did, ALICE.did)
    with pytest.raises(InvalidSignature):  # ids added after signing
        check_receipt({**signed, "ids": [envelope["id"], "x"]}, BOB.did, ALICE.did)
    with pytest.raises(InvalidSignature):  # a refusal added after signing
        check_receipt({**signed, "refused": ["other", envelope["id"]]}, BOB.did, ALICE.did)


def test_address_hints_speak_only_for_their_signer() -> None:
    hint = address_hint(ALICE, ["https://alice.example.org"])
    with pytest.raises(InvalidSignature):
        check_address(hint, BOB.did)
    with pytest.raises(InvalidSignature):
        check_address({**hint, "urls": ["https://mallory.example.org"]}, ALICE.did)
    for bad in (["ftp://x"], ["https://u:p@x"], ["https://x?q"], [], ["https://x"] * 5):
        with pytest.raises(BadInput):
            address_hint(ALICE, bad)


def test_the_safety_number_is_the_same_on_both_sides_and_differs_per_pair() -> None:
    number = safety_number(ALICE.did, BOB.did)
    assert number == safety_number(BOB.did, ALICE.did)
    assert len(number.split()) == 12 and all(len(g) == 5 and g.isdigit() for g in number.split())
    assert safety_number(ALICE.did, Identity.generate().did) != number


if __name__ == "__main__":
    VECTORS.write_text(json.dumps(vectors(), indent=2, ensure_ascii=False) + "\n")
    sys.stdout.write(f"wrote {VECTORS}\n")
