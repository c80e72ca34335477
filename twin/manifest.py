"""Capability manifests: what a plugin declares about itself, checked before its code runs."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twin.errors import PluginError

ID_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,39}")
VERSION_PATTERN = re.compile(r"\d+(\.\d+){0,3}([.-]?[A-Za-z0-9.+-]+)?")
MANIFEST_FILE = "capability.toml"
_KNOWN_KEYS = {"id", "name", "version", "description", "requires", "permissions", "experiences"}


@dataclass(frozen=True)
class Permission:
    """A named permission with the sentence the owner sees when granting it."""

    name: str
    description: str
    obsolete: bool = False
    resource: str = ""  # what a scope may name after "@" (storage: "namespace"); "" for none


@dataclass(frozen=True)
class Manifest:
    """What a capability declares: id, version, permissions, requirements and experiences."""

    id: str
    name: str
    version: str
    description: str = ""
    permissions: Mapping[str, Permission] = field(default_factory=dict)
    requires: tuple[str, ...] = ()
    experiences: tuple[str, ...] = ()

    def permission(self, name: str) -> Permission | None:
        return self.permissions.get(name)


def read_toml(path: Path, missing: str) -> dict[str, Any]:
    """A plugin's TOML file; PluginError naming the file when it is ``missing`` or malformed."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PluginError(f"{path}: {missing}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise PluginError(f"{path}: not valid TOML ({exc})") from None


def load_manifest(path: Path, expected_id: str | None = None) -> Manifest:
    """Read and validate ``capability.toml``; raises PluginError naming the file and the fault."""
    data = read_toml(path, f"no {MANIFEST_FILE} next to the capability's code")
    return parse_manifest(data, str(path), expected_id)


def parse_manifest(
    data: Mapping[str, Any], source: str, expected_id: str | None = None
) -> Manifest:
    """Validate a manifest's fields; ``source`` names it in error messages."""

    def fail(message: str) -> PluginError:
        return PluginError(f"{source}: {message}")

    unknown = sorted(set(data) - _KNOWN_KEYS)
    if unknown:
        raise fail(f"unknown field(s) {', '.join(unknown)}")
    cap_id = data.get("id")
    if not isinstance(cap_id, str) or not ID_PATTERN.fullmatch(cap_id):
        raise fail(f"id {cap_id!r} must match [a-z][a-z0-9_]* (at most 40 characters)")
    if expected_id is not None and cap_id != expected_id:
        raise fail(f"id {cap_id!r} differs from its entry-point name {expected_id!r}")
    version = data.get("version")
    if not isinstance(version, str) or not VERSION_PATTERN.fullmatch(version):
        raise fail('version is required, like "1.0.0"')
    name = data.get("name", cap_id)
    description = data.get("description", "")
    if not isinstance(name, str) or not isinstance(description, str):
        raise fail("name and description must be strings")
    return Manifest(
        id=cap_id,
        name=name,
        version=version,
        description=description,
        permissions=_permissions(data.get("permissions", {}), fail),
        requires=_names(data.get("requires", []), "requires", fail),
        experiences=_names(data.get("experiences", []), "experiences", fail, pattern=None),
    )


def _permissions(raw: Any, fail: Any) -> dict[str, Permission]:
    if not isinstance(raw, Mapping):
        raise fail("permissions must be a table of [permissions.<name>] entries")
    permissions = {}
    for name, spec in raw.items():
        if not ID_PATTERN.fullmatch(name):
            raise fail(f"permission {name!r} must match [a-z][a-z0-9_]*")
        if not isinstance(spec, Mapping) or set(spec) - {"description", "obsolete", "resource"}:
            raise fail(f"permission {name!r} takes only description, obsolete and resource")
        description = spec.get("description")
        if not isinstance(description, str) or not description.strip():
            raise fail(f"permission {name!r} needs a description the owner can read")
        obsolete = spec.get("obsolete", False)
        if not isinstance(obsolete, bool):
            raise fail(f"permission {name!r}: obsolete must be true or false")
        resource = spec.get("resource", "")
        if not isinstance(resource, str) or len(resource) > 40:
            raise fail(f'permission {name!r}: resource must be a short noun, like "namespace"')
        permissions[name] = Permission(name, description.strip(), obsolete, resource.strip())
    return permissions


def _names(
    raw: Any, what: str, fail: Any, pattern: re.Pattern[str] | None = ID_PATTERN
) -> tuple[str, ...]:
    if not isinstance(raw, list) or not all(isinstance(item, str) for item in raw):
        raise fail(f"{what} must be a list of strings")
    for item in raw:
        if pattern is not None and not pattern.fullmatch(item):
            raise fail(f"{what} entry {item!r} is not a capability id")
        if pattern is None and (item.startswith("/") or ".." in Path(item).parts):
            raise fail(f"{what} entry {item!r} must be a folder inside the package")
    return tuple(raw)


def dependency_order(manifests: Iterable[Manifest]) -> tuple[list[Manifest], dict[str, str]]:
    """Order manifests so each comes after what it requires.

    Returns the loadable ones in order and, for the rest, the reason (a missing dependency or a
    cycle, named), so one broken plugin does not stop the others.
    """
    by_id = {m.id: m for m in manifests}
    failed: dict[str, str] = {}
    ordered: list[Manifest] = []
    state: dict[str, str] = {}

    def visit(cap_id: str, path: list[str]) -> bool:
        if cap_id in failed:
            return False
        if state.get(cap_id) == "done":
            return True
        if state.get(cap_id) == "visiting":
            cycle = path[path.index(cap_id) :] + [cap_id]
            reason = "dependency cycle: " + " -> ".join(cycle)
            for member in cycle:
                failed.setdefault(member, reason)
            return False
        state[cap_id] = "visiting"
        for dep in by_id[cap_id].requires:
            if dep not in by_id:
                failed[cap_id] = f"requires {dep!r}, which is not installed"
                return False
            if not visit(dep, path + [cap_id]):
                failed.setdefault(cap_id, f"requires {dep!r}, which could not be loaded")
                return False
        state[cap_id] = "done"
        ordered.append(by_id[cap_id])
        return True

    for cap_id in sorted(by_id):
        visit(cap_id, [])
    return ordered, failed
