"""The capability registry: finds plugins by entry point, reads their manifests before importing
them, orders them by ``requires`` and loads them; one broken plugin does not stop the rest."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from importlib.machinery import ModuleSpec
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any

from twin.api import Endpoint
from twin.capability import Capability, Context
from twin.db import Database
from twin.doors import Door, Mount, check_mounts
from twin.errors import PluginError, TwinError
from twin.experiences import Experience, load_experience
from twin.manifest import MANIFEST_FILE, Manifest, dependency_order, load_manifest
from twin.peers import Peers
from twin.settings import Settings
from twin.vault import Vault

GROUP = "twin.capabilities"
# The core's own names: API paths, and the fields of the signed public document, where each
# capability's part stands under its id.
RESERVED_IDS = frozenset(
    {
        "twin",
        "health",
        "openapi",
        "type",
        "did",
        "version",
        "endpoints",
        "issued",
        "expires",
        "signature",
    }
)
log = logging.getLogger("twin.registry")
Factory = Callable[[Context], Capability]
Builtin = tuple[Factory, Manifest, Path]
"""A capability that ships inside the core: how to build it, its manifest, its folder."""


@dataclass(frozen=True)
class Source:
    """Where a capability comes from: its entry point and the distribution that ships it."""

    id: str
    value: str
    distribution: str
    entry_point: EntryPoint | None = None

    @property
    def module(self) -> str:
        return self.value.partition(":")[0].strip()


def find_sources(eps: Iterable[EntryPoint] | None = None) -> list[Source]:
    """Every capability entry point installed; two distributions offering one id is fatal."""
    eps = entry_points(group=GROUP) if eps is None else eps
    by_id: dict[str, Source] = {}
    for ep in eps:
        dist = ep.dist.name if ep.dist is not None else "(unknown distribution)"
        source = Source(ep.name, ep.value, dist, ep)
        seen = by_id.get(ep.name)
        if seen is not None and seen.distribution != dist:
            raise PluginError(
                f"capability id {ep.name!r} is provided by two packages: "
                f"{seen.distribution} ({seen.value}) and {dist} ({ep.value}); "
                "uninstall one of them"
            )
        by_id.setdefault(ep.name, source)
    return [by_id[k] for k in sorted(by_id)]


def _find_spec(module: str) -> ModuleSpec | None:
    """Like ``importlib.util.find_spec``, but without importing the parent packages: for
    ``pkg.cap`` that would run ``pkg/__init__.py``, plugin code, before its manifest is read."""
    spec: ModuleSpec | None = None
    path: list[str] | None = None
    parts = module.split(".")
    for depth in range(1, len(parts) + 1):
        if spec is not None:
            if spec.submodule_search_locations is None:
                return None
            path = list(spec.submodule_search_locations)
        name = ".".join(parts[:depth])
        loaded = sys.modules.get(name)
        if loaded is not None:
            spec = getattr(loaded, "__spec__", None)
        else:
            spec = next(
                (
                    found
                    for finder in sys.meta_path
                    if hasattr(finder, "find_spec")
                    and (found := finder.find_spec(name, path)) is not None
                ),
                None,
            )
        if spec is None:
            return None
    return spec


def package_dir(source: Source) -> Path:
    """The folder holding the capability's module, found without running the module."""
    try:
        spec = _find_spec(source.module)
    except (ImportError, ValueError) as exc:
        raise PluginError(f"{source.id}: cannot find module {source.module!r} ({exc})") from None
    if spec is None or spec.origin is None:
        raise PluginError(f"{source.id}: module {source.module!r} is not installed")
    folder = Path(spec.origin).parent
    if spec.submodule_search_locations is None and "." not in source.module:
        raise PluginError(
            f"{source.id}: put the capability in a package, next to its "
            f"{MANIFEST_FILE}, not in a top-level module"
        )
    return folder


@dataclass
class Loaded:
    """One capability that started: its instance and its manifest."""

    capability: Capability
    manifest: Manifest
    endpoints: Sequence[Endpoint]
    source: str
    mounts: Sequence[Mount] = ()


@dataclass
class Registry:
    """Capabilities and experiences that loaded, and the reasons for those that did not."""

    loaded: dict[str, Loaded] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    experiences: dict[str, Experience] = field(default_factory=dict)

    @property
    def doors(self) -> dict[str, str]:
        """Each mounted door's path, and the capability answering it."""
        return {m.path: cap_id for cap_id, item in self.loaded.items() for m in item.mounts}

    @property
    def manifests(self) -> dict[str, Manifest]:
        return {cap_id: item.manifest for cap_id, item in self.loaded.items()}

    def declared(self, experience: str) -> frozenset[str]:
        found = self.experiences.get(experience)
        return found.uses if found else frozenset()

    def fail(self, cap_id: str, reason: str) -> None:
        what = cap_id if cap_id.startswith("experience ") else f"capability {cap_id}"
        log.error("%s disabled: %s", what, reason)
        self.failed[cap_id] = reason

    async def load(
        self,
        builtin: Sequence[Builtin],
        sources: Sequence[Source],
        *,
        db: Database,
        vault: Vault,
        settings: Settings,
        did: str,
        experience_dirs: Sequence[Path],
        stopping: asyncio.Event | None = None,
        door: Door | None = None,
        peers: Peers | None = None,
    ) -> None:
        """Read every manifest, then import, migrate and start capabilities in dependency order."""
        manifests: dict[str, tuple[Manifest, Path, Source | None]] = {}
        for _, manifest, folder in builtin:
            manifests[manifest.id] = (manifest, folder, None)
        for source in sources:
            try:
                if source.id in RESERVED_IDS:
                    raise PluginError(f"{source.id!r} is reserved for the twin's core")
                folder = package_dir(source)
                manifest = load_manifest(folder / MANIFEST_FILE, expected_id=source.id)
            except TwinError as exc:
                self.fail(source.id, exc.message)
                continue
            manifests[manifest.id] = (manifest, folder, source)
        ordered, unresolved = dependency_order(m for m, _, _ in manifests.values())
        for cap_id, reason in unresolved.items():
            self.fail(cap_id, reason)
        factories = {manifest.id: factory for factory, manifest, _ in builtin}
        for manifest in ordered:
            _, folder, origin = manifests[manifest.id]
            missing = [dep for dep in manifest.requires if dep not in self.loaded]
            if missing:
                self.fail(manifest.id, f"requires {', '.join(missing)}, which could not be loaded")
                continue
            try:
                factory = factories.get(manifest.id) or _import(origin)
                context = Context(
                    manifest,
                    db,
                    vault,
                    settings,
                    did,
                    folder,
                    {dep: self.loaded[dep].capability for dep in manifest.requires},
                    stopping or asyncio.Event(),
                    door,
                    peers.channel(manifest.id) if peers is not None else None,
                )
                await _record_permissions(db, manifest)
                capability = factory(context)
                await db.migrate(manifest.id, capability.migrations)
                endpoints = _check_routes(manifest, capability.routes())
                mounts = check_mounts(manifest.id, capability.mounts(), self.doors)
                await capability.startup()
                if peers is not None:
                    peers.register(manifest.id, capability.messages())
            except Exception as exc:  # a broken plugin is logged and skipped, never fatal here
                reason = (
                    exc.message if isinstance(exc, TwinError) else f"{type(exc).__name__}: {exc}"
                )
                self.fail(manifest.id, reason)
                continue
            label = origin.distribution if origin else "twin (built in)"
            self.loaded[manifest.id] = Loaded(capability, manifest, endpoints, label, mounts)
        self._load_experiences(experience_dirs)

    def _load_experiences(self, experience_dirs: Sequence[Path]) -> None:
        roots = [(d, "twin (built in)") for d in experience_dirs]
        for item in self.loaded.values():
            folder = item.capability.context.package_dir
            roots += [(folder / sub, item.source) for sub in item.manifest.experiences]
        manifests = self.manifests
        for root, source in roots:
            try:
                experience = load_experience(root, source, manifests)
                if experience.id in self.experiences:
                    raise PluginError(
                        f"{root}: experience id {experience.id!r} is already "
                        f"used by {self.experiences[experience.id].root}"
                    )
            except PluginError as exc:
                self.fail(f"experience {root.name}", exc.message)
                continue
            self.experiences[experience.id] = experience

    async def shutdown(self) -> None:
        for item in reversed(list(self.loaded.values())):
            try:
                await item.capability.shutdown()
            except Exception:
                log.exception("capability %s failed to shut down", item.manifest.id)


def _import(source: Source | None) -> Factory:
    if source is None or source.entry_point is None:
        raise PluginError("no entry point to import")
    cls: Any = source.entry_point.load()
    if not (isinstance(cls, type) and issubclass(cls, Capability)):
        raise PluginError(f"{source.value} is not a subclass of twin.Capability")
    return cls


async def _record_permissions(db: Database, manifest: Manifest) -> None:
    """Permissions are never deleted, only marked obsolete: refuse a manifest that dropped one."""
    rows = await db.fetchall(
        "SELECT permission FROM twin_permissions WHERE capability = ?", (manifest.id,)
    )
    dropped = sorted({r["permission"] for r in rows} - set(manifest.permissions))
    if dropped:
        raise PluginError(
            f"permission(s) {', '.join(dropped)} disappeared from the manifest; "
            "keep them with obsolete = true instead of deleting them"
        )
    await db.executemany(
        "INSERT OR IGNORE INTO twin_permissions (capability, permission) VALUES (?, ?)",
        [(manifest.id, name) for name in manifest.permissions],
    )


def _check_routes(manifest: Manifest, endpoints: Iterable[Endpoint]) -> list[Endpoint]:
    checked = []
    for endpoint in endpoints:
        if not isinstance(endpoint, Endpoint):
            raise PluginError(f"routes() returned {endpoint!r}, not an Endpoint")
        if endpoint.permission is not None and endpoint.permission not in manifest.permissions:
            raise PluginError(
                f"route {endpoint.method} {endpoint.path} needs permission "
                f"{endpoint.permission!r}, which the manifest does not declare"
            )
        if not endpoint.path.startswith("/"):
            raise PluginError(f"route path {endpoint.path!r} must start with /")
        checked.append(endpoint)
    return checked


def installed_manifests(
    sources: Sequence[Source] | None = None,
) -> tuple[dict[str, Manifest], dict[str, str]]:
    """Every installed capability's manifest, read without importing any plugin code."""
    from twin.admin import MANIFEST

    manifests = {MANIFEST.id: MANIFEST}
    failed: dict[str, str] = {}
    for source in find_sources() if sources is None else sources:
        try:
            manifest = load_manifest(package_dir(source) / MANIFEST_FILE, expected_id=source.id)
        except TwinError as exc:
            failed[source.id] = exc.message
            continue
        manifests[manifest.id] = manifest
    return manifests, failed
