"""Scopes (``cap:permission``, ``cap:permission@resource``, ``cap:*``, ``*``) and the principal
a request acts as."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from twin.errors import BadInput
from twin.manifest import Manifest

SCOPE_PATTERN = re.compile(
    r"\*|[a-z][a-z0-9_]{0,39}:(\*|[a-z][a-z0-9_]{0,39}(@[a-z][a-z0-9_]{0,39})?)"
)
MAX_SCOPES = 64


def parse_scopes(scopes: Iterable[str], manifests: Mapping[str, Manifest]) -> frozenset[str]:
    """Check each scope's form and that it names a real, current permission."""
    result = set()
    for scope in scopes:
        if not isinstance(scope, str) or not SCOPE_PATTERN.fullmatch(scope):
            raise BadInput(
                f"scope {scope!r} must look like files:read, storage:read@notes, files:* or *"
            )
        if scope != "*":
            cap_id, _, rest = scope.partition(":")
            permission, _, resource = rest.partition("@")
            manifest = manifests.get(cap_id)
            if manifest is None:
                raise BadInput(f"scope {scope!r}: no capability {cap_id!r} is installed")
            if permission != "*":
                declared = manifest.permission(permission)
                if declared is None:
                    known = ", ".join(sorted(manifest.permissions)) or "none"
                    raise BadInput(
                        f"scope {scope!r}: {cap_id} has no permission "
                        f"{permission!r} (it has: {known})"
                    )
                if declared.obsolete:
                    raise BadInput(f"scope {scope!r}: that permission is obsolete")
                if resource and not declared.resource:
                    raise BadInput(
                        f"scope {scope!r}: {cap_id}:{permission} takes no @name after it"
                    )
        result.add(scope)
    if not result:
        raise BadInput("give at least one scope")
    if len(result) > MAX_SCOPES:
        raise BadInput(f"at most {MAX_SCOPES} scopes")
    return frozenset(result)


def covers(
    scopes: frozenset[str], capability: str, permission: str, resource: str | None = None
) -> bool:
    """Whether ``scopes`` include ``capability:permission`` unqualified, or for ``resource``."""
    return (
        "*" in scopes
        or f"{capability}:*" in scopes
        or f"{capability}:{permission}" in scopes
        or (resource is not None and f"{capability}:{permission}@{resource}" in scopes)
    )


def reaches(scopes: frozenset[str], capability: str, permission: str) -> bool:
    """Whether ``scopes`` include ``capability:permission`` for anything at all."""
    prefix = f"{capability}:{permission}@"
    return covers(scopes, capability, permission) or any(s.startswith(prefix) for s in scopes)


def beyond(requested: frozenset[str], held: frozenset[str]) -> list[str]:
    """The requested scopes that ``held`` does not include (wildcards need wildcards)."""
    extra = []
    for scope in sorted(requested):
        if scope == "*":
            ok = "*" in held
        else:
            cap_id, _, rest = scope.partition(":")
            permission, _, resource = rest.partition("@")
            ok = (
                ("*" in held or f"{cap_id}:*" in held)
                if permission == "*"
                else covers(held, cap_id, permission, resource or None)
            )
        if not ok:
            extra.append(scope)
    return extra


@dataclass(frozen=True)
class Principal:
    """Who a request acts for: the owner, one of their tokens, or an experience."""

    kind: str  # "owner", "token", "experience", "public"
    id: str
    scopes: frozenset[str]

    def allows(self, capability: str, permission: str) -> bool:
        """Whether it holds the permission at all (for one resource is enough): the gate of
        every endpoint; a capability whose permission names resources checks which."""
        return reaches(self.scopes, capability, permission)

    def allows_on(self, capability: str, permission: str, resource: str) -> bool:
        """Whether it holds the permission for ``resource``: a scope naming it, or an
        unqualified one."""
        return covers(self.scopes, capability, permission, resource)

    @property
    def label(self) -> str:
        return f"{self.kind}:{self.id}"


PUBLIC = Principal("public", "-", frozenset())
