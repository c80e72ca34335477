"""File contents at rest: each version of a file is a blob, encrypted with a key of its own,
small ones sealed in the database row, the others in a file of fixed-size encrypted chunks.

A blob is named by 16 random bytes (its token). Its key is derived from the vault and the token,
so nothing secret is stored beside it. A blob file holds chunk after chunk, each ``CHUNK``
bytes of content (the last one fewer) sealed with AES-256-GCM (XChaCha20-Poly1305 where the CPU
lacks AES instructions); the nonce is the chunk's index, and the associated data names the
token, the index and whether it is the last chunk, so chunks cannot be reordered, swapped
between files or cut off. A blob file exists before the database refers to it, never after it
stops doing so (save for a crash in between: :meth:`Blobs.sweep` removes those).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import mmap
import os
from collections import Counter, deque
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, cast

from nacl import bindings

from twin import BadInput, QuotaExceeded
from twin.settings import human_size
from twin.vault import Box

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

log = logging.getLogger("twin.cap.files")

CHUNK = 1024 * 1024  # content bytes per chunk
TAG = 16  # bytes an AEAD adds to each chunk
INLINE = 64 * 1024  # content up to this size is sealed into the database row instead
WRITE_AHEAD = 4  # chunks sealed and written behind the one being received
FLUSH_EVERY = 8  # chunks written between two flushes to the disk in the background
AES_GCM, XCHACHA = 1, 2


def _aes_available() -> bool:
    try:  # libsodium refuses AES-GCM on a CPU without AES instructions
        key, nonce = bytes(32), bytes(12)
        bindings.crypto_aead_aes256gcm_encrypt(b"", None, nonce, key)
    except Exception:
        return False
    return True


def _nonce(cipher: int, index: int) -> bytes:
    return index.to_bytes(12 if cipher == AES_GCM else 24, "big")


def _aad(token: bytes, index: int, last: bool) -> bytes:
    return token + index.to_bytes(8, "big") + (b"\1" if last else b"\0")


@functools.cache
def _aes_gcm() -> type[AESGCM]:
    """OpenSSL's AES-256-GCM (the same chunks as libsodium's), loaded with the first large
    file: with VAES it seals about 5.8 GB/s a core here, libsodium about 0.63."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    return AESGCM


class Damaged(Exception):
    """A content file that does not decrypt: changed or damaged on disk. Never served."""


def seal_chunk(cipher: int, key: bytes, token: bytes, index: int, last: bool, data: bytes) -> bytes:
    aad, nonce = _aad(token, index, last), _nonce(cipher, index)
    if cipher == AES_GCM:
        return _aes_gcm()(key).encrypt(nonce, data, aad)
    return bytes(bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(data, aad, nonce, key))


def open_chunk(
    cipher: int, key: bytes, token: bytes, index: int, last: bool, data: bytes | memoryview
) -> bytes:
    aad, nonce = _aad(token, index, last), _nonce(cipher, index)
    try:
        if cipher == AES_GCM:
            return _aes_gcm()(key).decrypt(nonce, data, aad)
        sealed = bytes(data)  # PyNaCl takes bytes only
        return bytes(bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(sealed, aad, nonce, key))
    except Exception as exc:  # OpenSSL's InvalidTag, libsodium's CryptoError
        raise Damaged(
            f"content file {token.hex()} does not decrypt at chunk {index}: it was changed or "
            "damaged on disk (restore it from a backup, or delete the file)"
        ) from exc


def chunks_of(size: int) -> int:
    return max(1, -(-size // CHUNK))


@dataclass(frozen=True)
class Blob:
    """A blob as the database holds it: ``inline`` is its sealed content when it has no file."""

    token: bytes
    size: int
    cipher: int
    inline: bytes | None = None
    digests: bytes | None = None  # sealed "md5 sha1" of the content, in hex
    plain: bytes | None = field(default=None, repr=False)  # a small content as received


class Blobs:
    """The encrypted chunk store under ``root`` (``<data dir>/files``)."""

    def __init__(self, root: Path, box: Box) -> None:
        self.root = root
        self.box = box
        self.cipher = AES_GCM if _aes_available() else XCHACHA
        self.pending: set[bytes] = set()  # tokens being written: never swept
        self._reading: Counter[bytes] = Counter()
        self._doomed: set[bytes] = set()  # released while being read: removed after
        self._removing: set[asyncio.Future[None]] = set()
        # A thread for each digest of every upload's chunks, which it takes in the order they
        # came; MD5 (0.6 GB/s here) beside SHA-1 (1.4 GB/s), not after it.
        self.digesters = tuple(
            ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"twin-{name}")
            for name in ("md5", "sha1")
        )

    def close(self) -> None:
        for digester in self.digesters:
            digester.shutdown(wait=False, cancel_futures=True)

    def path(self, token: bytes) -> Path:
        name = token.hex()
        return self.root / name[:2] / name

    def key(self, token: bytes) -> bytes:
        return bytes.fromhex(self.box.blind(b"content key\0" + token))

    async def receive(
        self,
        body: AsyncIterable[bytes],
        length: int | None,
        room: int,
        *,
        digests: bool = False,
        token: bytes | None = None,
        ahead: int | None = None,
    ) -> Blob:
        """Write a body as a new blob; refuses (507) once it passes ``room`` bytes and (400)
        when it ends short of ``length``. On any failure nothing of it is left on disk.
        ``digests`` keeps the content's MD5 and SHA-1, for the sync clients that compare them
        (they cost more than the encryption: about 3 ms a MiB). ``token``: the one the
        content had (an import keeps it, so its files keep their ETags); else a new one.
        ``ahead``: at most this many chunks in flight (an import has no client to keep up
        with; without it the writer lets three tasks a chunk run ahead, each chunk held
        twice while it is sealed)."""
        if length is not None and length > room:
            raise QuotaExceeded(_over(length, room))
        token = os.urandom(16) if token is None else token
        self.pending.add(token)
        writer = _ChunkWriter(self, token, digests)
        pieces: list[bytes] = []  # joined once a chunk's worth is there: one copy per chunk
        held = size = 0
        try:
            async for piece in body:
                size += len(piece)
                if size > room:
                    raise QuotaExceeded(_over(size if length is None else length, room))
                if length is not None and size > length:
                    raise BadInput(f"the body is longer than its Content-Length ({length})")
                pieces.append(piece)
                held += len(piece)
                while held > CHUNK:  # the last chunk is only known once the body ends
                    cut = len(pieces[-1]) - (held - CHUNK)
                    rest = pieces[-1][cut:]
                    pieces[-1] = pieces[-1][:cut]
                    await writer.put(b"".join(pieces), last=False)
                    pieces, held = [rest], len(rest)
                    if ahead is not None:
                        while len(writer._busy) > ahead * (1 + len(writer.hashes)):
                            await writer._busy.popleft()
            if length is not None and size != length:
                raise BadInput(f"the body ended after {size} of its {length} bytes")
            buffer = b"".join(pieces)
            if writer.index == 0 and size <= INLINE:
                content = buffer
                sealed = self.box.seal(content, context=b"content" + token)
                writer.hash(content)
                kept = self.seal_digests(token, writer)
                return Blob(token, size, self.cipher, sealed, kept, content)
            await writer.put(buffer, last=True)
            await writer.finish()
            return Blob(token, size, self.cipher, None, self.seal_digests(token, writer))
        except BaseException:
            await writer.abandon()
            self.pending.discard(token)
            raise

    def seal_digests(self, token: bytes, writer: _ChunkWriter) -> bytes | None:
        if not writer.hashes:
            return None
        text = " ".join(digest.hexdigest() for digest in writer.hashes)  # "md5 sha1"
        return self.box.seal(text, context=b"digests" + token)

    def digests(self, token: bytes, sealed: bytes | None) -> dict[str, str]:
        """A blob's content digests: {"md5": hex, "sha1": hex} ({} if none were kept)."""
        if sealed is None:
            return {}
        md5, sha1 = self.box.open_text(sealed, context=b"digests" + token).split()
        return {"md5": md5, "sha1": sha1}

    def committed(self, token: bytes) -> None:
        """The database refers to this blob now: a sweep may judge it like any other."""
        self.pending.discard(token)

    async def remove(self, tokens: Iterable[bytes]) -> None:
        """Delete blob files the database no longer refers to (once nobody reads them)."""
        doomed = self._doom(tokens)
        if doomed:
            await asyncio.to_thread(_unlink_all, doomed)

    def remove_soon(self, tokens: Iterable[bytes]) -> None:
        """:meth:`remove` in the background: unlinking a large file takes tens of milliseconds
        that an upload's answer need not wait for. A crash before it is done leaves files the
        sweep removes; :meth:`settle` waits for it."""
        doomed = self._doom(tokens)
        if doomed:
            task = asyncio.ensure_future(asyncio.to_thread(_unlink_all, doomed))
            self._removing.add(task)
            task.add_done_callback(self._removed)

    def _removed(self, task: asyncio.Future[None]) -> None:
        self._removing.discard(task)
        if not task.cancelled() and task.exception() is not None:  # the sweep tries again
            log.warning("could not remove old content files: %s", task.exception())

    async def settle(self) -> None:
        """Wait for the removals :meth:`remove_soon` began."""
        while self._removing:
            await asyncio.wait(set(self._removing))

    def _doom(self, tokens: Iterable[bytes]) -> list[Path]:
        doomed = []
        for token in tokens:
            if self._reading[token]:
                self._doomed.add(token)
            else:
                doomed.append(self.path(token))
        return doomed

    def open_inline(self, blob: Blob) -> bytes:
        """A small blob's content, from its sealed copy in the database row."""
        assert blob.inline is not None
        return self.box.open(blob.inline, context=b"content" + blob.token)

    async def read(self, blob: Blob, start: int, end: int) -> AsyncIterator[bytes]:
        """Content bytes [start, end) of a blob, chunk by chunk.

        The file is mapped, not read: each chunk is decrypted straight from the page cache on
        the loop's thread (about 0.2 ms a chunk, less than a hand-off to a thread and back
        costs), while the kernel reads the next chunk ahead and forgets the pages of the one
        before, so a gibibyte sent adds two chunks to the resident set, not a gibibyte. Blob
        files are never changed once written, so the mapping cannot shrink under the read."""
        if blob.inline is not None:
            yield self.open_inline(blob)[start:end]
            return
        if start >= end:
            return
        self._reading[blob.token] += 1
        try:
            mapped = await asyncio.to_thread(_map, self.path(blob.token), stored_size(blob.size))
        except BaseException:
            self._done_reading(blob.token)
            raise
        try:
            with memoryview(mapped) as view:
                key, count = self.key(blob.token), chunks_of(blob.size)
                for index in range(start // CHUNK, (end - 1) // CHUNK + 1):
                    offset, following = index * (CHUNK + TAG), (index + 1) * (CHUNK + TAG)
                    if following < len(mapped):
                        _advise(mapped, mmap.MADV_WILLNEED, following, following + CHUNK + TAG)
                    last = index == count - 1
                    with view[offset:following] as sealed:
                        data = open_chunk(blob.cipher, key, blob.token, index, last, sealed)
                    _advise(mapped, mmap.MADV_DONTNEED, offset, following)
                    base = index * CHUNK
                    yield data[max(start - base, 0) : min(end - base, len(data))]
        finally:
            mapped.close()
            self._done_reading(blob.token)

    def _done_reading(self, token: bytes) -> None:
        self._reading[token] -= 1
        if self._reading[token] <= 0:
            del self._reading[token]
            if token in self._doomed:
                self._doomed.discard(token)
                _unlink_all([self.path(token)])

    def stored(self) -> Iterable[tuple[bytes, Path]]:
        """Every blob file on disk, as (token, path); names that are not blobs are skipped."""
        if not self.root.is_dir():
            return
        for folder in self.root.iterdir():
            if not folder.is_dir() or len(folder.name) != 2:
                continue
            for item in folder.iterdir():
                try:
                    token = bytes.fromhex(item.name)
                except ValueError:
                    continue
                if len(token) == 16 and item.name.startswith(folder.name):
                    yield token, item

    def sweep(self, known: Callable[[bytes], bool]) -> tuple[int, int]:
        """Remove blob files the database does not know and nobody is writing: what an upload
        cut short by a crash leaves. Returns (files, bytes) removed. Runs on a thread."""
        removed = freed = 0
        for token, path in list(self.stored()):
            if token in self.pending or known(token):
                continue
            with contextlib.suppress(FileNotFoundError):
                freed += path.stat().st_size
                path.unlink()
                removed += 1
        return removed, freed


def stored_size(size: int) -> int:
    """The bytes a blob file of ``size`` content bytes holds."""
    return size + chunks_of(size) * TAG


def _map(path: Path, expected: int) -> mmap.mmap:
    with open(path, "rb") as file:
        actual = os.fstat(file.fileno()).st_size
        if actual != expected:
            raise OSError(f"content file {path.name} is {actual} bytes, not {expected}")
        return mmap.mmap(file.fileno(), 0, prot=mmap.PROT_READ)


def _advise(mapped: mmap.mmap, advice: int, start: int, end: int) -> None:
    """madvise for the pages holding bytes [start, end) of a mapping (the start rounded down
    to a page, as the call wants)."""
    start -= start % mmap.PAGESIZE
    end = min(end, len(mapped))
    if end > start:
        mapped.madvise(advice, start, end - start)


def _unlink_all(paths: Iterable[Path]) -> None:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _over(size: int, room: int) -> str:
    return (
        f"this upload needs {human_size(size)}, but only {human_size(max(room, 0))} is left "
        "in the twin's files: delete files or empty the trash, free space on the disk, or "
        "raise --files-quota"
    )


class _ChunkWriter:
    """Seals and writes one blob's chunks on threads, behind the body as it arrives: each
    chunk's digests on the digest threads (in order), its sealing and writing on any; every
    few chunks the file is flushed to the disk in the background, so the flush that makes a
    finished upload durable has little left to do (on these disks a flush costs about 1 ms
    for each MiB not yet flushed)."""

    def __init__(self, blobs: Blobs, token: bytes, digests: bool) -> None:
        self.blobs = blobs
        self.token = token
        self.key = b""  # derived with the first chunk: most bodies are small, sealed inline
        self.index = 0
        self.fd: int | None = None
        self._busy: deque[asyncio.Future[None]] = deque()
        self._flush: asyncio.Future[None] | None = None
        # MD5 and SHA-1 (in the order of Blobs.digesters) for clients that compare digests
        # (rclone's owncloud mode), fed in order; none for the others.
        self.hashes = (
            (hashlib.md5(usedforsecurity=False), hashlib.sha1(usedforsecurity=False))
            if digests
            else ()
        )

    def hash(self, data: bytes) -> None:
        for digest in self.hashes:
            digest.update(data)

    async def put(self, data: bytes, *, last: bool) -> None:
        while len(self._busy) >= 3 * WRITE_AHEAD:  # a chunk's two digests and its write
            await self._busy.popleft()
        if self.fd is None:
            self.key = self.blobs.key(self.token)
            self.fd = await asyncio.to_thread(self._create)
        index, fd = self.index, self.fd
        self.index += 1
        loop = asyncio.get_running_loop()
        for digest, thread in zip(self.hashes, self.blobs.digesters, strict=False):
            self._busy.append(loop.run_in_executor(thread, digest.update, data))
        self._busy.append(
            asyncio.ensure_future(asyncio.to_thread(self._write, fd, index, last, data))
        )
        flushed = self._flush is None or self._flush.done()
        if index % FLUSH_EVERY == FLUSH_EVERY - 1 and flushed and not last:
            if self._flush is not None:
                self._flush.result()  # a disk that failed to flush fails the upload
            self._flush = asyncio.ensure_future(asyncio.to_thread(os.fdatasync, fd))

    def _create(self) -> int:
        path = self.blobs.path(self.token)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)

    def _write(self, fd: int, index: int, last: bool, data: bytes) -> None:
        sealed = seal_chunk(self.blobs.cipher, self.key, self.token, index, last, data)
        view = memoryview(sealed)
        start = offset = index * (CHUNK + TAG)  # chunks may land in any order: each has its place
        while view:
            written = os.pwrite(fd, view, offset)
            view, offset = view[written:], offset + written
        writeback = _writeback()
        if writeback is not None:
            writeback(fd, start, offset - start, SYNC_FILE_RANGE_WRITE)

    async def finish(self) -> None:
        """Wait for the last chunk and make the file durable before the database names it."""
        while self._busy:
            await self._busy.popleft()
        if self._flush is not None:
            await self._flush
        fd = self.fd
        if fd is not None:
            self.fd = None
            await asyncio.to_thread(_sync_and_close, fd)

    async def abandon(self) -> None:
        while self._busy:
            with contextlib.suppress(BaseException):
                await self._busy.popleft()
        if self._flush is not None:  # the file stays open until its flush is over
            with contextlib.suppress(BaseException):
                await self._flush
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        with contextlib.suppress(FileNotFoundError):
            self.blobs.path(self.token).unlink()


@functools.cache
def _writeback() -> Callable[[int, int, int, int], int] | None:
    """Linux's sync_file_range: starts writing a range to disk without waiting for it, so the
    fsync that makes a finished upload durable has little left to wait for."""
    import ctypes

    try:
        call = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    call.argtypes = (ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong, ctypes.c_uint)
    call.restype = ctypes.c_int
    return cast(Callable[[int, int, int, int], int], call)


SYNC_FILE_RANGE_WRITE = 2


def _sync_and_close(fd: int) -> None:
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
