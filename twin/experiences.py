"""Experiences: folders with ``experience.toml``, templates and static files, and no Python."""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from twin.errors import BadInput, PluginError
from twin.manifest import ID_PATTERN, Manifest, read_toml
from twin.scopes import parse_scopes

EXPERIENCE_FILE = "experience.toml"


def package_folder(package: str) -> Path:
    """The folder of one of the twin's data packages (``twin_web``, ``twin_capabilities``)."""
    spec = importlib.util.find_spec(package)
    assert spec is not None and spec.submodule_search_locations, f"{package} is not installed"
    return Path(list(spec.submodule_search_locations)[0])


def web_root() -> Path:
    """The shipped ``web/`` folder: the shell's templates and static files, built-in experiences."""
    return package_folder("twin_web")


_KNOWN_KEYS = {"id", "name", "description", "uses", "icon", "notifications"}


@dataclass(frozen=True)
class Experience:
    """A thin browser UI: what it is called, which scopes it uses, where its files are."""

    id: str
    name: str
    description: str
    uses: frozenset[str]
    root: Path
    source: str
    icon: str = ""
    notifications: bool = False  # its page runs in a frame of the shell, which shows them

    @property
    def templates(self) -> Path:
        return self.root / "templates"

    @property
    def static(self) -> Path:
        return self.root / "static"


def load_experience(root: Path, source: str, manifests: Mapping[str, Manifest]) -> Experience:
    """Read ``experience.toml`` in ``root``; each ``uses`` entry must name a real permission."""
    path = root / EXPERIENCE_FILE
    data = read_toml(path, "missing")
    unknown = sorted(set(data) - _KNOWN_KEYS)
    if unknown:
        raise PluginError(f"{path}: unknown field(s) {', '.join(unknown)}")
    exp_id = data.get("id")
    if not isinstance(exp_id, str) or not ID_PATTERN.fullmatch(exp_id):
        raise PluginError(f"{path}: id {exp_id!r} must match [a-z][a-z0-9_]*")
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        raise PluginError(f"{path}: name is required")
    description = data.get("description", "")
    icon = data.get("icon", "")
    notifications = data.get("notifications", False)
    if not isinstance(notifications, bool):
        raise PluginError(f"{path}: notifications must be true or false, not {notifications!r}")
    uses = data.get("uses", [])
    if not isinstance(uses, list) or not all(isinstance(u, str) for u in uses):
        raise PluginError(f'{path}: uses must be a list like ["files:read"]')
    if "*" in uses or any(u.endswith(":*") for u in uses):
        raise PluginError(f"{path}: uses must name each permission, not a wildcard")
    try:
        scopes = parse_scopes(uses, manifests) if uses else frozenset()
    except BadInput as exc:
        raise PluginError(f"{path}: {exc.message}") from None
    if not (root / "templates" / "index.html").is_file():
        raise PluginError(f"{path}: templates/index.html is missing")
    return Experience(
        exp_id, name.strip(), str(description), scopes, root, source, str(icon), notifications
    )
