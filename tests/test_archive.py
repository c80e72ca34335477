"""The archive that export and backups write (twin/archive.py): what goes in comes out, and a
cut, a changed byte, a forged manifest, the wrong phrase or a newer format is refused with a
clear error before anything is taken."""

from __future__ import annotations

import hashlib
import io
import json
import struct
import tracemalloc
from collections.abc import Iterator
from typing import Any

import nacl.pwhash.argon2id as argon2id
import pytest

from twin import archive
from twin.archive import FRAME_BYTES, MAGIC, ArchiveReader, ArchiveWriter
from twin.errors import BadInput, InvalidSignature, TwinError, WrongPassphrase
from twin.identity import Identity

CHEAP = (argon2id.OPSLIMIT_MIN, argon2id.MEMLIMIT_MIN)
ADA = Identity.from_seed(bytes(range(32)))

CONTENTS = {
    "identity.json": b'{"did": "x"}',
    "empty": b"",
    "files/Photos/été 2026/plage.jpg": bytes(range(256)) * 300,  # over one frame
    "files/exactly-a-frame.bin": b"\x01" * FRAME_BYTES,
    "storage/notes/n1.json": "一二三 🙂".encode(),
}


def written(
    contents: dict[str, bytes] = CONTENTS, identity: Identity = ADA, **options: Any
) -> bytes:
    out = io.BytesIO()
    writer = ArchiveWriter(out, identity, created=1_800_000_000, **options)
    for path, data in contents.items():
        writer.add(path, data)
    writer.close({"twin": "test"})
    return out.getvalue()


def read(raw: bytes, **key: Any) -> tuple[dict[str, bytes], dict[str, Any]]:
    reader = ArchiveReader(io.BytesIO(raw), **key)
    found = {path: b"".join(chunks) for path, chunks in reader.entries()}
    assert reader.manifest is not None
    return found, reader.manifest


def test_what_goes_in_comes_out_with_a_signed_manifest() -> None:
    found, manifest = read(written(), seed=ADA.seed)
    assert found == CONTENTS and list(found) == list(CONTENTS)  # in order
    assert manifest["did"] == ADA.did and manifest["twin"] == "test"
    assert manifest["entries"] == [
        [path, len(data), hashlib.sha256(data).hexdigest()] for path, data in CONTENTS.items()
    ]


def test_a_passphrase_archive_opens_with_its_passphrase_only() -> None:
    raw = written(passphrase="correct horse", cost=CHEAP)
    assert read(raw, passphrase="correct horse")[0] == CONTENTS
    with pytest.raises(WrongPassphrase, match="passphrase does not open"):
        read(raw, passphrase="wrong horse")
    with pytest.raises(WrongPassphrase, match="opens with the passphrase"):
        read(raw, seed=ADA.seed)


def test_the_wrong_recovery_phrase_is_told_so() -> None:
    raw = written()
    with pytest.raises(WrongPassphrase, match="recovery phrase does not open"):
        read(raw, seed=Identity.generate().seed)
    with pytest.raises(WrongPassphrase, match="opens with the twin's recovery phrase"):
        read(raw, passphrase="anything")


def test_a_cut_anywhere_is_noticed() -> None:
    raw = written()
    for cut in [*range(0, len(raw), 97), len(raw) - 1]:
        with pytest.raises(BadInput) as refused:
            read(raw[:cut], seed=ADA.seed)
        assert "cut off" in refused.value.message or "not a twin archive" in refused.value.message


def test_a_changed_byte_anywhere_is_noticed() -> None:
    raw = bytearray(written({"a.txt": b"hello " * 50, "b.bin": bytes(3000)}))
    for at in range(len(raw)):
        raw[at] ^= 0x20
        with pytest.raises(TwinError):  # damaged, not an archive, wrong key: never taken
            read(bytes(raw), seed=ADA.seed)
        raw[at] ^= 0x20
    assert read(bytes(raw), seed=ADA.seed)[0]["a.txt"] == b"hello " * 50


def test_bytes_after_the_end_are_refused() -> None:
    with pytest.raises(BadInput, match="after its end"):
        read(written() + b"\x00", seed=ADA.seed)


class Claiming:
    """Writes with one twin's seed (so the archive opens with its phrase) and signs as another."""

    def __init__(self, seed: bytes, did: str, signer: Identity) -> None:
        self.seed, self.did, self.sign = seed, did, signer.sign


def claimed(identity: Claiming) -> bytes:
    out = io.BytesIO()
    writer = ArchiveWriter(out, identity, created=1)  # type: ignore[arg-type]
    writer.add("profile.json", b"{}")
    writer.close()
    return out.getvalue()


def test_a_manifest_not_signed_by_the_twin_it_names_is_refused() -> None:
    # someone who holds the key writes an archive in Ada's name: it decrypts, but its
    # manifest's signature is not hers
    raw = claimed(Claiming(ADA.seed, ADA.did, Identity.generate()))
    with pytest.raises(InvalidSignature, match="not signed by"):
        read(raw, seed=ADA.seed)


def test_an_archive_signed_by_another_twin_is_not_this_phrases() -> None:
    grace = Identity.generate()
    raw = claimed(Claiming(ADA.seed, grace.did, grace))  # opens with Ada's phrase, Grace's
    with pytest.raises(InvalidSignature, match="not this recovery phrase's twin"):
        read(raw, seed=ADA.seed)


def test_entries_that_differ_from_the_manifest_are_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the manifest signed (by Ada) over other contents than the entries carry
    real_close = ArchiveWriter.close

    def lying_close(self: ArchiveWriter, extra: dict[str, Any] | None = None) -> Any:
        self._entries[0] = archive.Entry(
            self._entries[0].path, 2, hashlib.sha256(b"hi").hexdigest()
        )
        return real_close(self, extra)

    monkeypatch.setattr(ArchiveWriter, "close", lying_close)
    with pytest.raises(BadInput, match="not the ones its manifest lists"):
        read(written({"a": b"hello"}), seed=ADA.seed)


def header_of(raw: bytes) -> tuple[dict[str, Any], int]:
    size = struct.unpack(">I", raw[8:12])[0]
    return json.loads(raw[12 : 12 + size]), 12 + size


def test_a_newer_format_says_to_upgrade() -> None:
    raw = written()
    header, end = header_of(raw)
    header["version"] = 2
    newer = json.dumps(header).encode()
    with pytest.raises(BadInput, match="format 2, written by a newer twin.*upgrade twin"):
        read(MAGIC + struct.pack(">I", len(newer)) + newer + raw[end:], seed=ADA.seed)


@pytest.mark.parametrize(
    "raw",
    [b"", b"PK\x03\x04 a zip file", MAGIC + b"\xff\xff\xff\xff", MAGIC + b"\x00\x00\x00\x02{}"],
    ids=["empty", "zip", "huge-header", "not-ours"],
)
def test_what_is_not_an_archive_is_told_so(raw: bytes) -> None:
    with pytest.raises(BadInput):
        read(raw, seed=ADA.seed)


@pytest.mark.parametrize("path", ["/etc/passwd", "../up", "a//b", "a/./b", "a\\b", "", "a\nb"])
def test_entry_paths_stay_inside(path: str) -> None:
    with pytest.raises(BadInput):
        ArchiveWriter(io.BytesIO(), ADA).add(path, b"x")


def test_an_entry_is_written_as_it_streams_and_counted_in_the_manifest() -> None:
    out = io.BytesIO()
    writer = ArchiveWriter(out, ADA)
    pieces = [b"a" * 3, b"", b"b" * (archive.PIECE + 5)]  # empty and over-long pieces too
    entry = writer.add_stream("streamed.bin", iter(pieces))
    writer.close()
    assert entry.size == len(b"".join(pieces))
    found, manifest = read(out.getvalue(), seed=ADA.seed)
    assert found == {"streamed.bin": b"".join(pieces)}
    assert manifest["entries"][0][1] == entry.size


def test_a_large_entry_streams_through_in_little_memory() -> None:
    size = 24 * 1024 * 1024
    piece = bytes(range(256)) * 256  # 64 KiB

    def chunks() -> Iterator[bytes]:
        for _ in range(size // len(piece)):
            yield piece

    class Sink(io.RawIOBase):  # keeps nothing, so only the writer's own memory counts
        def write(self, data: Any) -> int:
            return len(data)

    kept = io.BytesIO()  # the bytes to read back, written before memory is counted
    writer = ArchiveWriter(kept, ADA)
    writer.add_stream("big.bin", chunks())
    writer.close()
    tracemalloc.start()
    try:
        sink = ArchiveWriter(Sink(), ADA)  # type: ignore[arg-type]
        sink.add_stream("big.bin", chunks())
        sink.close()
        _, writing_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        kept.seek(0)
        reader = ArchiveReader(kept, seed=ADA.seed)
        total = 0
        for _, parts in reader.entries():
            total += sum(len(p) for p in parts)
        _, reading_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == size and reader.manifest is not None
    assert writing_peak < 1024 * 1024 and reading_peak < 1024 * 1024
