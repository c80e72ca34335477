"""What ``twin export`` writes: each capability's data, in open formats, under a folder named
by its id, into an encrypted archive (twin/archive.py) or a plain folder (``--open``)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterable, Iterable
from pathlib import Path
from typing import Any, Protocol

from twin.archive import Entry, check_path
from twin.errors import BadInput, Conflict
from twin.identity import Identity


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
                    self._sink.write(bytes(pending))
                    pending.clear()
        else:
            for row in rows:
                pending += _line(row)
                if len(pending) >= 256 * 1024:
                    self._sink.write(bytes(pending))
                    pending.clear()
        self._sink.write(bytes(pending))
        self._ended()

    async def file(self, name: str, chunks: AsyncIterable[bytes] | Iterable[bytes]) -> None:
        """A file as it is, its bytes as they come."""
        self._sink.begin(self._path(name))
        if isinstance(chunks, AsyncIterable):
            async for chunk in chunks:
                self._sink.write(chunk)
        else:
            for chunk in chunks:
                self._sink.write(chunk)
        self._ended()

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


async def export_core(twin: Any, out: Export) -> None:
    """The twin's own part, under ``twin/``: who it is, the twins it knows, the owner's
    passkeys and the experiences' grants; the root seed only in the encrypted archive."""
    import base64

    identity: Identity = twin.require_identity()
    await out.json(
        "identity.json",
        {"did": identity.did, "public_key": base64.b64encode(identity.public_key).decode()},
    )
    if not out.open:  # what a passphrase archive is imported with: never in the plain copy
        await out.json("key.json", {"seed": base64.b64encode(identity.seed).decode()})
    peers = await twin.peers.directory.all()
    await out.json(
        "peers.json",
        [
            {
                "did": p.did,
                "state": p.state,
                "addresses": list(p.urls),
                "address_expires": p.address_expires,
                "hint": twin.peers.directory.hint(p.id),
                "created": p.created,
                "last_seen": p.last_seen,
            }
            for p in peers
        ],
    )
    grants = await twin.grants.all()
    await out.json(
        "grants.json",
        {
            name: {"scopes": sorted(g.scopes), "granted": g.granted}
            for name, g in sorted(grants.items())
        },
    )
    await out.json(
        "passkeys.json",
        [
            {"id": k.id, "name": k.name, "created": k.created, "last_used": k.last_used}
            for k in await twin.passkeys.all()
        ],
    )
