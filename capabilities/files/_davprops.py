"""WebDAV's property and lock methods: PROPFIND (live and dead properties, bounded depth),
PROPPATCH (dead properties, all or nothing), LOCK and UNLOCK."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from twin import BadInput, Conflict, Forbidden, PreconditionFailed, TooLarge

from . import _davxml as x
from ._davlocks import Lock, Locked, Locks, timeout_of
from ._paths import split

if TYPE_CHECKING:
    from ._dav import Exchange
    from ._store import FileStore
    from ._tree import Entry

WALK_LIMIT = 10_000  # entries a Depth: infinity PROPFIND may list
CHILDREN_PAGE = 1000
MULTISTATUS = b"application/xml; charset=utf-8"
SUPPORTED_LOCK = (
    "<D:supportedlock>"
    "<D:lockentry><D:lockscope><D:exclusive/></D:lockscope>"
    "<D:locktype><D:write/></D:locktype></D:lockentry>"
    "<D:lockentry><D:lockscope><D:shared/></D:lockscope>"
    "<D:locktype><D:write/></D:locktype></D:lockentry>"
    "</D:supportedlock>"
)
_FILE_ONLY = frozenset({x.DAV + "getcontentlength", x.DAV + "getcontenttype"})


def active_lock(lock: Lock) -> str:
    return (
        "<D:activelock><D:locktype><D:write/></D:locktype>"
        f"<D:lockscope><D:{'exclusive' if lock.exclusive else 'shared'}/></D:lockscope>"
        f"<D:depth>{'infinity' if lock.infinite else '0'}</D:depth>"
        + (f"<D:owner>{lock.owner}</D:owner>" if lock.owner else "")
        + f"<D:timeout>Second-{lock.remaining()}</D:timeout>"
        f"<D:locktoken><D:href>{lock.token}</D:href></D:locktoken>"
        f"<D:lockroot><D:href>{x.href(lock.root, lock.folder)}</D:href></D:lockroot>"
        "</D:activelock>"
    )


def discovery(lock: Lock) -> bytes:
    """A LOCK's answer: the lock it took or refreshed."""
    body = f'<D:prop xmlns:D="DAV:"><D:lockdiscovery>{active_lock(lock)}</D:lockdiscovery></D:prop>'
    return x.XML_HEADER + body.encode()


def checksums(store: FileStore, entry: Entry) -> str | None:
    """ownCloud's checksums property: the content's SHA-1 and MD5 (None for a folder)."""
    digests = store.digests(entry)
    if not digests:
        return None
    return (
        '<oc:checksums xmlns:oc="http://owncloud.org/ns"><oc:checksum>'
        f"SHA1:{digests['sha1']} MD5:{digests['md5']}</oc:checksum></oc:checksums>"
    )


def live(name: str, entry: Entry, locks: Locks) -> str | None:
    """A live property's XML for ``entry``, None where it has none (a folder's length)."""
    folder = entry.kind == "folder"
    local = name[len(x.DAV) :]
    if local == "resourcetype":
        return "<D:resourcetype><D:collection/></D:resourcetype>" if folder else "<D:resourcetype/>"
    if local == "getlastmodified":
        return f"<D:getlastmodified>{x.http_date(entry.modified)}</D:getlastmodified>"
    if local == "getcontentlength":
        return None if folder else f"<D:getcontentlength>{entry.size}</D:getcontentlength>"
    if local == "getetag":
        return f"<D:getetag>{x.escape(entry.etag)}</D:getetag>" if entry.etag else None
    if local == "getcontenttype":
        if folder:
            return None
        return f"<D:getcontenttype>{x.escape(entry.media_type)}</D:getcontenttype>"
    if local == "displayname":
        return f"<D:displayname>{x.escape(entry.name)}</D:displayname>"
    if local == "creationdate":
        return f"<D:creationdate>{x.rfc3339(entry.created)}</D:creationdate>"
    if local == "supportedlock":
        return SUPPORTED_LOCK
    if local == "lockdiscovery":
        held = "".join(active_lock(lock) for lock in locks.covering(entry.path))
        return f"<D:lockdiscovery>{held}</D:lockdiscovery>"
    return None


async def describe(ex: Exchange, entry: Entry, asked: x.PropfindRequest) -> str:
    """One entry's DAV:response for a PROPFIND."""
    href = x.href(entry.path, entry.kind == "folder")
    folder = entry.kind == "folder"
    if asked.mode == "prop":
        wanted = asked.names
        dead = {}
        if any(name not in x.LIVE_NAMES for name in wanted):
            dead = await ex.store.properties(entry)
        have: list[str] = []
        missing: list[str] = []
        for name in wanted:
            if name == x.OC_CHECKSUMS:
                value = checksums(ex.store, entry)
            else:
                value = live(name, entry, ex.locks) if name in x.LIVE_NAMES else None
            if value is None and name in dead:
                value = dead[name].decode()
            (have if value is not None else missing).append(value or x.empty_element(name))
        stats = [(200, "".join(have))] if have else []
        if missing:
            stats.append((404, "".join(missing)))
        return x.response(href, stats)
    names = [x.DAV + n for n in x.LIVE if not (folder and x.DAV + n in _FILE_ONLY)]
    if not entry.etag:
        names.remove(x.DAV + "getetag")
    dead = await ex.store.properties(entry)
    if asked.mode == "propname":
        return x.response(href, [(200, "".join(x.empty_element(n) for n in [*names, *dead]))])
    values = [live(n, entry, ex.locks) or "" for n in names]
    values += [value.decode() for value in dead.values()]
    return x.response(href, [(200, "".join(values))])


async def propfind(ex: Exchange) -> None:
    depth = ex.depth(("0", "1", "infinity"))
    asked = x.propfind_request(x.parse(await ex.read()))
    entry = await ex.store.stat(ex.path)
    if depth == "infinity":
        try:
            entries = await ex.store.walk(ex.path, limit=WALK_LIMIT)
        except TooLarge:
            await ex.respond(403, x.error("propfind-finite-depth"), content_type=MULTISTATUS)
            return
    else:
        entries = [entry]
    if depth == "0" or entry.kind != "folder" or depth == "infinity":
        parts = [x.MULTISTATUS_OPEN]
        parts += [(await describe(ex, e, asked)).encode() for e in entries]
        parts.append(x.MULTISTATUS_CLOSE)
        await ex.respond(207, b"".join(parts), content_type=MULTISTATUS)
        return

    async def pages() -> AsyncIterator[bytes]:
        yield x.MULTISTATUS_OPEN + (await describe(ex, entry, asked)).encode()
        after = 0
        while True:
            children = await ex.store.children(entry.path, limit=CHILDREN_PAGE, after=after)
            yield "".join([await describe(ex, c, asked) for c in children]).encode()
            if len(children) < CHILDREN_PAGE:
                break
            after = children[-1].id
        yield x.MULTISTATUS_CLOSE

    await ex.stream(207, [(b"content-type", MULTISTATUS)], pages())


async def proppatch(ex: Exchange) -> None:
    updates = x.proppatch_request(x.parse(await ex.read()))
    entry = await ex.store.stat(ex.path)
    ex.unlocked(covering=[ex.path])
    values: dict[str, bytes] = {}
    removed: set[str] = set()
    refused: set[str] = set()
    for action, name, element in updates:
        if name in x.LIVE_NAMES:
            refused.add(name)
        elif action == "set":
            values[name] = x.serialize(element)
            removed.discard(name)
        else:
            removed.add(name)
            values.pop(name, None)
    names = list(dict.fromkeys(name for _, name, _ in updates))
    if refused:
        stats = [(403, "".join(x.empty_element(n) for n in names if n in refused))]
        others = [n for n in names if n not in refused]
        if others:
            stats.append((424, "".join(x.empty_element(n) for n in others)))
    else:
        await ex.store.set_properties(entry, values, removed)
        stats = [(200, "".join(x.empty_element(n) for n in names))]
    body = x.response(x.href(entry.path, entry.kind == "folder"), stats).encode()
    await ex.respond(207, x.MULTISTATUS_OPEN + body + x.MULTISTATUS_CLOSE, content_type=MULTISTATUS)


async def _empty() -> AsyncIterator[bytes]:
    return
    yield b""  # an async generator with nothing in it


async def lock(ex: Exchange) -> None:
    root = x.parse(await ex.read())
    timeout = timeout_of(ex.headers.get("timeout"))
    if root is None:
        await refresh(ex, timeout)
        return
    asked = x.lock_request(root)
    infinite = ex.depth(("0", "infinity")) == "infinity"
    conflicts = ex.locks.conflicts(ex.path, infinite, asked.exclusive)
    if conflicts:
        hrefs = [x.href(c.root, c.folder) for c in conflicts]
        await ex.respond(423, x.error("no-conflicting-lock", hrefs), content_type=MULTISTATUS)
        return
    entry = await ex.store.find(ex.path)
    created = entry is None
    if entry is None:  # a lock on an unmapped URL makes an empty file to hold it
        ex.unlocked(covering=[split(ex.path)[0]])
        try:
            entry, _ = await ex.store.write(ex.path, _empty(), length=0, if_none_match=True)
        except Conflict as exc:
            raise Conflict(
                f"{exc.message} (a LOCK creates a file only in an existing folder)"
            ) from None
    assert ex.principal is not None
    held = ex.locks.create(
        ex.path,
        folder=entry.kind == "folder",
        infinite=infinite,
        exclusive=asked.exclusive,
        owner=asked.owner,
        principal=ex.principal.label,
        timeout=timeout,
    )
    await ex.respond(
        201 if created else 200,
        discovery(held),
        [(b"lock-token", f"<{held.token}>".encode())],
        MULTISTATUS,
    )


async def refresh(ex: Exchange, timeout: int) -> None:
    """LOCK without a body: extend the lock whose token the If header names."""
    if not ex.tokens:
        raise BadInput("a LOCK without a body refreshes a lock: name its token in the If header")
    for token in ex.tokens:
        held = ex.locks.get(token)
        if held is not None and held.covers(ex.path) and ex.holds(held):
            ex.locks.refresh(held, timeout)
            await ex.respond(200, discovery(held), content_type=MULTISTATUS)
            return
    raise PreconditionFailed("the If header names no lock of yours on this resource to refresh")


async def unlock(ex: Exchange) -> None:
    token = ex.headers.get("lock-token", "").strip().removeprefix("<").removesuffix(">")
    if not token:
        raise BadInput("UNLOCK needs a Lock-Token header: <urn:uuid:…>")
    held = ex.locks.get(token)
    if held is None or not held.covers(ex.path):
        await ex.respond(409, x.error("lock-token-matches-request-uri"), content_type=MULTISTATUS)
        return
    if ex.principal is None or held.principal != ex.principal.label:
        raise Forbidden("only the token that took a lock may release it")
    ex.locks.remove(held)
    await ex.respond(204)


__all__ = ["Locked", "lock", "propfind", "proppatch", "unlock"]
