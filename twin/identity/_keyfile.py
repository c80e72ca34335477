"""The key file on disk: the root seed, in clear or sealed by a passphrase (argon2id, SecretBox)."""

from __future__ import annotations

import base64
import binascii
import json
import os
import secrets
import stat
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nacl.exceptions
import nacl.pwhash.argon2id as argon2id
import nacl.secret
import nacl.utils

from twin.errors import BadInput, WrongPassphrase
from twin.identity._did import public_key_from_did
from twin.identity._keys import SEED_SIZE, Identity

FORMAT = "twin-key/1"
_KDF_ALG = "argon2id"
_MAX_FILE_SIZE = 64 * 1024
# Nonce, then the seed, then the MAC: what SecretBox.encrypt returns for a 32-byte seed.
_BOX_SIZE = nacl.secret.SecretBox.NONCE_SIZE + SEED_SIZE + nacl.secret.SecretBox.MACBYTES


@dataclass(frozen=True)
class _Kdf:
    opslimit: int
    memlimit: int
    salt: bytes


@dataclass(frozen=True)
class KeyFile:
    """A key file as read from disk; ``unlock()`` turns it into an Identity."""

    did: str
    sealed: bool
    _path: Path = field(repr=False)
    _seed: bytes | None = field(default=None, repr=False)
    _kdf: _Kdf | None = field(default=None, repr=False)
    _box: bytes | None = field(default=None, repr=False)

    def unlock(self, passphrase: str | None) -> Identity:
        """The identity in this file; the passphrase is ignored for an unsealed file."""
        seed = self._open_box(passphrase) if self.sealed else self._seed
        assert seed is not None
        identity = Identity.from_seed(seed)
        if identity.did != self.did:
            raise BadInput(f"key file {self._path}: its seed does not belong to {self.did}")
        return identity

    def _open_box(self, passphrase: str | None) -> bytes:
        assert self._kdf is not None and self._box is not None
        if not passphrase:
            raise WrongPassphrase(f"key file {self._path} is sealed: a passphrase is needed")
        key = _derive_key(passphrase, self._kdf)
        try:
            seed = nacl.secret.SecretBox(key).decrypt(self._box)
        except nacl.exceptions.CryptoError:
            raise WrongPassphrase(f"wrong passphrase for key file {self._path}") from None
        if len(seed) != SEED_SIZE:
            raise BadInput(f"key file {self._path}: the sealed seed is not {SEED_SIZE} bytes")
        return seed


def _derive_key(passphrase: str, kdf: _Kdf) -> bytes:
    # NFC, so the same passphrase typed on two keyboards gives the same bytes.
    secret = unicodedata.normalize("NFC", passphrase).encode("utf-8")
    key: bytes = argon2id.kdf(
        nacl.secret.SecretBox.KEY_SIZE,
        secret,
        kdf.salt,
        opslimit=kdf.opslimit,
        memlimit=kdf.memlimit,
    )
    return key


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def write_key_file(
    path: Path,
    identity: Identity,
    passphrase: str | None,
    *,
    _cost: tuple[int, int] | None = None,
) -> None:
    """Write the identity's key file atomically, mode 0600; sealed when a passphrase is given."""
    document: dict[str, Any] = {"format": FORMAT, "did": identity.did}
    if passphrase is None:
        document |= {"sealed": False, "seed": _b64(identity.seed)}
    else:
        if not passphrase:
            raise BadInput("a passphrase must not be empty; pass None for an unsealed key file")
        opslimit, memlimit = _cost or (argon2id.OPSLIMIT_MODERATE, argon2id.MEMLIMIT_MODERATE)
        kdf = _Kdf(opslimit, memlimit, nacl.utils.random(argon2id.SALTBYTES))
        box = nacl.secret.SecretBox(_derive_key(passphrase, kdf)).encrypt(identity.seed)
        document |= {
            "sealed": True,
            "kdf": {
                "alg": _KDF_ALG,
                "opslimit": kdf.opslimit,
                "memlimit": kdf.memlimit,
                "salt": _b64(kdf.salt),
            },
            "box": _b64(bytes(box)),
        }
    _write_private(path, (json.dumps(document, indent=2) + "\n").encode("utf-8"))


def _write_private(path: Path, content: bytes) -> None:
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    # Created 0600 from the first byte: there is no moment when others could read the seed.
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(content)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def key_file_permissions_ok(path: Path) -> bool:
    """True when neither group nor others have any access to the key file."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise BadInput(f"key file {path} does not exist") from None
    return stat.S_IMODE(mode) & 0o077 == 0


def read_key_file(path: Path) -> KeyFile:
    """Read and check a key file; BadInput says which file and what is wrong with it."""
    problem = f"key file {path}"
    try:
        with open(path, "rb") as file:
            content = file.read(_MAX_FILE_SIZE + 1)
    except FileNotFoundError:
        raise BadInput(f"{problem} does not exist") from None
    except IsADirectoryError:
        raise BadInput(f"{problem} is a directory") from None
    if len(content) > _MAX_FILE_SIZE:
        raise BadInput(f"{problem} is larger than {_MAX_FILE_SIZE} bytes")
    try:
        document = json.loads(content)
    except (ValueError, RecursionError):
        raise BadInput(f"{problem} is not valid JSON (truncated or corrupt?)") from None
    if not isinstance(document, dict):
        raise BadInput(f"{problem} is not a JSON object")
    if document.get("format") != FORMAT:
        raise BadInput(f"{problem} has an unknown format (expected {FORMAT!r})")
    try:
        return _parse(path, document)
    except BadInput as error:
        raise BadInput(f"{problem}: {error.message}") from None


def _parse(path: Path, document: dict[str, Any]) -> KeyFile:
    did = _field(document, "did", str)
    public_key_from_did(did)
    sealed = _field(document, "sealed", bool)
    if not sealed:
        seed = _base64_field(document, "seed")
        if len(seed) != SEED_SIZE:
            raise BadInput(f"'seed' is {len(seed)} bytes; it must be {SEED_SIZE}")
        return KeyFile(did=did, sealed=False, _path=path, _seed=seed)
    box = _base64_field(document, "box")
    if len(box) != _BOX_SIZE:
        raise BadInput(f"'box' is {len(box)} bytes; it must be {_BOX_SIZE}")
    return KeyFile(did=did, sealed=True, _path=path, _kdf=_parse_kdf(document), _box=box)


def _parse_kdf(document: dict[str, Any]) -> _Kdf:
    kdf = _field(document, "kdf", dict)
    if kdf.get("alg") != _KDF_ALG:
        raise BadInput(f"'kdf.alg' must be {_KDF_ALG!r}")
    opslimit = _field(kdf, "opslimit", int, "kdf.")
    memlimit = _field(kdf, "memlimit", int, "kdf.")
    # The upper bounds stop a doctored file from making unlock eat the machine.
    if not argon2id.OPSLIMIT_MIN <= opslimit <= argon2id.OPSLIMIT_SENSITIVE:
        raise BadInput("'kdf.opslimit' is out of range")
    if not argon2id.MEMLIMIT_MIN <= memlimit <= argon2id.MEMLIMIT_SENSITIVE:
        raise BadInput("'kdf.memlimit' is out of range")
    salt = _base64_field(kdf, "salt", "kdf.")
    if len(salt) != argon2id.SALTBYTES:
        raise BadInput(f"'kdf.salt' is {len(salt)} bytes; it must be {argon2id.SALTBYTES}")
    return _Kdf(opslimit, memlimit, salt)


_KIND_NAMES = {str: "a string", bool: "a boolean", int: "an integer", dict: "an object"}


def _field(document: dict[str, Any], name: str, kind: type[Any], prefix: str = "") -> Any:
    value = document.get(name)
    # bool is an int in Python; a count written as true is still a corrupt file.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise BadInput(f"'{prefix}{name}' is missing or not {_KIND_NAMES[kind]}")
    return value


def _base64_field(document: dict[str, Any], name: str, prefix: str = "") -> bytes:
    text = _field(document, name, str, prefix)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise BadInput(f"'{prefix}{name}' is not valid base64") from None
