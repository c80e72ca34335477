"""The twin's archive: named entries (streams of bytes) in one file, encrypted and signed.

What ``twin export`` and ``twin backup`` will write. The layout (docs/export-format.md):

    MAGIC (8 bytes) | header length (4, big-endian) | header (JSON) | frames

The header says the format version and how the key is made: from the recovery phrase (the
root seed) or from a passphrase (argon2id, its salt and costs). Each frame is its length (4
bytes) and a libsodium secretstream message of up to FRAME_BYTES of the plain stream, with
the header as associated data, so a changed header opens nothing. The last frame is tagged
final: an archive cut anywhere is noticed. The plain stream is records, each a line of JSON:
``{"path": …}`` for an entry, followed by its bytes in pieces (each its length in 4 bytes, then
the bytes; a length of 0 ends the entry, so an entry can be written before its size is known),
and last ``{"manifest": {…}}``, which lists every entry with its size and SHA-256 and is signed
by the twin's root key.

Reading checks everything as it goes and raises at the first thing wrong, so an importer that
stages what it reads and commits only after :meth:`ArchiveReader.entries` has finished never
takes half an archive.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import nacl.bindings as sodium
import nacl.exceptions
import nacl.pwhash.argon2id as argon2id
import nacl.utils

from twin.errors import BadInput, InvalidSignature, WrongPassphrase
from twin.identity import Identity, verify
from twin.vault._keys import keyed_hash

MAGIC = b"TWINARC\x00"
VERSION = 1
FRAME_BYTES = 64 * 1024
MAX_HEADER = 4096
PIECE = 1024 * 1024  # at most this much of an entry in one piece
MAX_LINE = 32 * 1024 * 1024  # a record's line of JSON: the manifest of 100,000 entries is ~15 MB
_ABYTES = sodium.crypto_secretstream_xchacha20poly1305_ABYTES
_FINAL = sodium.crypto_secretstream_xchacha20poly1305_TAG_FINAL
_KEY_LABEL = b"twin archive/1"
_CHECK_LABEL = b"twin archive key check/1"


def key_from_seed(seed: bytes) -> bytes:
    """The archive key the recovery phrase gives (its seed): the same on any machine."""
    return keyed_hash(seed, _KEY_LABEL)


def _check_value(key: bytes) -> str:
    return _b64(keyed_hash(_CHECK_LABEL, key)[:16])


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: object, what: str) -> bytes:
    try:
        return base64.b64decode(str(text), validate=True)
    except ValueError:
        raise BadInput(f"the archive's header has a bad {what}") from None


@dataclass(frozen=True)
class Entry:
    path: str
    size: int
    sha256: str


def check_path(path: object) -> str:
    """An entry's name: a relative POSIX path without empty, '.' or '..' parts."""
    if not isinstance(path, str) or not path or len(path) > 1024:
        raise BadInput("an archive entry needs a path of 1 to 1024 characters")
    parts = path.split("/")
    if path.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\\" in path:
        raise BadInput(f"an archive entry's path must be relative and plain, not {path!r}")
    if any(ord(c) < 32 for c in path):
        raise BadInput("an archive entry's path holds a control character")
    return path


class ArchiveWriter:
    """Writes an archive to ``out``; entries go in one after the other, then :meth:`close`.

    with open(path, "wb") as out:
        writer = ArchiveWriter(out, identity, passphrase=None)
        writer.add("profile.json", json_bytes)
        writer.add_stream("files/a.bin", size, chunks)
        writer.close()
    """

    def __init__(
        self,
        out: BinaryIO,
        identity: Identity,
        *,
        passphrase: str | None = None,
        created: float | None = None,
        cost: tuple[int, int] | None = None,  # argon2id (opslimit, memlimit), for tests
    ) -> None:
        self._out = out
        self._identity = identity
        self._created = time.time() if created is None else created
        key_spec: dict[str, Any]
        if passphrase is None:
            key = key_from_seed(identity.seed)
            key_spec = {"from": "phrase"}
        else:
            if not passphrase:
                raise BadInput("an archive's passphrase must not be empty")
            opslimit, memlimit = cost or (argon2id.OPSLIMIT_MODERATE, argon2id.MEMLIMIT_MODERATE)
            salt = nacl.utils.random(argon2id.SALTBYTES)
            key = argon2id.kdf(32, passphrase.encode("utf-8"), salt, opslimit, memlimit)
            key_spec = {"from": "passphrase", "salt": _b64(salt), "ops": opslimit, "mem": memlimit}
        self._state = sodium.crypto_secretstream_xchacha20poly1305_state()
        stream_header = sodium.crypto_secretstream_xchacha20poly1305_init_push(self._state, key)
        header = {
            "format": "twin-archive",
            "version": VERSION,
            "key": {**key_spec, "check": _check_value(key)},
            "stream": _b64(stream_header),
        }
        self._header = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
        out.write(MAGIC + struct.pack(">I", len(self._header)) + self._header)
        self._pending = bytearray()
        self._entries: list[Entry] = []
        self._paths: set[str] = set()
        self._closed = False
        self._current: tuple[str, Any, list[int]] | None = None
        self.written = len(MAGIC) + 4 + len(self._header)  # bytes so far, for progress

    def add(self, path: str, data: bytes) -> Entry:
        """One entry whose bytes are at hand."""
        return self.add_stream(path, iter((data,)))

    def add_stream(self, path: str, chunks: Iterable[bytes]) -> Entry:
        """One entry, its bytes read from ``chunks`` as they come."""
        self.begin(path)
        for chunk in chunks:
            self.write(chunk)
        return self.end()

    def begin(self, path: str) -> None:
        """Begin an entry; :meth:`write` its bytes, then :meth:`end` it."""
        if self._closed:
            raise RuntimeError("the archive is closed")
        if self._current is not None:
            raise RuntimeError(f"the entry {self._current[0]!r} is not ended")
        check_path(path)
        if path in self._paths:
            raise BadInput(f"the archive already holds {path!r}")
        self._record({"path": path})
        self._current = (path, hashlib.sha256(), [0])

    def write(self, chunk: bytes) -> None:
        """More of the current entry's bytes."""
        if self._current is None:
            raise RuntimeError("no entry is begun")
        _, digest, size = self._current
        for start in range(0, len(chunk), PIECE):
            piece = chunk[start : start + PIECE]
            digest.update(piece)
            size[0] += len(piece)
            self._write(struct.pack(">I", len(piece)) + piece)

    def end(self) -> Entry:
        """End the current entry; what the manifest will say of it."""
        if self._current is None:
            raise RuntimeError("no entry is begun")
        path, digest, size = self._current
        self._write(struct.pack(">I", 0))
        entry = Entry(path, size[0], digest.hexdigest())
        self._entries.append(entry)
        self._paths.add(path)
        self._current = None
        return entry

    def close(self, extra: dict[str, Any] | None = None) -> list[Entry]:
        """Write the signed manifest (with ``extra`` fields beside the entries) and the final
        frame; the entries written."""
        if self._closed:
            return self._entries
        if self._current is not None:
            raise RuntimeError(f"the entry {self._current[0]!r} is not ended")
        manifest: dict[str, Any] = {
            **(extra or {}),
            "format": "twin-archive",
            "version": VERSION,
            "did": self._identity.did,
            "created": int(self._created),
            "entries": [[e.path, e.size, e.sha256] for e in self._entries],
        }
        manifest["sig"] = self._identity.sign(manifest)
        line = json.dumps({"manifest": manifest}, separators=(",", ":"), ensure_ascii=False)
        if len(line.encode()) >= MAX_LINE:  # what a reader would refuse: say so now
            raise BadInput(
                f"this twin holds too many entries ({len(self._entries):,}) for one archive "
                f"of this format (its manifest would pass {MAX_LINE // 2**20} MiB)"
            )
        self._record({"manifest": manifest})
        self._flush(final=True)
        self._closed = True
        return self._entries

    def _record(self, head: dict[str, Any]) -> None:
        self._write(json.dumps(head, separators=(",", ":"), ensure_ascii=False).encode() + b"\n")

    def _write(self, data: bytes) -> None:
        self._pending += data
        while len(self._pending) >= FRAME_BYTES:
            self._frame(bytes(self._pending[:FRAME_BYTES]), 0)
            del self._pending[:FRAME_BYTES]

    def _flush(self, final: bool) -> None:
        self._frame(bytes(self._pending), _FINAL if final else 0)
        self._pending.clear()

    def _frame(self, plain: bytes, tag: int) -> None:
        sealed = sodium.crypto_secretstream_xchacha20poly1305_push(
            self._state, plain, self._header, tag
        )
        self._out.write(struct.pack(">I", len(sealed)) + sealed)
        self.written += 4 + len(sealed)


def opens_with(path: Path) -> str:
    """What opens the archive at ``path``, from its header: ``phrase`` (the recovery phrase)
    or ``passphrase``. A file that is no archive says ``phrase``; the reader then says why."""
    try:
        with open(path, "rb") as source:
            if source.read(len(MAGIC)) != MAGIC:
                return "phrase"
            size = _unpack(source.read(4), "header")
            header = json.loads(source.read(min(size, MAX_HEADER)))
        return "passphrase" if header["key"]["from"] == "passphrase" else "phrase"
    except (OSError, BadInput, ValueError, KeyError, TypeError):
        return "phrase"


class ArchiveReader:
    """Reads an archive from ``source``, checking each part as it comes.

    reader = ArchiveReader(source, seed=identity_seed)   # or passphrase="…"
    for path, size, chunks in reader.entries():
        for chunk in chunks: …                            # read each entry whole, in turn
    reader.manifest                                       # checked and signed
    """

    def __init__(
        self, source: BinaryIO, *, seed: bytes | None = None, passphrase: str | None = None
    ) -> None:
        self._source = source
        # opened with a recovery phrase, the archive must be that twin's
        self._did = Identity.from_seed(seed).did if seed is not None else None
        if source.read(len(MAGIC)) != MAGIC:
            raise BadInput("this is not a twin archive (it does not begin as one)")
        size = _unpack(source.read(4), "header")
        if size > MAX_HEADER:
            raise BadInput("the archive's header is too long: this is not a twin archive")
        self._header = source.read(size)
        if len(self._header) < size:
            raise BadInput("the archive ends early, in its header: it was cut off (copy it again)")
        try:
            header = json.loads(self._header)
        except ValueError:
            raise BadInput("the archive's header is not JSON: the file is damaged") from None
        if not isinstance(header, dict) or header.get("format") != "twin-archive":
            raise BadInput("this is not a twin archive (its header says otherwise)")
        version = header.get("version")
        if type(version) is not int or version < 1:
            raise BadInput("the archive's header has no format version")
        if version > VERSION:
            raise BadInput(
                f"this archive is format {version}, written by a newer twin; this one reads "
                f"format {VERSION}: upgrade twin, then try again"
            )
        self.version = version
        key = self._key(header.get("key"), seed, passphrase)
        self._state = sodium.crypto_secretstream_xchacha20poly1305_state()
        stream_header = _unb64(header.get("stream"), "stream header")
        try:
            sodium.crypto_secretstream_xchacha20poly1305_init_pull(self._state, stream_header, key)
        except (nacl.exceptions.CryptoError, ValueError, TypeError):
            raise BadInput("the archive's header has a bad stream header") from None
        self.position = len(MAGIC) + 4 + size  # bytes read so far, for progress
        self._plain = bytearray()
        self._ended = False
        self.manifest: dict[str, Any] | None = None

    @staticmethod
    def _key(spec: object, seed: bytes | None, passphrase: str | None) -> bytes:
        if not isinstance(spec, dict) or spec.get("from") not in ("phrase", "passphrase"):
            raise BadInput("the archive's header does not say how its key is made")
        if spec["from"] == "phrase":
            if seed is None:
                raise WrongPassphrase("this archive opens with the twin's recovery phrase")
            key = key_from_seed(seed)
        else:
            if passphrase is None:
                raise WrongPassphrase("this archive opens with the passphrase it was written with")
            ops, mem = spec.get("ops"), spec.get("mem")
            if type(ops) is not int or not argon2id.OPSLIMIT_MIN <= ops <= argon2id.OPSLIMIT_MAX:
                raise BadInput("the archive's header has bad key costs")
            if type(mem) is not int or not argon2id.MEMLIMIT_MIN <= mem <= 1 << 31:
                raise BadInput("the archive's header has bad key costs")
            salt = _unb64(spec.get("salt"), "salt")
            if len(salt) != argon2id.SALTBYTES:
                raise BadInput("the archive's header has a bad salt")
            key = argon2id.kdf(32, passphrase.encode("utf-8"), salt, ops, mem)
        if spec.get("check") != _check_value(key):
            what = "recovery phrase" if spec["from"] == "phrase" else "passphrase"
            raise WrongPassphrase(f"that {what} does not open this archive")
        return key

    def entries(self) -> Iterator[tuple[str, Iterator[bytes]]]:
        """Each entry's path and bytes, in order; each must be read whole before the next.
        Once they are all read, :attr:`manifest` holds the checked manifest."""
        seen: list[Entry] = []
        paths: set[str] = set()
        while True:
            head = self._line()
            if "manifest" in head:
                self._finish(head["manifest"], seen)
                return
            path = check_path(head.get("path"))
            if path in paths:
                raise BadInput(f"the archive holds {path!r} twice: it is damaged")
            paths.add(path)
            digest, counted = hashlib.sha256(), [0]
            yield path, self._pieces(path, digest, counted)
            seen.append(Entry(path, counted[0], digest.hexdigest()))

    def _finish(self, manifest: object, seen: list[Entry]) -> None:
        if not self._ended or self._plain:
            raise BadInput("the archive goes on after its manifest: the file is damaged")
        if not isinstance(manifest, dict) or not isinstance(manifest.get("sig"), str):
            raise BadInput("the archive's manifest is not signed")
        unsigned = {k: v for k, v in manifest.items() if k != "sig"}
        did = manifest.get("did")
        try:
            verify(str(did), unsigned, manifest["sig"])
        except (InvalidSignature, BadInput):
            raise InvalidSignature(
                f"the archive's manifest is not signed by {did}: it was altered"
            ) from None
        if self._did is not None and did != self._did:
            raise InvalidSignature(f"the archive is {did}'s, not this recovery phrase's twin")
        listed = manifest.get("entries")
        if not isinstance(listed, list) or [[e.path, e.size, e.sha256] for e in seen] != listed:
            raise BadInput("the archive's entries are not the ones its manifest lists")
        self.manifest = manifest

    def _line(self) -> dict[str, Any]:
        while b"\n" not in self._plain:
            if len(self._plain) > MAX_LINE:
                raise BadInput("the archive holds a record too long to read: it is damaged")
            if not self._pull():
                raise BadInput("the archive ends early: it was cut off (copy it again)")
        end = self._plain.index(b"\n")
        line = bytes(self._plain[:end])
        del self._plain[: end + 1]
        try:
            head = json.loads(line)
        except ValueError:
            raise BadInput("the archive holds a record that is not JSON: it is damaged") from None
        if not isinstance(head, dict):
            raise BadInput("the archive holds a record that is not an object: it is damaged")
        return head

    def _take(self, count: int) -> bytes:
        while len(self._plain) < count:
            if not self._pull():
                raise BadInput("the archive ends early: it was cut off (copy it again)")
        taken = bytes(self._plain[:count])
        del self._plain[:count]
        return taken

    def _pieces(self, path: str, digest: Any, counted: list[int]) -> Iterator[bytes]:
        while True:
            size = _unpack(self._take(4), "entry")
            if size == 0:
                return
            if size > PIECE:
                raise BadInput(f"the archive's entry {path!r} is damaged (a piece too long)")
            left = size
            while left:
                if not self._plain and not self._pull():
                    raise BadInput("the archive ends early: it was cut off (copy it again)")
                piece = bytes(self._plain[:left])
                del self._plain[: len(piece)]
                left -= len(piece)
                digest.update(piece)
                counted[0] += len(piece)
                yield piece

    def _pull(self) -> bool:
        """Decrypt the next frame into the plain buffer; False at the end of the stream."""
        if self._ended:
            return False
        raw = self._source.read(4)
        if not raw:
            raise BadInput("the archive ends early: it was cut off (copy it again)")
        size = _unpack(raw, "frame")
        if not _ABYTES <= size <= FRAME_BYTES + _ABYTES:
            raise BadInput(f"the archive is damaged near byte {self.position}")
        sealed = self._source.read(size)
        if len(sealed) < size:
            raise BadInput("the archive ends early: it was cut off (copy it again)")
        try:
            plain, tag = sodium.crypto_secretstream_xchacha20poly1305_pull(
                self._state, sealed, self._header
            )
        except nacl.exceptions.CryptoError:
            raise BadInput(
                f"the archive is damaged near byte {self.position}: a part of it does not "
                "decrypt (a changed byte, or a copy of another file)"
            ) from None
        self.position += 4 + size
        self._plain += plain
        if tag == _FINAL:
            self._ended = True
            if self._source.read(1):
                raise BadInput("the archive goes on after its end: the file is damaged")
        return True


def _unpack(raw: bytes, what: str) -> int:
    if len(raw) != 4:
        raise BadInput(f"the archive ends early, in its {what}: it was cut off (copy it again)")
    size: int = struct.unpack(">I", raw)[0]
    return size


def read_all(
    path: Path, *, seed: bytes | None = None, passphrase: str | None = None
) -> dict[str, Any]:
    """Read and check a whole archive without keeping its entries; its manifest."""
    with path.open("rb") as source:
        reader = ArchiveReader(source, seed=seed, passphrase=passphrase)
        for _, chunks in reader.entries():
            for _ in chunks:
                pass
    assert reader.manifest is not None
    return reader.manifest
