"""Keys for encryption at rest, derived per owner and purpose from the twin's root seed."""

from __future__ import annotations

import hashlib
import hmac
from typing import TYPE_CHECKING

from twin.errors import BadInput, Conflict, VaultLocked

if TYPE_CHECKING:
    from twin.vault._box import Box

SEED_SIZE = 32
KEY_SIZE = 32
_ROOT_LABEL = b"twin root/1"
KEY_DOMAIN = "twin-vault/1"
BLIND_DOMAIN = "twin-vault/1 blind"


def keyed_hash(data: bytes, key: bytes) -> bytes:
    """32-byte keyed BLAKE2b of ``data`` (libsodium's crypto_generichash; the standard
    library's is the same function without PyNaCl's per-call checks)."""
    return hashlib.blake2b(data, digest_size=KEY_SIZE, key=key).digest()


def _encode(*fields: str) -> bytes:
    # Each field carries its length, so ("a", "bc") and ("ab", "c") never meet;
    # surrogatepass makes the encoding injective over every Python str.
    out = bytearray()
    for value in fields:
        raw = value.encode("utf-8", "surrogatepass")
        out += len(raw).to_bytes(4, "big") + raw
    return bytes(out)


class Vault:
    """Holds the master key while the twin is unlocked and derives every other key from it."""

    __slots__ = ("_derived", "_master")

    def __init__(self, seed: bytes | None) -> None:
        """``None`` leaves the vault locked until :meth:`unlock`."""
        self._master: bytes | None = None
        self._derived: dict[tuple[str, str, str], bytes] = {}
        if seed is not None:
            self.unlock(seed)

    def __repr__(self) -> str:
        return f"<Vault {'locked' if self.locked else 'unlocked'}>"

    @property
    def locked(self) -> bool:
        """True until the root seed has been given."""
        return self._master is None

    def unlock(self, seed: bytes) -> None:
        """Derive the master key from the 32-byte root seed; again with the same seed is a no-op."""
        if not isinstance(seed, bytes) or len(seed) != SEED_SIZE:
            raise BadInput(f"the root seed must be {SEED_SIZE} bytes")
        master = keyed_hash(seed, _ROOT_LABEL)
        if self._master is not None and not hmac.compare_digest(master, self._master):
            # Two masters in one process would seal data no later start could open.
            raise Conflict("the vault is already unlocked with another root seed")
        self._master = master

    def key(self, owner: str, purpose: str) -> bytes:
        """The 32-byte key of ``owner`` (a capability id) for ``purpose``."""
        return self._derive(KEY_DOMAIN, owner, purpose)

    def box(self, owner: str, purpose: str = "data") -> Box:
        """Authenticated encryption with ``owner``'s key for ``purpose``; usable once unlocked."""
        from twin.vault._box import Box  # _box builds on this module

        return Box(self, owner, purpose)

    def _derive(self, domain: str, owner: str, purpose: str) -> bytes:
        if self._master is None:
            raise VaultLocked("The twin is locked: unlock it with its passphrase.")
        name = (domain, owner, purpose)
        key = self._derived.get(name)
        if key is None:
            if not isinstance(owner, str) or not isinstance(purpose, str):
                raise BadInput("a key's owner and purpose must be strings")
            # a handful of keys, as secret as the master beside them: derive each once
            key = self._derived[name] = keyed_hash(_encode(domain, owner, purpose), self._master)
        return key
