"""Tests for twin.identity: did:key, base58, recovery phrase, canonical JSON, signing, key files."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path
from typing import Any

import nacl.pwhash.argon2id as argon2id
import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

import twin.identity
from twin.errors import BadInput, InvalidSignature, WrongPassphrase
from twin.identity import (
    Identity,
    b58decode,
    b58encode,
    canonical_json,
    did_from_public_key,
    key_file_permissions_ok,
    public_key_from_did,
    read_key_file,
    verify,
    write_key_file,
)

# RFC 8032, section 7.1, TEST 1.
RFC8032_SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
RFC8032_PUBLIC = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
RFC8032_EMPTY_SIGNATURE = bytes.fromhex(
    "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555f"
    "b8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
)
# Argon2id at its minimum cost: the file format is the same, the tests stay fast.
FAST = (argon2id.OPSLIMIT_MIN, argon2id.MEMLIMIT_MIN)
B58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
B64URL_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def test_all_is_sorted_and_names_exactly_the_public_members() -> None:
    public = {name for name in vars(twin.identity) if not name.startswith("_")}
    public.discard("annotations")
    assert twin.identity.__all__ == sorted(twin.identity.__all__)
    assert set(twin.identity.__all__) == public


# base58btc


@pytest.mark.parametrize(
    ("data", "text"),
    [
        # Examples from the IETF base58 draft (draft-msporny-base58).
        (b"Hello World!", "2NEpo7TZRRrLZSi2U"),
        (
            b"The quick brown fox jumps over the lazy dog.",
            "USm3fpXnKG5EUBx2ndxBDMPVciP5hGey2Jh4NDv6gmeo1LkMeiKrLJUUBk6Z",
        ),
        (bytes.fromhex("0000287fb4cd"), "11233QC4"),
        (b"", ""),
        (b"\0", "1"),
        (b"\0\0\0", "111"),
    ],
)
def test_base58_known_values(data: bytes, text: str) -> None:
    assert b58encode(data) == text
    assert b58decode(text) == data


@settings(max_examples=200)
@given(st.binary(max_size=80), st.integers(min_value=0, max_value=5))
def test_base58_round_trip_keeps_leading_zero_bytes(data: bytes, zeros: int) -> None:
    data = b"\0" * zeros + data
    text = b58encode(data)
    assert set(text) <= set(B58_ALPHABET)
    assert b58decode(text) == data


@pytest.mark.parametrize("text", ["0", "O", "I", "l", "abc def", "3mJr7AoUXx2Wqd+", "é"])
def test_base58_rejects_characters_outside_the_alphabet(text: str) -> None:
    with pytest.raises(BadInput, match="invalid base58 character"):
        b58decode(text)


# did:key

# w3c-ccg/did-method-key, test-vectors/ed25519-x25519.json: seed -> did, publicKeyBase58.
DID_KEY_VECTORS = [
    (
        0,
        "did:key:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp",
        "4zvwRjXUKGfvwnParsHAS3HuSVzV5cA4McphgmoCtajS",
    ),
    (
        1,
        "did:key:z6MkjchhfUsD6mmvni8mCdXHw216Xrm9bQe2mBH1P5RDjVJG",
        "6ASf5EcmmEHTgDJ4X4ZT5vT6iHVJBXPg5AN5YoTCpGWt",
    ),
    (
        2,
        "did:key:z6MknGc3ocHs3zdPiJbnaaqDi58NGb4pk1Sp9WxWufuXSdxf",
        "8pM1DN3RiT8vbom5u1sNryaNT1nyL8CTTW3b5PwWXRBH",
    ),
    (
        3,
        "did:key:z6MkvqoYXQfDDJRv8L4wKzxYeuKyVZBfi9Qo6Ro8MiLH3kDQ",
        "HPYVwAQmskwT1qEEeRzhoomyfyupJGASQQtCXSNG8XS2",
    ),
    (
        4,
        "did:key:z6MkwW6aqMnjgrhJXFUko3NnZPGzVpkNzhYK7yEhnsibmLwL",
        "J3qYF7YJMKCqQke47UQwiHizgFUXapHxRxKmxbkar89x",
    ),
]


@pytest.mark.parametrize(("last_seed_byte", "did", "public_key_base58"), DID_KEY_VECTORS)
def test_did_key_spec_vectors(last_seed_byte: int, did: str, public_key_base58: str) -> None:
    identity = Identity.from_seed(bytes(31) + bytes([last_seed_byte]))
    assert identity.did == did
    assert b58encode(identity.public_key) == public_key_base58
    assert public_key_from_did(did) == b58decode(public_key_base58)


@pytest.mark.parametrize(
    "did",
    [
        "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK",
        "did:key:z6MknGc3ocHs3zdPiJbnaaqDi58NGb4pk1Sp9WxWufuXSdxf",
    ],
)
def test_did_key_spec_examples_round_trip(did: str) -> None:
    assert b58decode(did[len("did:key:z") :])[:2] == b"\xed\x01"
    public_key = public_key_from_did(did)
    assert len(public_key) == 32
    assert did_from_public_key(public_key) == did


def test_rfc8032_vector_1() -> None:
    identity = Identity.from_seed(RFC8032_SEED)
    assert identity.public_key == RFC8032_PUBLIC
    assert identity.sign_bytes(b"") == RFC8032_EMPTY_SIGNATURE
    assert identity.did == did_from_public_key(RFC8032_PUBLIC)
    assert public_key_from_did(identity.did) == RFC8032_PUBLIC


@settings(max_examples=100)
@given(st.binary(min_size=32, max_size=32))
def test_did_round_trip(public_key: bytes) -> None:
    did = did_from_public_key(public_key)
    assert did.startswith("did:key:z6Mk")
    assert public_key_from_did(did) == public_key


def _multibase(raw: bytes) -> str:
    return "did:key:z" + b58encode(raw)


@pytest.mark.parametrize(
    ("did", "problem"),
    [
        ("did:web:example.com", "must start with 'did:key:'"),
        ("z6MknGc3ocHs3zdPiJbnaaqDi58NGb4pk1Sp9WxWufuXSdxf", "must start with 'did:key:'"),
        ("did:key:", "base58btc"),
        ("did:key:f" + (b"\xed\x01" + bytes(32)).hex(), "base58btc"),
        ("did:key:z6MknGc3ocHs3zdPiJbnaaqDi58NGb4pk1Sp9WxWufuXSdx0", "not valid base58btc"),
        # The X25519 key agreement key from the same spec vectors: multicodec 0xec01.
        ("did:key:z6LShs9GGnqk85isEBzzshkuVWrVKsRp24GnDuHk8QWkARMW", "0xed01"),
        (_multibase(b"\xe7\x01" + bytes([2]) + bytes(32)), "0xed01"),
        (_multibase(b"\xed\x01" + bytes(range(31))), "31 key bytes"),
        (_multibase(b"\xed\x01" + bytes(range(33))), "33 key bytes"),
        ("did:key:z" + "2" * 200, "too long"),
    ],
)
def test_public_key_from_did_names_what_is_wrong(did: str, problem: str) -> None:
    with pytest.raises(BadInput, match=problem.replace("(", r"\(")):
        public_key_from_did(did)


def test_did_from_public_key_rejects_wrong_length() -> None:
    with pytest.raises(BadInput, match="32 bytes"):
        did_from_public_key(bytes(31))


# Recovery phrase (BIP-39, English)


@pytest.mark.parametrize(
    ("entropy", "phrase"),
    [
        (b"\x00" * 32, "abandon " * 23 + "art"),
        (
            b"\x7f" * 32,
            "legal winner thank year wave sausage worth useful legal winner thank year "
            "wave sausage worth useful legal winner thank year wave sausage worth title",
        ),
        (b"\xff" * 32, "zoo " * 23 + "vote"),
    ],
)
def test_bip39_vectors(entropy: bytes, phrase: str) -> None:
    identity = Identity.from_seed(entropy)
    assert identity.phrase() == phrase
    restored = Identity.from_phrase(phrase)
    assert restored.seed == entropy
    assert restored.did == identity.did


@settings(max_examples=50)
@given(st.binary(min_size=32, max_size=32))
def test_phrase_round_trip_restores_the_same_did(seed: bytes) -> None:
    identity = Identity.from_seed(seed)
    words = identity.phrase().split()
    assert len(words) == 24
    assert Identity.from_phrase(identity.phrase()).did == identity.did


def test_phrase_tolerates_case_and_whitespace() -> None:
    identity = Identity.from_seed(RFC8032_SEED)
    messy = "  " + "\n\t ".join(word.upper() for word in identity.phrase().split()) + "\n"
    assert Identity.from_phrase(messy).did == identity.did


def test_phrase_with_23_words_is_rejected() -> None:
    with pytest.raises(BadInput, match="23 words; it must have 24"):
        Identity.from_phrase("abandon " * 22 + "art")


def test_phrase_with_an_unknown_word_names_its_position_not_the_word() -> None:
    words = Identity.from_seed(RFC8032_SEED).phrase().split()
    words[4] = "xyzzyq"
    with pytest.raises(BadInput, match="word 5 is not in the BIP-39 English list") as caught:
        Identity.from_phrase(" ".join(words))
    assert "xyzzyq" not in str(caught.value)


def test_phrase_with_a_bad_checksum_is_rejected() -> None:
    with pytest.raises(BadInput, match="checksum"):
        Identity.from_phrase("abandon " * 24)


def test_from_seed_rejects_wrong_length() -> None:
    with pytest.raises(BadInput, match="32 bytes"):
        Identity.from_seed(bytes(31))


def test_generate_makes_distinct_identities() -> None:
    first, second = Identity.generate(), Identity.generate()
    assert first.did != second.did
    assert Identity.from_seed(first.seed).did == first.did


def test_repr_never_shows_the_seed() -> None:
    identity = Identity.from_seed(RFC8032_SEED)
    text = repr(identity)
    assert identity.did in text
    for spelling in _spellings(RFC8032_SEED):
        assert spelling not in text


# Canonical JSON (RFC 8785)


def test_canonical_json_orders_keys_without_whitespace_or_escaping() -> None:
    encoded = canonical_json({"b": 1, "a": [True, None, "é"]})
    assert encoded == b'{"a":[true,null,"\xc3\xa9"],"b":1}'


@pytest.mark.parametrize(
    ("number", "text"),
    [
        (1.0, b"1"),
        (-0.0, b"0"),
        (4.50, b"4.5"),
        (2e-3, b"0.002"),
        (0.000001, b"0.000001"),
        (1e-7, b"1e-7"),
        (1e20, b"100000000000000000000"),
        (1e21, b"1e+21"),
        (333333333.33333329, b"333333333.3333333"),
        (2**53 - 1, b"9007199254740991"),
    ],
)
def test_canonical_json_numbers(number: float, text: bytes) -> None:
    assert canonical_json(number) == text


def test_canonical_json_sorts_keys_by_utf16_code_units() -> None:
    # RFC 8785, section 3.2.3: the emoji (a surrogate pair) sorts before U+FB33.
    value = {
        "\u20ac": "Euro Sign",
        "\r": "Carriage Return",
        "\ufb33": "Hebrew Letter Dalet With Dagesh",
        "1": "One",
        "\U0001f600": "Emoji: Grinning Face",
        "\u0080": "Control",
        "\u00f6": "Latin Small Letter O With Diaeresis",
    }
    pairs = json.loads(canonical_json(value), object_pairs_hook=list)
    expected = ["\r", "1", "\u0080", "\u00f6", "\u20ac", "\U0001f600", "\ufb33"]
    assert [key for key, _ in pairs] == expected


@pytest.mark.parametrize(
    "value",
    [{1: "int key"}, b"bytes", float("nan"), float("inf"), 2**60, object(), "\ud800"],
    ids=["int-key", "bytes", "nan", "inf", "big-int", "object", "lone-surrogate"],
)
def test_canonical_json_rejects_what_it_cannot_encode(value: object) -> None:
    with pytest.raises(BadInput, match="canonical JSON"):
        canonical_json(value)


PLAIN_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)
    | st.text(max_size=20)  # controls, emoji, right-to-left, U+2028: all of Unicode
)


def json_values(scalars: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.recursive(
        scalars,
        lambda children: (
            st.lists(children, max_size=5)
            | st.dictionaries(st.text(max_size=10), children, max_size=5)
        ),
        max_leaves=20,
    )


JSON_VALUES = json_values(PLAIN_SCALARS | st.floats(allow_nan=False, allow_infinity=False))
PLAIN_VALUES = json_values(PLAIN_SCALARS)  # what canonical_json writes the faster way


@settings(max_examples=200)
@given(st.dictionaries(st.text(max_size=10), JSON_VALUES, min_size=1, max_size=8), st.data())
def test_canonical_json_ignores_key_order(value: dict[str, Any], data: st.DataObject) -> None:
    shuffled = {key: value[key] for key in data.draw(st.permutations(list(value)))}
    encoded = canonical_json(value)
    assert canonical_json(shuffled) == encoded
    # JCS numbers are doubles: 3.797371326644995e16 is written as the digits 37973713266449950.
    assert json.loads(encoded, parse_int=float) == value


@settings(max_examples=500)
@given(PLAIN_VALUES)
def test_canonical_json_is_the_reference_encoders_on_every_value(value: object) -> None:
    # canonical_json takes a faster way for values without floats and with ASCII keys (every
    # envelope header): its bytes must be the reference implementation's, whatever the text.
    try:
        expected = rfc8785.dumps(value)
    except rfc8785.CanonicalizationError:  # a lone surrogate
        with pytest.raises(BadInput):
            canonical_json(value)
    else:
        assert canonical_json(value) == expected


@pytest.mark.parametrize(
    "text",
    ["\x00\x01\x08\t\n\x0b\x0c\r\x1f", '"\\/', "\x7f\x80\x9f", "\u2028\u2029", "é😀\u202e"],
    ids=["c0", "quote-backslash-slash", "del-c1", "line-separators", "non-ascii"],
)
def test_canonical_json_escapes_text_as_rfc8785_does(text: str) -> None:
    value = {"text": text, "list": [text, 2**53 - 1, -(2**53) + 1, True, None]}
    assert canonical_json(value) == rfc8785.dumps(value)


# Signatures

PINNED_PAYLOAD = {"type": "hello", "n": 1, "text": "héllo", "list": [1, 2.5, None]}


def test_signature_is_pinned_for_a_fixed_payload() -> None:
    identity = Identity.from_seed(RFC8032_SEED)
    signature = identity.sign(PINNED_PAYLOAD)
    assert signature == (
        "TlmpDhpl_ScRDdUmK33eLavsj65LFxUmFMrQn0PMQd1jY4nchcr74k5CG6ubidFfOLGmlQdZeu1tFgQLoZEcBA"
    )
    raw = identity.sign_bytes(canonical_json(PINNED_PAYLOAD))
    assert base64.urlsafe_b64decode(signature + "==") == raw
    verify(identity.did, PINNED_PAYLOAD, signature)
    verify(identity.did, dict(reversed(list(PINNED_PAYLOAD.items()))), signature)
    verify(identity.did, PINNED_PAYLOAD, signature + "==")


def test_tampered_payload_is_an_invalid_signature() -> None:
    identity = Identity.from_seed(RFC8032_SEED)
    signature = identity.sign(PINNED_PAYLOAD)
    with pytest.raises(InvalidSignature):
        verify(identity.did, {**PINNED_PAYLOAD, "n": 2}, signature)


def test_signature_under_another_did_is_invalid() -> None:
    signature = Identity.from_seed(RFC8032_SEED).sign(PINNED_PAYLOAD)
    with pytest.raises(InvalidSignature):
        verify(Identity.generate().did, PINNED_PAYLOAD, signature)


def _non_canonical(signature: str) -> str:
    # 64 bytes leave 4 unused low bits in the last character; setting one keeps the same bytes.
    last = B64URL_ALPHABET.index(signature[-1])
    return signature[:-1] + B64URL_ALPHABET[last | 1]


@pytest.mark.parametrize(
    ("mangle", "problem"),
    [
        (lambda s: "not base64 at all!", "not base64url text"),
        (lambda s: s[:40], "an Ed25519 signature is 64"),
        (lambda s: s + "AAAA", "an Ed25519 signature is 64"),
        (lambda s: s.replace("-", "+").replace("_", "/") + "+/", "not base64url text"),
        (lambda s: s + "===", "not base64url text"),
        (lambda s: s[:-1], "not valid base64url"),
        (_non_canonical, "not canonical"),
        (lambda s: "", "an Ed25519 signature is 64"),
    ],
)
def test_malformed_signature_is_bad_input(mangle: Any, problem: str) -> None:
    identity = Identity.from_seed(RFC8032_SEED)
    with pytest.raises(BadInput, match=problem):
        verify(identity.did, PINNED_PAYLOAD, mangle(identity.sign(PINNED_PAYLOAD)))


def test_verify_with_malformed_did_is_bad_input() -> None:
    signature = Identity.from_seed(RFC8032_SEED).sign(PINNED_PAYLOAD)
    with pytest.raises(BadInput):
        verify("did:web:example.com", PINNED_PAYLOAD, signature)


def test_signing_an_unencodable_payload_is_bad_input() -> None:
    with pytest.raises(BadInput):
        Identity.generate().sign({"raw": b"bytes"})


@settings(max_examples=50)
@given(JSON_VALUES)
def test_any_json_value_signs_and_verifies(payload: object) -> None:
    identity = Identity.from_seed(RFC8032_SEED)
    signature = identity.sign(payload)
    assert len(signature) == 86 and set(signature) <= set(B64URL_ALPHABET)
    verify(identity.did, payload, signature)


# Key files


def _spellings(seed: bytes) -> list[str]:
    return [
        seed.hex(),
        seed.hex().upper(),
        base64.b64encode(seed).decode(),
        base64.urlsafe_b64encode(seed).decode().rstrip("="),
        b58encode(seed),
    ]


def test_unsealed_key_file_is_0600_and_round_trips(tmp_path: Path) -> None:
    identity = Identity.generate()
    path = tmp_path / "root.key"
    write_key_file(path, identity, None)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert key_file_permissions_ok(path)
    assert os.listdir(tmp_path) == ["root.key"]
    document = json.loads(path.read_text())
    assert document["format"] == "twin-key/1"
    assert document["sealed"] is False
    key_file = read_key_file(path)
    assert (key_file.did, key_file.sealed) == (identity.did, False)
    assert key_file.unlock(None).seed == identity.seed
    assert key_file.unlock("ignored for an unsealed file").did == identity.did
    for spelling in _spellings(identity.seed):
        assert spelling not in repr(key_file)


def test_key_file_is_created_0600_from_the_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    created: list[tuple[int, int]] = []
    real_open = os.open

    def recording_open(path: Any, flags: int, mode: int = 0o777, **kwargs: Any) -> int:
        if flags & os.O_CREAT:
            created.append((flags, mode))
        return real_open(path, flags, mode, **kwargs)

    monkeypatch.setattr(os, "open", recording_open)
    write_key_file(tmp_path / "root.key", Identity.generate(), None)
    assert created and all(mode == 0o600 and flags & os.O_EXCL for flags, mode in created)


def test_failed_write_leaves_the_old_key_file_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "root.key"
    old = Identity.generate()
    write_key_file(path, old, None)

    def failing_replace(source: Any, target: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        write_key_file(path, Identity.generate(), None)
    assert os.listdir(tmp_path) == ["root.key"]
    assert read_key_file(path).did == old.did


def test_overwriting_a_key_file_replaces_it(tmp_path: Path) -> None:
    path = tmp_path / "root.key"
    write_key_file(path, Identity.generate(), None)
    new = Identity.generate()
    write_key_file(path, new, "passphrase", _cost=FAST)
    assert read_key_file(path).did == new.did
    assert os.listdir(tmp_path) == ["root.key"]


def test_loose_permissions_are_reported(tmp_path: Path) -> None:
    path = tmp_path / "root.key"
    write_key_file(path, Identity.generate(), None)
    path.chmod(0o640)
    assert not key_file_permissions_ok(path)
    path.chmod(0o604)
    assert not key_file_permissions_ok(path)
    path.chmod(0o400)
    assert key_file_permissions_ok(path)


def test_sealed_key_file_round_trips(tmp_path: Path) -> None:
    identity = Identity.generate()
    path = tmp_path / "root.key"
    write_key_file(path, identity, "correct horse battery staple", _cost=FAST)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    document = json.loads(path.read_text())
    assert document["sealed"] is True
    assert document["kdf"]["alg"] == "argon2id"
    assert (document["kdf"]["opslimit"], document["kdf"]["memlimit"]) == FAST
    key_file = read_key_file(path)
    assert (key_file.did, key_file.sealed) == (identity.did, True)
    assert key_file.unlock("correct horse battery staple").seed == identity.seed


def test_sealed_key_file_never_holds_the_seed_in_clear(tmp_path: Path) -> None:
    identity = Identity.generate()
    path = tmp_path / "root.key"
    write_key_file(path, identity, "passphrase", _cost=FAST)
    content = path.read_bytes()
    assert identity.seed not in content
    for spelling in _spellings(identity.seed):
        assert spelling.encode() not in content
    assert "seed" not in json.loads(content)


def test_passphrase_unicode_forms_unlock_alike(tmp_path: Path) -> None:
    path = tmp_path / "root.key"
    identity = Identity.generate()
    write_key_file(path, identity, "caf\u00e9", _cost=FAST)
    assert read_key_file(path).unlock("cafe\u0301").did == identity.did


@pytest.mark.parametrize("passphrase", ["wrong passphrase", None, ""])
def test_wrong_or_missing_passphrase(tmp_path: Path, passphrase: str | None) -> None:
    path = tmp_path / "root.key"
    write_key_file(path, Identity.generate(), "right passphrase", _cost=FAST)
    with pytest.raises(WrongPassphrase):
        read_key_file(path).unlock(passphrase)


def test_empty_passphrase_cannot_seal(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="empty"):
        write_key_file(tmp_path / "root.key", Identity.generate(), "", _cost=FAST)


def test_missing_key_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.key"
    with pytest.raises(BadInput, match="does not exist") as caught:
        read_key_file(path)
    assert str(path) in str(caught.value)
    with pytest.raises(BadInput, match="does not exist"):
        key_file_permissions_ok(path)


@pytest.mark.parametrize("sealed", [False, True])
def test_truncated_key_file(tmp_path: Path, sealed: bool) -> None:
    path = tmp_path / "root.key"
    write_key_file(path, Identity.generate(), "pass" if sealed else None, _cost=FAST)
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(BadInput, match="not valid JSON") as caught:
        read_key_file(path)
    assert str(path) in str(caught.value)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (os.urandom(200) + b"\xff", "not valid JSON"),
        (b"", "not valid JSON"),
        (b"[" * 100_000, "larger than"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"format": "twin-key/2"}', "unknown format"),
        (b'{"did": "did:key:z6Mk"}', "unknown format"),
    ],
)
def test_garbage_key_file(tmp_path: Path, content: bytes, problem: str) -> None:
    path = tmp_path / "root.key"
    path.write_bytes(content)
    with pytest.raises(BadInput, match=problem) as caught:
        read_key_file(path)
    assert str(path) in str(caught.value)


def _sealed_document(tmp_path: Path) -> dict[str, Any]:
    path = tmp_path / "source.key"
    write_key_file(path, Identity.generate(), "pass", _cost=FAST)
    document: dict[str, Any] = json.loads(path.read_text())
    return document


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda d: d.pop("did"), "'did' is missing"),
        (lambda d: d.update(did="did:web:example.com"), "did:key"),
        (lambda d: d.update(sealed="yes"), "'sealed' is missing or not a boolean"),
        (lambda d: d.update(box="%%%"), "'box' is not valid base64"),
        (lambda d: d.update(box=base64.b64encode(bytes(10)).decode()), "'box' is 10 bytes"),
        (lambda d: d.pop("kdf"), "'kdf' is missing"),
        (lambda d: d["kdf"].update(alg="scrypt"), "argon2id"),
        (lambda d: d["kdf"].update(opslimit=True), "'kdf.opslimit' is missing or not an integer"),
        (lambda d: d["kdf"].update(memlimit=2**40), "'kdf.memlimit' is out of range"),
        (
            lambda d: d["kdf"].update(salt=base64.b64encode(bytes(8)).decode()),
            "'kdf.salt' is 8 bytes",
        ),
        (lambda d: d.update(sealed=False), "'seed' is missing"),
    ],
)
def test_corrupt_key_file_fields(tmp_path: Path, change: Any, problem: str) -> None:
    document = _sealed_document(tmp_path)
    change(document)
    path = tmp_path / "root.key"
    path.write_text(json.dumps(document))
    with pytest.raises(BadInput, match=problem) as caught:
        read_key_file(path)
    assert str(path) in str(caught.value)


def test_unsealed_seed_of_wrong_length(tmp_path: Path) -> None:
    path = tmp_path / "root.key"
    write_key_file(path, Identity.generate(), None)
    document = json.loads(path.read_text())
    document["seed"] = base64.b64encode(bytes(31)).decode()
    path.write_text(json.dumps(document))
    with pytest.raises(BadInput, match="'seed' is 31 bytes"):
        read_key_file(path)


@pytest.mark.parametrize("passphrase", [None, "pass"])
def test_seed_that_does_not_match_the_did_is_bad_input(
    tmp_path: Path, passphrase: str | None
) -> None:
    path = tmp_path / "root.key"
    write_key_file(path, Identity.generate(), passphrase, _cost=FAST)
    document = json.loads(path.read_text())
    document["did"] = Identity.generate().did
    path.write_text(json.dumps(document))
    with pytest.raises(BadInput, match="does not belong to"):
        read_key_file(path).unlock(passphrase)
