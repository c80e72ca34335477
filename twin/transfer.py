"""Moving a whole twin: ``export_twin`` writes the twin's own part and every capability's into
a sink (an archive, a plain folder, a backup); ``restore_twin`` reads them back into a new,
empty twin with the same identity, which ``twin import`` puts in place only once all is read
and checked (twin/cli.py)."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twin.__about__ import __version__
from twin.errors import BadInput, InvalidSignature
from twin.export import Entries, Export, Part, Sink
from twin.identity import Identity

if TYPE_CHECKING:
    from twin.core import Twin

Progress = Callable[[str, int, int], None]  # part, entries so far, bytes so far
CORE = "twin"


class _Counted:
    """A sink that tells ``progress`` how far the export is, at most ten times a second."""

    def __init__(self, sink: Sink, progress: Progress | None) -> None:
        self._sink = sink
        self._progress = progress
        self.part = ""
        self.entries = 0
        self.bytes = 0
        self._told = 0.0

    def begin(self, path: str) -> None:
        self._sink.begin(path)

    def write(self, chunk: bytes) -> None:
        self._sink.write(chunk)
        self.bytes += len(chunk)
        if self._progress is not None and (now := time.monotonic()) - self._told > 0.1:
            self._told = now
            self._progress(self.part, self.entries, self.bytes)

    def end(self) -> Any:
        self.entries += 1
        return self._sink.end()

    async def drain(self) -> None:
        drain = getattr(self._sink, "drain", None)
        if drain is not None:
            await drain()

    def reuse(self, path: str, same_as: str) -> Any:
        """An entry a backup takes from its last snapshot (see ``Export.file``), or None."""
        reuse = getattr(self._sink, "reuse", None)
        entry = None if reuse is None else reuse(path, same_as)
        if entry is not None:
            self.entries += 1
            self.bytes += entry.size
        return entry

    def close(self, extra: dict[str, Any] | None = None) -> Any:
        return self._sink.close(extra)


async def export_twin(
    twin: Twin, sink: Sink, *, open: bool, progress: Progress | None = None
) -> list[tuple[str, Export]]:
    """Write the whole twin into ``sink`` and close it (signing its manifest); each part with
    what it wrote. ``progress`` hears of it as it goes."""
    counted = _Counted(sink, progress)
    parts: list[tuple[str, Export]] = []
    versions = {}
    capabilities = sorted((k, v) for k, v in twin.registry.loaded.items() if k != CORE)
    for folder, item in [(CORE, None), *capabilities]:
        counted.part = folder
        out = Export(counted, folder, open=open)
        if item is None:
            await export_core(twin, out)
        else:
            versions[folder] = item.manifest.version
            await item.capability.export(out)
        parts.append((folder, out))
        if progress is not None:
            progress(folder, counted.entries, counted.bytes)
    sink.close({"twin": __version__, "capabilities": versions})
    return parts


async def export_core(twin: Twin, out: Export) -> None:
    """The twin's own part, under ``twin/``: who it is, the twins it knows, the owner's
    passkeys, the experiences' grants and the backup schedule; in the encrypted archive only,
    the root seed and the envelopes still on their way to peers."""
    identity = twin.require_identity()
    await out.json(
        "identity.json",
        {"did": identity.did, "public_key": base64.b64encode(identity.public_key).decode()},
    )
    if not out.open:  # what a passphrase archive is imported with: never in the plain copy
        await out.json("key.json", {"seed": base64.b64encode(identity.seed).decode()})
    directory = twin.peers.directory
    await out.json(
        "peers.json",
        [
            {
                "did": p.did,
                "state": p.state,
                "addresses": list(p.urls),
                "address_expires": p.address_expires,
                "hint": directory.hint(p.id),
                "created": p.created,
                "last_seen": p.last_seen,
            }
            for p in await directory.all()
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
    if not out.open:  # sealed for each peer: of use only to this twin, sending them on
        await out.lines("outbox.jsonl", await twin.peers.outbox.waiting())
    schedule = await twin.backups.export()
    if schedule is not None:
        await out.json("backup.json", schedule)
    await out.json(
        "passkeys.json",
        {
            "rp_id": twin.passkeys.rp.id,
            "origin": twin.passkeys.rp.origin,
            "passkeys": await twin.passkeys.export(),
        },
    )


async def read_identity(entries: Entries) -> tuple[Part, str, bytes | None]:
    """The first entries of an export: ``twin/identity.json`` and (in an archive)
    ``twin/key.json``; the twin's part (to go on with), its did, and its seed if the export
    holds it."""
    if entries.folder() != CORE:
        raise BadInput("the export does not begin with the twin's own part: it is not a twin's")
    part = entries.part()
    first = await part.next()
    if first is None or first.name != "identity.json":
        raise BadInput("the export does not begin with twin/identity.json: it is not a twin's")
    identity = await first.json()
    if not isinstance(identity, dict) or not isinstance(identity.get("did"), str):
        raise BadInput("twin/identity.json names no did")
    did = identity["did"]
    if part.peek() != "key.json":
        return part, did, None
    item = await part.next()
    assert item is not None
    key = await item.json()
    try:
        seed = base64.b64decode(key["seed"], validate=True)
        if Identity.from_seed(seed).did != did:
            raise ValueError
    except (KeyError, TypeError, ValueError, BadInput):
        raise InvalidSignature("twin/key.json is not the key of the twin it names") from None
    return part, did, seed


async def restore_twin(
    twin: Twin, entries: Entries, core: Part, progress: Progress | None = None
) -> tuple[dict[str, int], str]:
    """Read the rest of an export into ``twin``, new and empty with the same identity: the
    rest of its own part ``core`` (from :func:`read_identity`), then every capability's. How
    many entries each part had, and what became of the owner's passkeys: ``kept`` (at the
    same address: a passkey is bound to it), ``left`` (another address) or ``none`` (the
    export held none)."""
    counts: dict[str, int] = {}
    kept_passkeys = await restore_core(twin, core)
    counts[CORE] = core.items
    while (folder := entries.folder()) is not None:
        loaded = twin.registry.loaded.get(folder)
        if loaded is None:
            raise BadInput(
                f"the export holds the data of the capability {folder!r}, which is not "
                "installed here: install it (pip install …), then import again"
            )
        part = entries.part()
        if progress is not None:
            progress(folder, 0, 0)
        await loaded.capability.restore(part)
        await part.rest()
        counts[folder] = part.items
    return counts, kept_passkeys


async def restore_core(twin: Twin, part: Part) -> str:
    """The rest of ``twin/``; what became of the passkeys (see :func:`restore_twin`)."""
    kept = "none"
    async for item in part:
        if item.name == "peers.json":
            peers = await item.json()
            if not isinstance(peers, list):
                raise BadInput("twin/peers.json is not a list of peers")
            await twin.peers.directory.restore(peers)
        elif item.name == "grants.json":
            grants = await item.json()
            if not isinstance(grants, dict):
                raise BadInput("twin/grants.json is not an object of grants")
            await twin.grants.restore(grants, twin.registry.experiences)
        elif item.name == "passkeys.json":
            held = await item.json()
            if not isinstance(held, dict) or not isinstance(held.get("passkeys"), list):
                raise BadInput("twin/passkeys.json holds no list of passkeys")
            if not held["passkeys"]:
                kept = "none"
            elif held.get("origin") == twin.passkeys.rp.origin:
                await twin.passkeys.restore(held["passkeys"])
                kept = "kept"
            else:
                kept = "left"
        elif item.name == "backup.json":
            await twin.backups.restore(await item.json())
        elif item.name == "outbox.jsonl":
            await twin.peers.outbox.restore([row async for row in item.lines()])
        else:
            item.skip()
    return kept
