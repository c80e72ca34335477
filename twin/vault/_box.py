"""Authenticated encryption at rest (XChaCha20-Poly1305) with a key the vault derives."""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

import nacl.bindings
import nacl.exceptions

from twin.errors import BadInput
from twin.vault._keys import BLIND_DOMAIN, KEY_DOMAIN, keyed_hash

if TYPE_CHECKING:
    from twin.vault._keys import Vault

VERSION = b"\x01"
NONCE_SIZE = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
TAG_SIZE = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_ABYTES
OVERHEAD = len(VERSION) + NONCE_SIZE + TAG_SIZE
_UNREADABLE = "could not decrypt: wrong key, wrong context or corrupted data"


def _as_bytes(value: bytes | str, what: str) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise BadInput(f"{what} must be bytes or str, not {type(value).__name__}")


class Box:
    """Seals and opens one owner's data for one purpose; keys are derived on each use.

        box = vault.box("notes")
        row_value = box.seal(body, context=note_id)
        body = box.open_text(row_value, context=note_id)

    ``context`` is authenticated but not stored: a value copied to another row (another
    context) fails to open. Sealed values are ``version || nonce || ciphertext+tag``.
    """

    __slots__ = ("_vault", "owner", "purpose")

    def __init__(self, vault: Vault, owner: str, purpose: str = "data") -> None:
        self._vault = vault
        self.owner = owner
        self.purpose = purpose

    def __repr__(self) -> str:
        return f"<Box owner={self.owner!r} purpose={self.purpose!r}>"

    def seal(self, plaintext: bytes | str, *, context: bytes | str = b"") -> bytes:
        """Encrypt and authenticate ``plaintext`` (str as UTF-8), bound to ``context``."""
        message = _as_bytes(plaintext, "plaintext")
        key = self._vault._derive(KEY_DOMAIN, self.owner, self.purpose)
        nonce = os.urandom(NONCE_SIZE)  # the kernel's CSPRNG, as libsodium's randombytes uses
        sealed = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
            message, VERSION + _as_bytes(context, "context"), nonce, key
        )
        return VERSION + nonce + sealed

    def open(self, ciphertext: bytes, *, context: bytes | str = b"") -> bytes:
        """The plaintext of a value sealed by this box with the same ``context``."""
        aad = VERSION + _as_bytes(context, "context")
        key = self._vault._derive(KEY_DOMAIN, self.owner, self.purpose)
        if not isinstance(ciphertext, (bytes, bytearray, memoryview)):
            raise BadInput(_UNREADABLE)
        data = bytes(ciphertext)
        if len(data) < OVERHEAD or data[:1] != VERSION:
            raise BadInput(_UNREADABLE)
        nonce, sealed = data[1 : 1 + NONCE_SIZE], data[1 + NONCE_SIZE :]
        try:
            plaintext: bytes = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
                sealed, aad, nonce, key
            )
        except nacl.exceptions.CryptoError:
            raise BadInput(_UNREADABLE) from None
        return plaintext

    def open_text(self, ciphertext: bytes, *, context: bytes | str = b"") -> str:
        """:meth:`open`, decoded as UTF-8."""
        try:
            return self.open(ciphertext, context=context).decode("utf-8")
        except UnicodeDecodeError:
            raise BadInput("decrypted data is not UTF-8 text") from None

    def seal_json(self, value: object, *, context: bytes | str = b"") -> bytes:
        """:meth:`seal` of ``value`` as compact JSON."""
        try:
            text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise BadInput(f"value cannot be stored as JSON: {exc}") from None
        return self.seal(text, context=context)

    def open_json(self, ciphertext: bytes, *, context: bytes | str = b"") -> Any:
        """:meth:`open` of a value sealed with :meth:`seal_json`."""
        try:
            return json.loads(self.open(ciphertext, context=context))
        except ValueError:
            raise BadInput("decrypted data is not JSON") from None

    def blind(self, value: bytes | str) -> str:
        """A deterministic keyed hash (64 hex digits) of ``value``, to look sealed values up."""
        key = self._vault._derive(BLIND_DOMAIN, self.owner, self.purpose)
        return keyed_hash(_as_bytes(value, "value"), key).hex()
