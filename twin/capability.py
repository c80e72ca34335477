"""The base class of every capability (ours or a stranger's) and what it sees of the twin."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from twin.errors import PluginError

if TYPE_CHECKING:
    from twin.api import Endpoint
    from twin.db import Database, Migration
    from twin.doors import Door, Mount
    from twin.export import Export, Part
    from twin.manifest import Manifest
    from twin.peers import MessageType, PeerChannel
    from twin.settings import Settings
    from twin.vault import Box, Vault

C = TypeVar("C", bound="Capability")


@dataclass(frozen=True)
class Context:
    """The parts of the twin a capability may use: its database, its vault boxes, its peers."""

    manifest: Manifest
    db: Database
    vault: Vault
    settings: Settings
    did: str
    package_dir: Path
    required: Mapping[str, Capability]
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when the twin begins to stop: long answers (live streams) end then."""
    door: Door | None = None
    """Credentials, rate limits and the access log, for a capability's own ``mounts()``."""
    peers: PeerChannel | None = None
    """Other twins: send this capability's message types, read their delivery state."""

    def box(self, purpose: str = "data") -> Box:
        """An encryption box with a key derived for this capability and purpose."""
        return self.vault.box(self.manifest.id, purpose)

    @property
    def log(self) -> logging.Logger:
        return logging.getLogger(f"twin.cap.{self.manifest.id}")


@dataclass(frozen=True)
class Holding:
    """Something a capability keeps for the owner, as Settings shows it: a name (a namespace,
    a folder), how many items and bytes, and the limit if there is one."""

    name: str
    items: int
    bytes: int
    limit: int | None = None
    noun: str = "items"  # what the items are: "documents", "files"


class Capability:
    """Subclass this; the manifest comes from ``capability.toml`` beside your module.

    Importing a capability's module must touch no disk, network or database: do that in
    ``startup()``. Tables are prefixed with the capability id and created by ``migrations``.
    """

    migrations: Sequence[Migration] = ()

    def __init__(self, context: Context) -> None:
        self.context = context

    @property
    def id(self) -> str:
        return self.context.manifest.id

    @property
    def db(self) -> Database:
        return self.context.db

    def routes(self) -> Sequence[Endpoint]:
        """The endpoints this capability mounts under ``/api/<id>/``."""
        return ()

    def mounts(self) -> Sequence[Mount]:
        """Doors outside ``/api/`` this capability answers itself (``Mount("/dav", app)``);
        the app checks credentials through ``self.context.door``."""
        return ()

    def messages(self) -> Sequence[MessageType]:
        """The peer message types this capability sends and handles (``<id>.<name>``)."""
        return ()

    async def startup(self) -> None:
        """Runs once the capability's migrations are applied (the vault may still be locked)."""

    async def shutdown(self) -> None:
        """Runs when the twin stops."""

    async def export(self, out: Export) -> None:
        """Write what this capability keeps into ``out``, in formats another program can read,
        for ``twin export`` (docs/export-format.md). Default: nothing."""

    async def restore(self, part: Part) -> None:
        """Read back, into this capability's empty tables, what ``export`` wrote, for
        ``twin import``: the entries come in the order they were written. Default: there
        must be none (a capability that exports nothing has nothing to read back)."""
        names = await part.rest()
        if names:
            raise PluginError(
                f"{self.id} cannot import its data ({', '.join(names[:3])}): "
                "install a version of it that can"
            )

    async def holdings(self) -> Sequence[Holding]:
        """What this capability keeps, for the owner's Settings page (default: nothing shown)."""
        return ()

    async def check(self, data_dir: Path) -> Sequence[str]:
        """Problems with what this capability keeps in ``data_dir`` (its tables are the ones
        it sees), for ``twin check``; empty when all is well."""
        return ()

    async def public_document(self) -> Mapping[str, Any] | None:
        """What this capability publishes in ``/.well-known/twin`` under its id (None: nothing)."""
        return None

    def require(self, cls: type[C]) -> C:
        """Another capability this one declared in ``requires``, by class."""
        for other in self.context.required.values():
            if isinstance(other, cls):
                return other
        raise PluginError(f"{self.id} did not declare a requirement providing {cls.__name__}")
