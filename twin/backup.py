"""Backups: the whole twin, as ``twin export`` writes it, into a folder of encrypted chunks
that later snapshots share, so a backup after a small change writes little.

The folder (docs/export-format.md, "Backups"):

    twin-backup.json          which twin, the format, a check of the key (no secret)
    chunks/ab/abcdef….chunk   a piece of an entry, sealed (XSalsa20-Poly1305, random nonce);
                              named by a keyed hash of its plain bytes, so the same bytes are
                              stored once and the name tells the host nothing about them
    snapshots/<UTC time>.snap one backup: its manifest (every entry, its size, SHA-256 and
                              chunks), signed by the twin's root key, then sealed

The keys come from the root seed (the recovery phrase), so a backup opens on any machine with
the phrase, and a running twin can back itself up without asking anyone. A file's bytes are
cut every CHUNK bytes; a JSON Lines entry is cut only after a line, where the line's own hash
says so, so one changed document changes the chunk it is in, not every chunk after it. Bytes
a capability names for good (a file's content token, ``Export.file(same_as=…)``) are taken
from the last snapshot unread when it holds them, so an unchanged file costs nothing. A
snapshot is written last, after every chunk it names, and each file is written under a
temporary name and renamed: a backup cut short leaves no snapshot, only chunks that the next
one takes up or throws away.
"""

from __future__ import annotations

import asyncio
import base64
import fcntl
import hashlib
import json
import os
import re
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nacl.exceptions
import nacl.secret
import nacl.utils

from twin.archive import Entry, check_path
from twin.errors import BadInput, Conflict, InvalidSignature, TwinError, WrongPassphrase
from twin.identity import Identity, verify
from twin.vault._keys import keyed_hash

FORMAT = "twin-backup"
VERSION = 1
CHUNK = 1024 * 1024  # a file's bytes are cut this often
LINES_MIN = 64 * 1024  # a JSON Lines chunk is at least this long …
LINES_MAX = 4 * 1024 * 1024  # … and at most this long
LINES_MASK = 0x3FF  # … and ends after a line whose CRC-32 has these bits clear (1 in 1024)
MAX_SNAPSHOT = 64 * 1024 * 1024
AHEAD = 4  # new chunks (of up to 4 MiB) handed to the writing thread and not written yet
_KEY_LABEL = b"twin backup/1"
_NAME_LABEL = b"twin backup chunk name/1"
_CHECK_LABEL = b"twin backup key check/1"
_INFO = "twin-backup.json"
_SNAPSHOT = re.compile(r"[0-9]{8}T[0-9]{6}Z[0-9]*")  # (others, such as ._X.snap, are not ours)
_SEALING = nacl.secret.SecretBox.NONCE_SIZE + nacl.secret.SecretBox.MACBYTES  # 40 bytes more


@dataclass
class Written:
    """What one backup wrote: the snapshot, and how much of it was new."""

    snapshot: str = ""
    entries: int = 0
    bytes: int = 0  # of the twin's data, plain
    chunks: int = 0
    new_chunks: int = 0
    new_bytes: int = 0  # sealed bytes written to the folder
    reused: int = 0  # entries taken from the last snapshot unread (files that did not change)
    removed: list[str] = field(default_factory=list)  # snapshots let go (keep)


class _Damaged(BadInput):
    """A chunk that does not open, or holds other bytes than its name says."""

    def __init__(self, path: Path, message: str) -> None:
        super().__init__(message)
        self.path = path


class BackupFolder:
    """One backup folder, opened with the twin's keys; the writer, reader and keeper of its
    snapshots. Hold :meth:`lock` while changing it."""

    def __init__(self, root: Path, seed: bytes, *, create: bool = False) -> None:
        self.root = root
        identity = Identity.from_seed(seed)
        self.did = identity.did
        self._identity = identity
        key = keyed_hash(seed, _KEY_LABEL)
        self._box = nacl.secret.SecretBox(key)
        self._name_key = keyed_hash(seed, _NAME_LABEL)
        check = base64.b64encode(keyed_hash(_CHECK_LABEL, key)[:16]).decode()
        info_path = root / _INFO
        if not info_path.exists():
            if not create and not root.exists():
                raise BadInput(f"{root} is not there: is the disk it is on mounted?")
            if not create:
                raise BadInput(f"{root} is not a twin backup (it has no {_INFO})")
            if root.exists() and any(p.name != ".lock" for p in root.iterdir()):
                raise Conflict(f"{root} holds other files: back up into a new or empty folder")
            root.mkdir(mode=0o700, parents=True, exist_ok=True)
            for folder in ("chunks", "snapshots"):
                (root / folder).mkdir(mode=0o700, exist_ok=True)
            _write_atomic(
                info_path,
                json.dumps(
                    {"format": FORMAT, "version": VERSION, "did": self.did, "key_check": check},
                    indent=2,
                ).encode()
                + b"\n",
            )
            return
        info = read_info(root)
        if info["did"] != self.did:
            raise WrongPassphrase(
                f"{root} holds the backups of {info['did']}, not of {self.did}"
                + (": back this twin up into another folder" if create else "")
            )
        if info.get("key_check") != check:
            raise WrongPassphrase(f"the keys do not open the backups in {root}")

    def lock(self) -> Any:
        """An exclusive hold on the folder, so two backups never write or prune it at once."""
        handle = os.fdopen(os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o600), "r+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise Conflict(
                f"another backup is writing to {self.root}: try again when it is done"
            ) from None
        except OSError as exc:
            handle.close()
            raise BadInput(
                f"{self.root} cannot be locked ({exc.strerror}): back up into a folder on a "
                "disk of this machine, and copy that folder elsewhere"
            ) from None
        return handle

    def snapshots(self) -> list[str]:
        """The snapshots' names, oldest first (they are UTC times, so they sort)."""
        folder = self.root / "snapshots"
        if not folder.is_dir():
            return []
        return sorted(p.stem for p in folder.glob("*.snap") if _SNAPSHOT.fullmatch(p.stem))

    def writer(self, created: float | None = None) -> SnapshotWriter:
        return SnapshotWriter(self, time.time() if created is None else created)

    def manifest(self, name: str) -> dict[str, Any]:
        """A snapshot's manifest, opened and its signature checked."""
        path = self.root / "snapshots" / f"{check_name(name)}.snap"
        try:
            sealed = path.read_bytes()
        except FileNotFoundError:
            raise BadInput(f"{self.root} has no snapshot {name!r}") from None
        if len(sealed) > MAX_SNAPSHOT:
            raise BadInput(f"the snapshot {name} is too large to be one: the file is damaged")
        try:
            manifest = json.loads(self._box.decrypt(sealed))
        except (nacl.exceptions.CryptoError, ValueError):
            raise BadInput(f"the snapshot {name} does not open: the file is damaged") from None
        if not isinstance(manifest, dict) or not isinstance(manifest.get("sig"), str):
            raise BadInput(f"the snapshot {name} is not signed")
        unsigned = {k: v for k, v in manifest.items() if k != "sig"}
        try:
            verify(self.did, unsigned, manifest["sig"])
        except (InvalidSignature, BadInput):
            raise InvalidSignature(f"the snapshot {name} is not signed by {self.did}") from None
        if manifest.get("format") != FORMAT or not isinstance(manifest.get("version"), int):
            raise BadInput(f"the snapshot {name} is not a twin backup's")
        if manifest["version"] > VERSION:
            raise BadInput(
                f"the snapshot {name} was written by a newer twin (backup format "
                f"{manifest['version']}, this one reads {VERSION}): upgrade twin to read it"
            )
        entries = manifest.get("entries")
        if not isinstance(entries, list) or not all(_is_entry(e) for e in entries):
            raise BadInput(f"the snapshot {name}'s entries are malformed")
        return manifest

    def entries(self, name: str) -> Iterator[tuple[str, Iterator[bytes]]]:
        """Every entry of a snapshot with its bytes, each chunk checked as it is read and each
        entry's size and SHA-256 at its end: what ``twin import`` and ``verify`` read."""
        manifest = self.manifest(name)
        for path, size, sha256, chunks, *_same_as in manifest["entries"]:
            yield path, self._read_entry(path, size, sha256, chunks)

    def verify(self, name: str) -> tuple[int, int]:
        """Read a whole snapshot back and check every byte: its entries and bytes. A damaged
        chunk is put aside (``….chunk.damaged``) when no backup is writing, so the next
        backup writes those bytes again if the twin still holds them."""
        count = total = 0
        try:
            for _path, chunks in self.entries(name):
                count += 1
                for chunk in chunks:
                    total += len(chunk)
        except _Damaged as exc:
            self._put_aside(exc.path)
            raise
        return count, total

    def _put_aside(self, path: Path) -> None:
        try:
            lock = self.lock()
        except TwinError:
            return
        try:
            path.rename(path.with_name(path.name + ".damaged"))
        except OSError:
            pass
        finally:
            lock.close()

    def keep(self, newest: int) -> list[str]:
        """Let go of all but the ``newest`` snapshots and of the chunks no snapshot left
        names; the snapshots removed."""
        if newest < 1:
            raise BadInput("keep at least one backup")
        names = self.snapshots()
        gone = names[:-newest]
        named: set[str] = set()
        for name in names[-newest:]:
            try:
                entries = self.manifest(name)["entries"]
            except (BadInput, InvalidSignature):
                # a kept one that does not open: the older ones may be the good ones, and what
                # it names is unknown, so nothing goes (twin backup verify --all finds it)
                return []
            for entry in entries:
                named.update(entry[3])
        for name in gone:
            (self.root / "snapshots" / f"{name}.snap").unlink()
        for path in (self.root / "chunks").glob("*/*"):
            if path.name.startswith(".") or path.stem not in named:
                path.unlink(missing_ok=True)
        return gone

    def _held(self) -> dict[str, tuple[int, str, list[str]]]:
        """The entries of the newest snapshot whose bytes have an id (``Export.file``'s
        ``same_as``), by that id: what the next backup may take unread. Nothing when there
        is no snapshot, or the newest does not open (the next one reads everything)."""
        names = self.snapshots()
        if not names:
            return {}
        try:
            entries = self.manifest(names[-1])["entries"]
        except (BadInput, InvalidSignature):
            return {}
        return {e[4]: (e[1], e[2], e[3]) for e in entries if len(e) == 5}

    def _read_entry(self, path: str, size: int, sha256: str, chunks: list[str]) -> Iterator[bytes]:
        digest = hashlib.sha256()
        read = 0
        for name in chunks:
            plain = self._read_chunk(name)
            digest.update(plain)
            read += len(plain)
            yield plain
        if read != size or digest.hexdigest() != sha256:
            raise BadInput(f"the backup's {path} is not what its snapshot says: it is damaged")

    def _read_chunk(self, name: str) -> bytes:
        try:
            sealed = self._chunk_path(name).read_bytes()
        except FileNotFoundError:
            raise BadInput(
                f"the backup is missing the chunk {name}: the folder is incomplete"
            ) from None
        try:
            plain = self._box.decrypt(sealed)
        except nacl.exceptions.CryptoError:
            path = self._chunk_path(name)
            raise _Damaged(path, f"the backup's chunk {name} is damaged") from None
        if self._name(plain) != name:
            raise _Damaged(
                self._chunk_path(name),
                f"the backup's chunk {name} holds other bytes than its name says",
            )
        return plain

    def _name(self, plain: bytes) -> str:
        return keyed_hash(plain, self._name_key).hex()

    def _chunk_path(self, name: str) -> Path:
        return self.root / "chunks" / name[:2] / f"{name}.chunk"

    def _put(
        self, plain: bytes, written: Written, unsynced: list[Path], write: Callable[..., Any]
    ) -> str:
        """Store a chunk unless it is there already: a new one goes to ``write`` (the
        writer's thread, which seals and writes it), and each is put on the disk for good
        (fsync) with the others before the snapshot naming them."""
        name = self._name(plain)
        path = self._chunk_path(name)
        written.chunks += 1
        try:
            whole = path.stat().st_size == len(plain) + _SEALING
        except FileNotFoundError:
            whole = False
        if not whole:
            write(self._write_chunk, path, plain)
            written.new_chunks += 1
            written.new_bytes += len(plain) + _SEALING
        unsynced.append(path)  # (one already there: a backup cut short may not have synced it)
        return name

    def _write_chunk(self, path: Path, plain: bytes) -> None:
        sealed = self._box.encrypt(plain, nacl.utils.random(nacl.secret.SecretBox.NONCE_SIZE))
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        _write_atomic(path, bytes(sealed), sync=False)

    def _seal_snapshot(self, name: str, manifest: dict[str, Any]) -> None:
        manifest["sig"] = self._identity.sign(manifest)
        plain = json.dumps(manifest, separators=(",", ":")).encode()
        if len(plain) + _SEALING > MAX_SNAPSHOT:
            raise BadInput(
                f"this twin holds too many entries ({len(manifest['entries']):,}) for one "
                f"backup of this format (its list would take {len(plain) / 2**20:,.0f} MiB, "
                f"more than {MAX_SNAPSHOT // 2**20} MiB): use twin export for now"
            )
        sealed = self._box.encrypt(plain, nacl.utils.random(nacl.secret.SecretBox.NONCE_SIZE))
        (self.root / "snapshots").mkdir(mode=0o700, exist_ok=True)
        _write_atomic(self.root / "snapshots" / f"{name}.snap", bytes(sealed))


class SnapshotWriter:
    """A sink (twin/export.py) that cuts each entry into chunks and stores the new ones; after
    ``close``, :meth:`seal` writes the snapshot that names them."""

    def __init__(self, folder: BackupFolder, created: float) -> None:
        self._folder = folder
        self._created = created
        self.written = Written(snapshot=time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(created)))
        self._entries: list[list[Any]] = []
        self._paths: set[str] = set()
        self._current: str | None = None
        self._lines = False
        self._buffer = bytearray()
        self._scanned = 0
        self._chunks: list[str] = []
        self._size = 0
        self._digest = hashlib.sha256()
        self._unsynced: list[Path] = []
        self._manifest: dict[str, Any] | None = None
        self._same_as: str | None = None  # the id of the bytes of the entry being written
        self._previous = folder._held()
        # new chunks are sealed and written on a thread of their own, a few at a time ahead
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="twin-backup")
        self._writing: deque[Future[None]] = deque()

    def reuse(self, path: str, same_as: str) -> Entry | None:
        """The entry of bytes the last snapshot holds under the id ``same_as``, taken from
        it unread (when all its chunks are still there); None: write them, noting the id."""
        if self._current is not None:
            raise RuntimeError(f"the entry {self._current!r} is not ended")
        held = self._previous.get(same_as)
        if held is None or not all(self._folder._chunk_path(c).exists() for c in held[2]):
            self._same_as = same_as
            return None
        path = self._fresh(path)
        size, sha256, chunks = held
        self._entries.append([path, size, sha256, chunks, same_as])
        self._paths.add(path)
        self.written.entries += 1
        self.written.bytes += size
        self.written.chunks += len(chunks)
        self.written.reused += 1
        return Entry(path, size, sha256)

    def _fresh(self, path: str) -> str:
        path = check_path(path)
        if path in self._paths:
            raise BadInput(f"the backup already has an entry {path!r}")
        return path

    def begin(self, path: str) -> None:
        if self._current is not None:
            raise RuntimeError(f"the entry {self._current!r} is not ended")
        path = self._fresh(path)
        self._current = path
        self._lines = path.endswith(".jsonl")
        self._buffer.clear()
        self._scanned = 0
        self._chunks = []
        self._size = 0
        self._digest = hashlib.sha256()

    def write(self, chunk: bytes) -> None:
        if self._current is None:
            raise RuntimeError("write() before begin()")
        self._digest.update(chunk)
        self._size += len(chunk)
        self._buffer += chunk
        if self._lines:
            self._cut_lines()
        else:
            while len(self._buffer) >= CHUNK:
                self._store(CHUNK)

    def end(self) -> Entry:
        if self._current is None:
            raise RuntimeError("end() before begin()")
        if self._buffer or not self._chunks:
            self._store(len(self._buffer))
        entry = Entry(self._current, self._size, self._digest.hexdigest())
        row = [entry.path, entry.size, entry.sha256, self._chunks]
        if self._same_as is not None:
            row.append(self._same_as)
            self._same_as = None
        self._entries.append(row)
        self._paths.add(entry.path)
        self.written.entries += 1
        self.written.bytes += entry.size
        self._current = None
        return entry

    def close(self, extra: dict[str, Any] | None = None) -> list[Entry]:
        """The snapshot's manifest, made ready: :meth:`seal` writes it."""
        if self._current is not None:
            raise RuntimeError(f"the entry {self._current!r} is not ended")
        self._manifest = {
            **(extra or {}),
            "format": FORMAT,
            "version": VERSION,
            "did": self._folder.did,
            "created": int(self._created),
            "entries": self._entries,
        }
        return [Entry(e[0], e[1], e[2]) for e in self._entries]

    def _submit(self, fn: Callable[..., None], *args: Any) -> None:
        self._writing.append(self._pool.submit(fn, *args))

    async def drain(self) -> None:
        """Wait, without holding the event loop, while more than AHEAD chunks are still to
        be written; a chunk that could not be written raises here."""
        while len(self._writing) > AHEAD:
            await asyncio.wrap_future(self._writing.popleft())
        while self._writing and self._writing[0].done():
            self._writing.popleft().result()

    def shut(self) -> None:
        """Let the writing thread go (after ``seal``, or when the backup stopped)."""
        for future in self._writing:
            future.cancel()
        self._pool.shutdown(wait=True)

    def seal(self) -> None:
        """Put the new chunks on the disk for good, then write the snapshot that names them
        (blocking: a serving twin runs it on a thread, so its requests do not wait)."""
        if self._manifest is None:
            raise RuntimeError("seal() before close()")
        while self._writing:
            self._writing.popleft().result()
        _sync(self._unsynced)
        name = self.written.snapshot
        names = self._folder.snapshots()
        if names and name <= names[-1]:
            # within the second of the last, or a clock set back: the newest must sort last,
            # or keeping the newest would let it go
            name = _later(names[-1])
        self.written.snapshot = name
        self._folder._seal_snapshot(name, self._manifest)

    def _cut_lines(self) -> None:
        """Cut after a line whose CRC-32 says so, once the chunk is LINES_MIN long."""
        buffer = self._buffer
        start = self._scanned
        while (end := buffer.find(b"\n", start)) != -1:
            end += 1
            if end >= LINES_MIN and zlib.crc32(buffer[start:end]) & LINES_MASK == 0:
                self._store(end)
                start = 0
                buffer = self._buffer
            else:
                start = end
        self._scanned = start
        while len(self._buffer) >= LINES_MAX:  # no line ended a chunk for a long way
            self._store(LINES_MAX)
            self._scanned = 0

    def _store(self, length: int) -> None:
        plain = bytes(self._buffer[:length])
        del self._buffer[:length]
        self._scanned = max(0, self._scanned - length)
        self._chunks.append(self._folder._put(plain, self.written, self._unsynced, self._submit))


def read_info(root: Path) -> dict[str, Any]:
    """What ``twin-backup.json`` says (which twin's backups these are), checked."""
    try:
        info = json.loads((root / _INFO).read_bytes()[:4096])
    except FileNotFoundError:
        raise BadInput(f"{root} is not a twin backup (it has no {_INFO})") from None
    except ValueError:
        raise BadInput(f"{root / _INFO} is not JSON: the backup folder is damaged") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise BadInput(f"{root} is not a twin backup")
    if not isinstance(info.get("version"), int) or info["version"] > VERSION:
        raise BadInput(
            f"{root} was written by a newer twin (backup format {info.get('version')}, this "
            f"one reads {VERSION}): upgrade twin to read it"
        )
    if not isinstance(info.get("did"), str):
        raise BadInput(f"{root / _INFO} names no twin")
    return info


def is_backup(path: Path) -> bool:
    return path.is_dir() and (path / _INFO).is_file()


def check_name(name: str) -> str:
    if not name or not all(c.isalnum() for c in name) or len(name) > 40:
        raise BadInput(f"{name!r} is not the name of a snapshot (see twin backup list)")
    return name


def _is_entry(value: object) -> bool:
    """[path, size, sha256, chunks] and, for bytes ``Export.file`` named, their id."""
    return (
        isinstance(value, list)
        and len(value) in (4, 5)
        and isinstance(value[0], str)
        and isinstance(value[1], int)
        and isinstance(value[2], str)
        and isinstance(value[3], list)
        and all(isinstance(c, str) and len(c) == 64 for c in value[3])
        and (len(value) == 4 or isinstance(value[4], str))
    )


def _later(name: str) -> str:
    """The name after ``name`` within one second: …Z, …Z01, …Z02 (they sort as written)."""
    stem, _, number = name.partition("Z")
    return f"{stem}Z{int(number or 0) + 1:02d}"


def _write_atomic(path: Path, data: bytes, *, sync: bool = True) -> None:
    """Write under a temporary name and rename, so a reader sees all of it or nothing; with
    ``sync``, on the disk for good before it is named (else :func:`_sync` does that later)."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    with os.fdopen(os.open(temporary, flags, 0o600), "wb") as handle:
        handle.write(data)
        if sync:
            handle.flush()
            os.fsync(handle.fileno())
    os.replace(temporary, path)
    if sync:
        _sync_folder(path.parent)


def _sync(paths: list[Path]) -> None:
    """Put files written with ``sync=False``, and their folders' entries, on the disk."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    for folder in {p.parent for p in paths}:
        _sync_folder(folder)


def _sync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
