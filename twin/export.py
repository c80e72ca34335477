"""What ``twin export`` writes and ``twin import`` reads back: each capability's data, in open
formats, under a folder named by its id, in an encrypted archive (twin/archive.py) or a plain
folder (``--open``). A capability writes its part in ``Capability.export(out)`` and reads it
back, in the same order, in ``Capability.restore(part)``."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from twin.archive import Entry, check_path
from twin.errors import BadInput, Conflict, InvalidSignature
from twin.identity import Identity, verify


class Sink(Protocol):
    """Where entries go: an :class:`twin.archive.ArchiveWriter` or a :class:`Folder`."""

    def begin(self, path: str) -> None: ...

    def write(self, chunk: bytes) -> None: ...

    def end(self) -> Entry: ...

    def close(self, extra: dict[str, Any] | None = None) -> list[Entry]: ...


def json_bytes(value: Any) -> bytes:
    """A value as an export's JSON document: UTF-8, indented, keys sorted."""
    try:
        text = json.dumps(value, ensure_ascii=False, indent=2, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise BadInput(f"an export entry cannot be written as JSON: {exc}") from None
    return text.encode("utf-8") + b"\n"


def _line(row: Any) -> bytes:
    try:
        return (
            json.dumps(row, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode(
                "utf-8"
            )
            + b"\n"
        )
    except (TypeError, ValueError) as exc:
        raise BadInput(f"an export row cannot be written as JSON: {exc}") from None


class Export:
    """Where a capability writes what it keeps, for ``Capability.export``: entries under its
    own folder, in formats another program can read (JSON, JSON Lines, files as they are).
    The same calls make the encrypted archive and the plain folder of ``twin export --open``;
    ``open`` is True for the plain one, so a capability can leave out what only this twin
    needs (its keys).

        async def export(self, out: Export) -> None:
            await out.json("settings.json", {...})
            await out.lines("notes.jsonl", (note.as_dict() async for note in self.all()))
            await out.file(f"attachments/{name}", self.chunks_of(blob))
    """

    def __init__(self, sink: Sink, folder: str, *, open: bool) -> None:
        self._sink = sink
        self.folder = check_path(folder)
        self.open = open
        self.entries = 0
        self.bytes = 0

    async def json(self, name: str, value: Any) -> None:
        """One JSON document."""
        await self.file(name, (json_bytes(value),))

    async def lines(self, name: str, rows: AsyncIterable[Any] | Iterable[Any]) -> None:
        """JSON Lines: one compact JSON value a line, written as the rows come."""
        self._sink.begin(self._path(name))
        pending = bytearray()
        if isinstance(rows, AsyncIterable):
            async for row in rows:
                pending += _line(row)
                if len(pending) >= 256 * 1024:
                    await self._write(bytes(pending))
                    pending.clear()
        else:
            for row in rows:
                pending += _line(row)
                if len(pending) >= 256 * 1024:
                    await self._write(bytes(pending))
                    pending.clear()
        await self._write(bytes(pending))
        self._ended()

    async def file(
        self,
        name: str,
        chunks: AsyncIterable[bytes] | Iterable[bytes],
        *,
        same_as: str | None = None,
    ) -> None:
        """A file as it is, its bytes as they come. ``same_as`` is an id of these bytes that
        never names other bytes (a content token): a backup whose last snapshot holds them
        takes them from there, and ``chunks`` is not read."""
        path = self._path(name)
        if same_as is not None:
            reuse = getattr(self._sink, "reuse", None)
            entry = None if reuse is None else reuse(path, f"{self.folder}:{same_as}")
            if entry is not None:
                if isinstance(chunks, AsyncGenerator):
                    await chunks.aclose()
                self.entries += 1
                self.bytes += entry.size
                return
        self._sink.begin(path)
        if isinstance(chunks, AsyncIterable):
            async for chunk in chunks:
                await self._write(chunk)
        else:
            for chunk in chunks:
                await self._write(chunk)
        self._ended()

    async def _write(self, chunk: bytes) -> None:
        """Into the sink; a sink that writes on threads (a backup) holds the export back
        here, without holding the event loop, while its disk is behind."""
        self._sink.write(chunk)
        drain = getattr(self._sink, "drain", None)
        if drain is not None:
            await drain()

    def _path(self, name: str) -> str:
        return check_path(f"{self.folder}/{check_path(name)}")

    def _ended(self) -> None:
        entry = self._sink.end()
        self.entries += 1
        self.bytes += entry.size


class Folder:
    """The plain export: each entry a file under ``root``, and last ``manifest.json``, the
    same signed manifest an archive ends with."""

    def __init__(self, root: Path, identity: Identity, *, created: float) -> None:
        if root.exists() and (not root.is_dir() or any(root.iterdir())):
            raise Conflict(f"{root} is not an empty folder: give a new or empty one")
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._root = root.resolve()
        self._identity = identity
        self._created = created
        self._entries: list[Entry] = []
        self._current: tuple[str, Any, Any, list[int]] | None = None

    def begin(self, path: str) -> None:
        check_path(path)
        if path == "manifest.json":
            raise BadInput("manifest.json is the export's own")
        target = self._root / path
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        handle = open(target, "xb")  # noqa: SIM115 (closed in end())
        self._current = (path, handle, hashlib.sha256(), [0])

    def write(self, chunk: bytes) -> None:
        assert self._current is not None
        _, handle, digest, size = self._current
        handle.write(chunk)
        digest.update(chunk)
        size[0] += len(chunk)

    def end(self) -> Entry:
        assert self._current is not None
        path, handle, digest, size = self._current
        handle.close()
        self._current = None
        entry = Entry(path, size[0], digest.hexdigest())
        self._entries.append(entry)
        return entry

    def close(self, extra: dict[str, Any] | None = None) -> list[Entry]:
        manifest: dict[str, Any] = {
            **(extra or {}),
            "format": "twin-export",
            "version": 1,
            "did": self._identity.did,
            "created": int(self._created),
            "entries": [[e.path, e.size, e.sha256] for e in self._entries],
        }
        manifest["sig"] = self._identity.sign(manifest)
        (self._root / "manifest.json").write_bytes(json_bytes(manifest))
        return self._entries


def read_folder(root: Path) -> tuple[dict[str, Any], Iterator[tuple[str, Iterator[bytes]]]]:
    """A plain export's signed manifest, and its entries as an archive gives them, each file
    checked against the size and hash the manifest lists as it is read."""
    try:
        manifest = json.loads((root / "manifest.json").read_bytes())
    except FileNotFoundError:
        raise BadInput(f"{root} holds no manifest.json: it is not a twin export") from None
    except (OSError, ValueError) as exc:
        raise BadInput(f"{root}/manifest.json cannot be read as JSON: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != "twin-export":
        raise BadInput(f"{root}/manifest.json is not a twin export's")
    if type(manifest.get("version")) is not int or manifest["version"] > 1:
        raise BadInput(
            f"this export is format {manifest.get('version')}, written by a newer twin: "
            "upgrade twin, then try again"
        )
    unsigned = {k: v for k, v in manifest.items() if k != "sig"}
    try:
        verify(str(manifest.get("did")), unsigned, str(manifest.get("sig")))
    except (InvalidSignature, BadInput):
        raise InvalidSignature(
            f"the export's manifest is not signed by {manifest.get('did')}: it was altered"
        ) from None
    listed = manifest.get("entries")
    if not isinstance(listed, list) or not all(
        isinstance(e, list) and len(e) == 3 and type(e[1]) is int for e in listed
    ):
        raise BadInput("the export's manifest does not list its entries")
    base = root.resolve()

    def pieces(path: str, size: int, sha256: str) -> Iterator[bytes]:
        target = (base / path).resolve()
        if not target.is_relative_to(base):
            raise BadInput(f"{path} leads out of the export's folder")
        digest, seen = hashlib.sha256(), 0
        try:
            with open(target, "rb") as handle:
                while chunk := handle.read(1 << 20):
                    digest.update(chunk)
                    seen += len(chunk)
                    if seen > size:
                        break
                    yield chunk
        except FileNotFoundError:
            raise BadInput(f"{path} is missing from the export's folder") from None
        if seen != size or digest.hexdigest() != sha256:
            raise BadInput(f"{path} is not the file the manifest lists: it was changed")

    def entries() -> Iterator[tuple[str, Iterator[bytes]]]:
        for path, size, sha256 in listed:
            yield check_path(path), pieces(path, size, str(sha256))

    return manifest, entries()


MAX_JSON = 64 * 1024 * 1024  # one JSON document read back whole
MAX_LINE = 16 * 1024 * 1024  # one line of a JSON Lines entry


class Item:
    """One entry of a capability's part, as ``Capability.restore`` reads it: its ``name``
    (under the capability's folder) and its bytes, read once, in one of these ways."""

    def __init__(self, path: str, name: str, chunks: Iterator[bytes]) -> None:
        self.path = path
        self.name = name
        self._chunks = chunks
        self._taken = False

    async def chunks(self) -> AsyncIterator[bytes]:
        """The bytes as they come (an archive's pieces are at most 1 MiB)."""
        self._take()
        for chunk in self._chunks:
            yield chunk

    async def read(self, limit: int = MAX_JSON) -> bytes:
        """The whole entry; refused past ``limit`` bytes."""
        data = bytearray()
        async for chunk in self.chunks():
            data += chunk
            if len(data) > limit:
                raise BadInput(f"{self.path} is over {limit:,} bytes: it is not an export's")
        return bytes(data)

    async def json(self, limit: int = MAX_JSON) -> Any:
        """The entry as one JSON document."""
        try:
            return json.loads(await self.read(limit))
        except ValueError:
            raise BadInput(f"{self.path} is not JSON: the export is damaged") from None

    async def lines(self, limit: int = MAX_LINE) -> AsyncIterator[Any]:
        """The entry as JSON Lines: one value a line."""
        pending = bytearray()
        number = 0
        async for chunk in self.chunks():
            pending += chunk
            start = 0
            while (end := pending.find(b"\n", start)) >= 0:
                number += 1
                yield self._value(bytes(pending[start:end]), number)
                start = end + 1
            del pending[:start]
            if len(pending) > limit:
                raise BadInput(f"line {number + 1} of {self.path} is over {limit:,} bytes")
        if pending.strip():
            yield self._value(bytes(pending), number + 1)

    async def numbered(self, limit: int = MAX_LINE) -> AsyncIterator[tuple[str, Any]]:
        """The lines of :meth:`lines`, each with where it is (``line 3 of guestbook/x.jsonl``),
        to say in a refusal (see :func:`at`)."""
        number = 0
        async for value in self.lines(limit):
            number += 1
            yield f"line {number} of {self.path}", value

    def _value(self, line: bytes, number: int) -> Any:
        try:
            return json.loads(line)
        except ValueError:
            raise BadInput(f"line {number} of {self.path} is not JSON: it is damaged") from None

    def _take(self) -> None:
        if self._taken:
            raise RuntimeError(f"{self.path} was read already")
        self._taken = True

    def skip(self) -> None:
        """Read past what was not read (the archive still checks it)."""
        if not self._taken:
            self._taken = True
        for _ in self._chunks:
            pass


class Entries:
    """An export's entries (``(path, chunks)`` in order, from an archive, a plain folder or a
    backup), handed out a folder at a time; each must be read before the next is given."""

    def __init__(self, entries: Iterator[tuple[str, Iterator[bytes]]]) -> None:
        self._entries = entries
        self._next: tuple[str, Iterator[bytes]] | None = None
        self._current: Item | None = None
        self.done: list[str] = []  # the folders given out so far, in order

    def folder(self) -> str | None:
        """The folder of the next entry; None once all are read (and the manifest checked)."""
        if self._current is not None:
            self._current.skip()
            self._current = None
        if self._next is None:
            self._next = next(self._entries, None)
        return None if self._next is None else self._next[0].split("/", 1)[0]

    def part(self) -> Part:
        folder = self.folder()
        if folder is None:
            raise BadInput("the export ends before its parts")
        if folder in self.done:
            raise BadInput(f"the export's {folder}/ entries are not together: it is damaged")
        self.done.append(folder)
        return Part(folder, self)

    def _peek(self, folder: str) -> str | None:
        if self.folder() != folder:
            return None
        assert self._next is not None
        return self._next[0]

    def _take(self, folder: str) -> Item | None:
        if self.folder() != folder:
            return None
        assert self._next is not None
        path, chunks = self._next
        self._next = None
        self._current = Item(path, path[len(folder) + 1 :], chunks)
        return self._current


class Part:
    """A capability's part of an export, for ``Capability.restore``: its entries in the order
    ``export`` wrote them (so write first what must be read first).

        async def restore(self, part: Part) -> None:
            async for item in part:
                if item.name == "settings.json":
                    settings = await item.json()
                elif item.name == "notes.jsonl":
                    async for note in item.lines(): ...
                elif item.name.startswith("attachments/"):
                    await self.keep(item.name, item.chunks())
    """

    def __init__(self, folder: str, entries: Entries) -> None:
        self.folder = folder
        self._entries = entries
        self.items = 0

    async def __aiter__(self) -> AsyncIterator[Item]:
        while (item := await self.next()) is not None:
            yield item

    async def next(self) -> Item | None:
        """The next entry, or None at the end of the part."""
        item = self._entries._take(self.folder)
        if item is not None:
            self.items += 1
        return item

    async def expect(self, name: str) -> Item:
        """The next entry, which must be ``name`` (a part read in the order it was written)."""
        item = await self.next()
        if item is None or item.name != name:
            found = "nothing" if item is None else item.path
            raise BadInput(
                f"the export holds {found} where {self.folder}/{name} belongs: it is damaged"
            )
        return item

    def peek(self) -> str | None:
        """The name of the next entry, without reading it; None at the end of the part."""
        path = self._entries._peek(self.folder)
        return None if path is None else path[len(self.folder) + 1 :]

    async def rest(self) -> list[str]:
        """Read past the entries ``restore`` did not ask for; their names."""
        names = []
        async for item in self:
            names.append(item.name)
            item.skip()
        return names


MAX_TIME = 2**33  # seconds since 1970: past the year 2200


def whole(value: Any, what: str, least: int = 0) -> int:
    """``value`` if it is a whole number from ``least``, for checking what an export holds."""
    if type(value) is not int or not least <= value < 2**63:
        raise BadInput(f"{what} is a whole number from {least}, not {value!r:.80}")
    return value


def seconds(value: Any, what: str) -> float:
    """``value`` if it is a time (seconds since 1970, up to the year 2200)."""
    if type(value) not in (int, float) or not 0 <= value < MAX_TIME:
        raise BadInput(f"{what} is seconds since 1970, not {value!r:.80}")
    return float(value)


@contextmanager
def at(where: str) -> Iterator[None]:
    """Say where the input was that a check inside refused: ``line 3 of …: <why>``."""
    try:
        yield
    except BadInput as exc:
        raise BadInput(f"{where}: {exc.message}") from None
