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
import itertools
import os
from collections import Counter, deque
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from nacl import bindings

from twin import BadInput, QuotaExceeded
from twin.settings import human_size
from twin.vault import Box

CHUNK = 1024 * 1024  # content bytes per chunk
TAG = 16  # bytes an AEAD adds to each chunk
INLINE = 64 * 1024  # content up to this size is sealed into the database row instead
READ_AHEAD = 2  # chunks read and decrypted ahead of the one being sent
WRITE_AHEAD = 2  # chunks sealed and written behind the one being received
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


def seal_chunk(cipher: int, key: bytes, token: bytes, index: int, last: bool, data: bytes) -> bytes:
    aad, nonce = _aad(token, index, last), _nonce(cipher, index)
    if cipher == AES_GCM:
        return bytes(bindings.crypto_aead_aes256gcm_encrypt(data, aad, nonce, key))
    return bytes(bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(data, aad, nonce, key))


def open_chunk(cipher: int, key: bytes, token: bytes, index: int, last: bool, data: bytes) -> bytes:
    aad, nonce = _aad(token, index, last), _nonce(cipher, index)
    if cipher == AES_GCM:
        return bytes(bindings.crypto_aead_aes256gcm_decrypt(data, aad, nonce, key))
    return bytes(bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(data, aad, nonce, key))


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
        # One thread digests every upload's chunks: one worker runs them in the order they came.
        self.digester = ThreadPoolExecutor(max_workers=1, thread_name_prefix="twin-digests")

    def close(self) -> None:
        self.digester.shutdown(wait=False, cancel_futures=True)

    def path(self, token: bytes) -> Path:
        name = token.hex()
        return self.root / name[:2] / name

    def key(self, token: bytes) -> bytes:
        return bytes.fromhex(self.box.blind(b"content key\0" + token))

    async def receive(self, body: AsyncIterable[bytes], length: int | None, room: int) -> Blob:
        """Write a body as a new blob; refuses (507) once it passes ``room`` bytes and (400)
        when it ends short of ``length``. On any failure nothing of it is left on disk."""
        if length is not None and length > room:
            raise QuotaExceeded(_over(length, room))
        token = os.urandom(16)
        self.pending.add(token)
        writer = _ChunkWriter(self, token)
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
            if length is not None and size != length:
                raise BadInput(f"the body ended after {size} of its {length} bytes")
            buffer = b"".join(pieces)
            if writer.index == 0 and size <= INLINE:
                content = buffer
                sealed = self.box.seal(content, context=b"content" + token)
                writer.hash(content)
                digests = self.seal_digests(token, writer)
                return Blob(token, size, self.cipher, sealed, digests, content)
            await writer.put(buffer, last=True)
            await writer.finish()
            return Blob(token, size, self.cipher, None, self.seal_digests(token, writer))
        except BaseException:
            await writer.abandon()
            self.pending.discard(token)
            raise

    def seal_digests(self, token: bytes, writer: _ChunkWriter) -> bytes:
        text = f"{writer.md5.hexdigest()} {writer.sha1.hexdigest()}"
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
        doomed = []
        for token in tokens:
            if self._reading[token]:
                self._doomed.add(token)
            else:
                doomed.append(self.path(token))
        if doomed:
            await asyncio.to_thread(_unlink_all, doomed)

    def open_inline(self, blob: Blob) -> bytes:
        """A small blob's content, from its sealed copy in the database row."""
        assert blob.inline is not None
        return self.box.open(blob.inline, context=b"content" + blob.token)

    async def read(self, blob: Blob, start: int, end: int) -> AsyncIterator[bytes]:
        """Content bytes [start, end) of a blob, chunk by chunk (the next one decrypted while
        the current one is sent)."""
        if blob.inline is not None:
            yield self.open_inline(blob)[start:end]
            return
        if start >= end:
            return
        self._reading[blob.token] += 1
        try:
            fd = await asyncio.to_thread(os.open, self.path(blob.token), os.O_RDONLY)
        except BaseException:
            self._done_reading(blob.token)
            raise
        try:
            key, count = self.key(blob.token), chunks_of(blob.size)
            first, last = start // CHUNK, (end - 1) // CHUNK

            def fetch(index: int) -> asyncio.Future[bytes]:
                return asyncio.ensure_future(
                    asyncio.to_thread(_read_chunk, fd, blob, key, index, count)
                )

            # READ_AHEAD chunks are read and decrypted (on threads) while one is sent
            wanted = iter(range(first, last + 1))
            coming = deque(fetch(index) for index in itertools.islice(wanted, READ_AHEAD))
            index = first
            while coming:
                data = await coming.popleft()
                following = next(wanted, None)
                if following is not None:
                    coming.append(fetch(following))
                base = index * CHUNK
                index += 1
                yield data[max(start - base, 0) : min(end - base, len(data))]
        finally:
            for future in locals().get("coming", ()):
                future.cancel()
                with contextlib.suppress(BaseException):
                    await future
            os.close(fd)
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


def _read_chunk(fd: int, blob: Blob, key: bytes, index: int, count: int) -> bytes:
    sealed = os.pread(fd, CHUNK + TAG, index * (CHUNK + TAG))
    expected = (blob.size - index * CHUNK if index == count - 1 else CHUNK) + TAG
    if len(sealed) != expected:
        raise OSError(f"blob {blob.token.hex()} is {len(sealed)} bytes short at chunk {index}")
    return open_chunk(blob.cipher, key, blob.token, index, index == count - 1, sealed)


def _unlink_all(paths: Iterable[Path]) -> None:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _over(size: int, room: int) -> str:
    return (
        f"this upload needs {human_size(size)}, but only {human_size(max(room, 0))} is left "
        "in the twin's files: delete files or empty the trash, or raise --files-quota"
    )


class _ChunkWriter:
    """Seals and writes one blob's chunks on threads, behind the body as it arrives: each
    chunk's digest on the one digest thread (in order), its sealing and writing on any."""

    def __init__(self, blobs: Blobs, token: bytes) -> None:
        self.blobs = blobs
        self.token = token
        self.key = b""  # derived with the first chunk: most bodies are small, sealed inline
        self.index = 0
        self.fd: int | None = None
        self._busy: deque[asyncio.Future[None]] = deque()
        # For clients that compare digests (rclone's owncloud mode): fed in order.
        self.md5 = hashlib.md5(usedforsecurity=False)
        self.sha1 = hashlib.sha1(usedforsecurity=False)

    def hash(self, data: bytes) -> None:
        self.md5.update(data)
        self.sha1.update(data)

    async def put(self, data: bytes, *, last: bool) -> None:
        while len(self._busy) >= 2 * WRITE_AHEAD:
            await self._busy.popleft()
        if self.fd is None:
            self.key = self.blobs.key(self.token)
            self.fd = await asyncio.to_thread(self._create)
        index, fd = self.index, self.fd
        self.index += 1
        loop = asyncio.get_running_loop()
        self._busy.append(loop.run_in_executor(self.blobs.digester, self.hash, data))
        self._busy.append(
            asyncio.ensure_future(asyncio.to_thread(self._write, fd, index, last, data))
        )

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
        fd = self.fd
        if fd is not None:
            self.fd = None
            await asyncio.to_thread(_sync_and_close, fd)

    async def abandon(self) -> None:
        while self._busy:
            with contextlib.suppress(BaseException):
                await self._busy.popleft()
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
