"""WebDAV write locks (RFC 4918 class 2), held in memory: they end when the twin restarts,
and the ``If`` request header that submits their tokens and states conditions."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from twin import BadInput

MAX_TIMEOUT = 3600  # seconds; "Infinite" and longer requests get this, refreshed as needed
MAX_LOCKS = 10_000  # all principals together, so a client cannot fill memory with locks
_ETAG = re.compile(r'\[\s*((?:W/)?"[^"]*")\s*\]')


@dataclass
class Lock:
    token: str  # "urn:uuid:…"
    root: str  # the store path it was taken on
    folder: bool
    infinite: bool  # Depth: infinity (everything below a folder) or 0
    exclusive: bool
    owner: str  # the DAV:owner content the client gave, as XML text
    principal: str  # who took it: only they may submit its token
    timeout: int
    expires: float  # time.monotonic()

    def covers(self, path: str) -> bool:
        return path == self.root or (
            self.infinite and (not self.root or path.startswith(self.root + "/"))
        )

    def remaining(self) -> int:
        return max(0, int(self.expires - time.monotonic()))


class Locked(Exception):
    """A request that would change something locked, without submitting the lock's token."""

    def __init__(self, locks: Iterable[Lock]) -> None:
        self.locks = list(locks)
        super().__init__("locked")


def ancestors(path: str) -> list[str]:
    """ "a/b" -> ["", "a", "a/b"]: every folder a lock covering ``path`` may be rooted on."""
    if not path:
        return [""]
    parts = path.split("/")
    return [""] + ["/".join(parts[: i + 1]) for i in range(len(parts))]


def timeout_of(header: str | None) -> int:
    """Seconds from a ``Timeout: Second-600, Infinite`` header, capped at MAX_TIMEOUT."""
    for item in (header or "").split(","):
        item = item.strip().lower()
        if item == "infinite":
            return MAX_TIMEOUT
        if item.startswith("second-") and item[7:].isdigit():
            return max(1, min(MAX_TIMEOUT, int(item[7:])))
    return MAX_TIMEOUT


class Locks:
    """The twin's live locks, by token and by the path they were taken on."""

    def __init__(self) -> None:
        self._tokens: dict[str, Lock] = {}
        self._roots: dict[str, list[Lock]] = {}

    def __bool__(self) -> bool:
        return bool(self._tokens)

    def _expire(self) -> None:
        now = time.monotonic()
        for lock in [lock for lock in self._tokens.values() if lock.expires <= now]:
            self.remove(lock)

    def get(self, token: str) -> Lock | None:
        lock = self._tokens.get(token)
        if lock is not None and lock.expires <= time.monotonic():
            self.remove(lock)
            return None
        return lock

    def covering(self, path: str) -> list[Lock]:
        """The locks on ``path`` itself or on a folder above it with Depth: infinity."""
        if not self._tokens:
            return []
        self._expire()
        found = []
        for root in ancestors(path):
            found += [lock for lock in self._roots.get(root, ()) if lock.covers(path)]
        return found

    def within(self, path: str) -> list[Lock]:
        """The locks covering ``path`` and those taken on anything below it."""
        if not self._tokens:
            return []
        below = [
            lock for lock in self._tokens.values() if path == "" or lock.root.startswith(path + "/")
        ]
        return self.covering(path) + [lock for lock in below if lock.root != path]

    def conflicts(self, path: str, infinite: bool, exclusive: bool) -> list[Lock]:
        """Locks that a new lock on ``path`` could not coexist with."""
        held = self.within(path) if infinite else self.covering(path)
        return [lock for lock in held if exclusive or lock.exclusive]

    def create(
        self,
        path: str,
        *,
        folder: bool,
        infinite: bool,
        exclusive: bool,
        owner: str,
        principal: str,
        timeout: int,
    ) -> Lock:
        self._expire()
        if len(self._tokens) >= MAX_LOCKS:
            raise BadInput(f"the twin holds {MAX_LOCKS} locks already; unlock some first")
        lock = Lock(
            f"urn:uuid:{uuid.uuid4()}",
            path,
            folder,
            infinite,
            exclusive,
            owner,
            principal,
            timeout,
            time.monotonic() + timeout,
        )
        self._tokens[lock.token] = lock
        self._roots.setdefault(path, []).append(lock)
        return lock

    def refresh(self, lock: Lock, timeout: int) -> None:
        lock.timeout = timeout
        lock.expires = time.monotonic() + timeout

    def remove(self, lock: Lock) -> None:
        self._tokens.pop(lock.token, None)
        held = self._roots.get(lock.root, [])
        if lock in held:
            held.remove(lock)
        if not held:
            self._roots.pop(lock.root, None)

    def forget(self, path: str) -> None:
        """Drop the locks taken on ``path`` and below: what they locked is gone (or moved)."""
        for lock in [
            lock
            for lock in self._tokens.values()
            if lock.root == path or path == "" or lock.root.startswith(path + "/")
        ]:
            self.remove(lock)


# The If header (RFC 4918 section 10.4): lists of conditions, untagged (about the request's
# resource) or tagged with the resource they are about.


@dataclass(frozen=True)
class Condition:
    negate: bool
    token: str | None  # a state token (lock token) ...
    etag: str | None  # ... or an entity tag


@dataclass(frozen=True)
class IfList:
    resource: str | None  # the tag (a URL) or None for the request's own resource
    conditions: tuple[Condition, ...]


def parse_if(header: str) -> list[IfList]:
    """The If header's lists; BadInput when it does not follow the grammar."""
    lists: list[IfList] = []
    pos, end = 0, len(header)
    tagged: bool | None = None
    resource: str | None = None

    def bad(why: str) -> BadInput:
        return BadInput(f"the If header is malformed: {why} (at character {pos})")

    while True:
        while pos < end and header[pos] in " \t":
            pos += 1
        if pos >= end:
            break
        char = header[pos]
        if char == "<":
            if tagged is False:
                raise bad("tagged and untagged lists cannot be mixed")
            close = header.find(">", pos)
            if close < 0:
                raise bad("a resource tag is missing its '>'")
            tagged, resource = True, header[pos + 1 : close]
            pos = close + 1
        elif char == "(":
            if tagged is None:
                tagged = False
            pos += 1
            conditions: list[Condition] = []
            while True:
                while pos < end and header[pos] in " \t":
                    pos += 1
                if pos >= end:
                    raise bad("a list is missing its ')'")
                if header[pos] == ")":
                    pos += 1
                    break
                negate = header[pos : pos + 3].lower() == "not"
                if negate:
                    pos += 3
                    while pos < end and header[pos] in " \t":
                        pos += 1
                if header[pos : pos + 1] == "<":
                    close = header.find(">", pos)
                    if close < 0:
                        raise bad("a state token is missing its '>'")
                    conditions.append(Condition(negate, header[pos + 1 : close], None))
                    pos = close + 1
                elif header[pos : pos + 1] == "[":
                    etag = _ETAG.match(header, pos)
                    if etag is None:
                        raise bad("an entity tag is a quoted string in [ ]")
                    conditions.append(Condition(negate, None, etag.group(1)))
                    pos = etag.end()
                else:
                    raise bad("expected a <state token>, an [entity tag] or Not")
            if not conditions:
                raise bad("a list holds at least one condition")
            lists.append(IfList(resource if tagged else None, tuple(conditions)))
        else:
            raise bad(f"unexpected {char!r}")
    if not lists:
        raise bad("no list of conditions")
    return lists


def submitted(lists: Iterable[IfList]) -> set[str]:
    """The lock tokens an If header submits (every one not under Not)."""
    return {c.token for item in lists for c in item.conditions if c.token and not c.negate}


def _weak(etag: str) -> str:
    return etag[2:] if etag.startswith("W/") else etag


async def evaluate(
    lists: Iterable[IfList],
    resolve: Callable[[str | None], str | None],
    etag_of: Callable[[str], Awaitable[str | None]],
    locks: Locks,
) -> bool:
    """Whether one list holds: all its conditions true for its resource (``resolve`` maps a
    tag to a store path, None outside this door; ``etag_of`` gives a path's current ETag)."""
    etags: dict[str, str | None] = {}
    for item in lists:
        path = resolve(item.resource)
        holds = path is not None
        for condition in item.conditions:
            if not holds or path is None:
                break
            if condition.token is not None:
                lock = locks.get(condition.token)
                truth = lock is not None and lock.covers(path)
            else:
                if path not in etags:
                    etags[path] = await etag_of(path)
                current = etags[path]
                truth = current is not None and _weak(current) == _weak(condition.etag or "")
            holds = truth != condition.negate
        if holds:
            return True
    return False
