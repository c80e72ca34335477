"""The vault: derived keys per owner and purpose, and the boxes that seal data at rest."""

from __future__ import annotations

import json
from collections.abc import Callable

import nacl.hash
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import twin.vault
from twin.errors import BadInput, Conflict, VaultLocked
from twin.vault import Box, Vault

pytestmark = pytest.mark.anyio

SEED = bytes(range(32))
OTHER_SEED = bytes(range(1, 33))
names = st.text(max_size=20)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def vault() -> Vault:
    return Vault(SEED)


def test_public_surface() -> None:
    assert twin.vault.__all__ == sorted(twin.vault.__all__)
    assert all(hasattr(twin.vault, name) for name in twin.vault.__all__)


def test_keys_are_32_bytes_and_depend_on_the_seed(vault: Vault) -> None:
    key = vault.key("notes", "data")
    assert len(key) == 32
    assert key == Vault(SEED).key("notes", "data")
    assert key != Vault(OTHER_SEED).key("notes", "data")
    assert SEED not in key and key != SEED


@settings(max_examples=200)
@given(a=st.tuples(names, names), b=st.tuples(names, names))
def test_keys_are_deterministic_and_independent(a: tuple[str, str], b: tuple[str, str]) -> None:
    vault = Vault(SEED)
    assert vault.key(*a) == vault.key(*a)
    assert (vault.key(*a) == vault.key(*b)) == (a == b)


def test_fields_cannot_slide_into_each_other(vault: Vault) -> None:
    assert vault.key("a", "bc") != vault.key("ab", "c")
    assert vault.key("", "abc") != vault.key("abc", "")
    assert vault.key("a\x00", "b") != vault.key("a", "\x00b")


def test_a_locked_vault_gives_no_keys() -> None:
    vault = Vault(None)
    assert vault.locked
    box = vault.box("notes")  # capabilities may hold a box before the owner unlocks
    with pytest.raises(VaultLocked, match="The twin is locked: unlock it with its passphrase."):
        vault.key("notes", "data")
    for use in (lambda: box.seal(b"x"), lambda: box.open(b"x" * 64), lambda: box.blind("x")):
        with pytest.raises(VaultLocked):
            use()
    vault.unlock(SEED)
    assert not vault.locked
    assert box.open(box.seal(b"now it works")) == b"now it works"
    assert vault.key("notes", "data") == Vault(SEED).key("notes", "data")


def test_unlock_checks_the_seed() -> None:
    vault = Vault(None)
    with pytest.raises(BadInput, match="32 bytes"):
        vault.unlock(b"short")
    vault.unlock(SEED)
    vault.unlock(SEED)  # again with the same seed: nothing changes
    with pytest.raises(Conflict):
        vault.unlock(OTHER_SEED)
    assert vault.key("x", "y") == Vault(SEED).key("x", "y")


def test_repr_shows_no_key_material(vault: Vault) -> None:
    box = vault.box("notes", "bodies")
    shown = repr(vault) + repr(box) + str(vault) + str(box)
    assert "unlocked" in repr(vault) and "locked" in repr(Vault(None))
    assert "notes" in repr(box) and "bodies" in repr(box)
    for secret in (SEED, vault.key("notes", "bodies"), vault._master or b""):
        assert secret.hex() not in shown and repr(secret) not in shown


@settings(max_examples=200)
@given(plaintext=st.binary(max_size=2048), context=st.binary(max_size=64))
def test_seal_open_round_trip(plaintext: bytes, context: bytes) -> None:
    box = Vault(SEED).box("notes")
    sealed = box.seal(plaintext, context=context)
    assert len(sealed) == len(plaintext) + 1 + 24 + 16
    assert box.open(sealed, context=context) == plaintext


def test_sealing_twice_gives_different_ciphertexts(vault: Vault) -> None:
    box = vault.box("notes")
    assert box.seal(b"same") != box.seal(b"same")


def test_plaintext_does_not_appear_in_the_ciphertext(vault: Vault) -> None:
    secret = "meet me at the old mill at midnight " * 4
    sealed = vault.box("chat").seal(secret, context="message-1")
    assert secret.encode() not in sealed
    assert b"meet me" not in sealed and b"message-1" not in sealed


def test_wrong_context_owner_or_purpose_fails(vault: Vault) -> None:
    sealed = vault.box("notes").seal(b"body of note 1", context="note-1")
    attempts: list[Callable[[], bytes]] = [
        lambda: vault.box("notes").open(sealed, context="note-2"),
        lambda: vault.box("notes").open(sealed),
        lambda: vault.box("chat").open(sealed, context="note-1"),
        lambda: vault.box("notes", "titles").open(sealed, context="note-1"),
        lambda: Vault(OTHER_SEED).box("notes").open(sealed, context="note-1"),
    ]
    for attempt in attempts:
        with pytest.raises(BadInput, match="could not decrypt"):
            attempt()
    assert vault.box("notes").open(sealed, context=b"note-1") == b"body of note 1"


@settings(max_examples=100)
@given(data=st.data())
def test_any_flipped_bit_fails(data: st.DataObject) -> None:
    box = Vault(SEED).box("notes")
    sealed = bytearray(box.seal(data.draw(st.binary(max_size=64)), context=b"row"))
    index = data.draw(st.integers(0, len(sealed) - 1))
    sealed[index] ^= 1 << data.draw(st.integers(0, 7))
    with pytest.raises(BadInput, match="could not decrypt: wrong key, wrong context or corrupted"):
        box.open(bytes(sealed), context=b"row")


def test_truncated_or_foreign_input_fails(vault: Vault) -> None:
    box = vault.box("notes")
    sealed = box.seal(b"hello")
    for cut in range(len(sealed)):
        with pytest.raises(BadInput, match="could not decrypt"):
            box.open(sealed[:cut])
    for junk in (b"", b"\x01", b"\x02" + sealed[1:], sealed + b"\x00", "text"):
        with pytest.raises(BadInput, match="could not decrypt"):
            box.open(junk)  # type: ignore[arg-type]


def test_text_and_json(vault: Vault) -> None:
    box = vault.box("profile")
    text = "grüße, 世界"
    assert box.open_text(box.seal(text, context="name"), context="name") == text
    value = {"name": "Zoë", "tags": ["a", "b"], "n": 3, "nested": {"ok": True, "none": None}}
    sealed = box.seal_json(value, context=b"7")
    assert box.open_json(sealed, context=b"7") == value
    assert (
        box.open(sealed, context=b"7")
        == json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
    )
    with pytest.raises(BadInput, match="JSON"):
        box.seal_json({"when": object()})
    with pytest.raises(BadInput, match="not JSON"):
        box.open_json(box.seal(b"{not json"))
    with pytest.raises(BadInput, match="not UTF-8"):
        box.open_text(box.seal(b"\xff\xfe"))


def test_blind_is_deterministic_per_box(vault: Vault) -> None:
    contacts = vault.box("contacts")
    tag = contacts.blind("alice@example.org")
    assert (
        tag
        == contacts.blind(b"alice@example.org")
        == Vault(SEED).box("contacts").blind("alice@example.org")
    )
    assert len(tag) == 64 and int(tag, 16) >= 0
    assert tag != contacts.blind("bob@example.org")
    assert tag != vault.box("chat").blind("alice@example.org")
    assert tag != vault.box("contacts", "emails").blind("alice@example.org")
    assert tag != Vault(OTHER_SEED).box("contacts").blind("alice@example.org")
    # Blinding uses a key of its own, not the sealing key of this or any other purpose.
    for purpose in ("data", "blind", ""):
        key = vault.key("contacts", purpose)
        assert nacl.hash.blake2b(b"alice@example.org", key=key, digest_size=32) != tag.encode()


def test_boxes_are_what_they_say(vault: Vault) -> None:
    box = vault.box("notes")
    assert isinstance(box, Box)
    assert (box.owner, box.purpose) == ("notes", "data")
