"""The twin's identity: its Ed25519 root key, did:key, recovery phrase, signatures and key file."""

from __future__ import annotations

from twin.identity._base58 import b58decode, b58encode
from twin.identity._canonical import canonical_json
from twin.identity._did import did_from_public_key, public_key_from_did
from twin.identity._keyfile import KeyFile, key_file_permissions_ok, read_key_file, write_key_file
from twin.identity._keys import Identity, b64url, verify

__all__ = [
    "Identity",
    "KeyFile",
    "b58decode",
    "b58encode",
    "b64url",
    "canonical_json",
    "did_from_public_key",
    "key_file_permissions_ok",
    "public_key_from_did",
    "read_key_file",
    "verify",
    "write_key_file",
]
