"""The WebDAV door at ``/dav/`` (RFC 4918, classes 1 and 2): who may ask and how often, then
each method over the file store. PROPFIND, PROPPATCH, LOCK and UNLOCK live in ``_davprops``.

Plain ASGI on purpose: a file client makes many small requests, and each one should cost a
dictionary lookup and the store's work, not a router's regular expressions."""

from __future__ import annotations

import html
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Protocol
from urllib.parse import unquote_to_bytes, urlsplit

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from twin import BadInput, Conflict, Forbidden, NotFound, PreconditionFailed, TooLarge
from twin.errors import RateLimited, TwinError, Unauthorized, UnsupportedMedia, VaultLocked
from twin.http import status_of
from twin.scopes import Principal

from . import _davprops, _davxml, _send
from ._davlocks import IfList, Lock, Locked, Locks, evaluate, parse_if, submitted
from ._paths import check_path, split
from ._send import ContentResponse
from ._tree import etag_matches

if TYPE_CHECKING:
    from twin.capability import Context

    from ._store import FileStore
    from ._tree import Entry

READS = frozenset({"GET", "HEAD", "PROPFIND", "OPTIONS"})
ALLOW = "OPTIONS, GET, HEAD, PUT, DELETE, MKCOL, COPY, MOVE, PROPFIND, PROPPATCH, LOCK, UNLOCK"
TEXT = b"text/plain; charset=utf-8"
# A file may be HTML or SVG: opened from /dav/ in a browser it must not act as the twin's page.
SANDBOX = (b"content-security-policy", _send.SANDBOX.encode())
OPTIONS_HEADERS = [
    (b"dav", b"1, 2"),
    (b"allow", ALLOW.encode()),
    (b"ms-author-via", b"DAV"),
    (b"accept-ranges", b"bytes"),
]
NO_CREDENTIALS = (
    "this is the twin's WebDAV door: connect with any user name and a token as the password "
    "(create one with `twin token create --scope files:*`)"
)
UNAUTHORIZED_HEADERS = [(b"www-authenticate", b'Basic realm="twin"')]
LISTING_PAGE = 1000
DEFAULT_PORTS = {"http": ":80", "https": ":443"}


class FilesCapability(Protocol):
    """What the door needs of the files capability (the store may appear only at start-up)."""

    @property
    def store(self) -> FileStore: ...

    @property
    def context(self) -> Context: ...


class ClientGone(Exception):
    """The client hung up in the middle of its request body."""


class Exchange:
    """One request and its answer: the decoded path, headers and principal, and the helpers
    every method uses to read the body and respond."""

    def __init__(
        self, door: DavApp, scope: Scope, receive: Receive, send: Send, headers: dict[str, str]
    ) -> None:
        self.door = door
        self.store = door.capability.store
        self.locks = door.locks
        self.scope = scope
        self.receive = receive
        self._send = send
        self.headers = headers
        self.method: str = scope["method"]
        self.path = ""
        self.principal: Principal | None = None
        self.status = 0
        self.if_lists: list[IfList] | None = None
        self.tokens: set[str] = set()

    # -- answers --------------------------------------------------------------------------

    async def respond(
        self,
        status: int,
        body: bytes = b"",
        headers: Iterable[tuple[bytes, bytes]] = (),
        content_type: bytes | None = None,
    ) -> None:
        out = [(b"content-length", str(len(body)).encode()), *headers]
        if content_type:
            out.append((b"content-type", content_type))
        self.status = status
        await self._send({"type": "http.response.start", "status": status, "headers": out})
        await self._send({"type": "http.response.body", "body": body})

    async def text(
        self, status: int, message: str, headers: Iterable[tuple[bytes, bytes]] = ()
    ) -> None:
        await self.respond(status, message.encode() + b"\n", headers, TEXT)

    async def stream(
        self, status: int, headers: list[tuple[bytes, bytes]], chunks: AsyncIterator[bytes]
    ) -> None:
        """Headers, then the body as ``chunks`` come (Content-Length is in ``headers``, or
        the server sends it chunked)."""
        self.status = status
        await self._send({"type": "http.response.start", "status": status, "headers": headers})
        held = b""  # one chunk is held back to go out as the last, saving an empty message
        async for chunk in chunks:
            if chunk:
                if held:
                    await self._send(
                        {"type": "http.response.body", "body": held, "more_body": True}
                    )
                held = chunk
        await self._send({"type": "http.response.body", "body": held})

    async def answer(self, response: Response) -> None:
        """Send a whole response made elsewhere (a file's content)."""
        self.status = response.status_code
        await response(self.scope, self.receive, self._send)

    async def head(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        """An answer without a body whose headers describe one (HEAD, an empty range)."""
        self.status = status
        await self._send({"type": "http.response.start", "status": status, "headers": headers})
        await self._send({"type": "http.response.body", "body": b""})

    @property
    def started(self) -> bool:
        return self.status != 0

    # -- the request ----------------------------------------------------------------------

    def has_body(self) -> bool:
        length = self.headers.get("content-length")
        return "transfer-encoding" in self.headers or bool(length and length.strip() != "0")

    def length(self) -> int | None:
        value = self.headers.get("content-length")
        if value is None:
            return None
        if not value.strip().isdigit():
            raise BadInput(f"Content-Length must be a number of bytes, not {value[:40]!r}")
        return int(value)

    async def body(self) -> AsyncIterator[bytes]:
        """The request body as it arrives, never held whole."""
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                raise ClientGone()
            chunk = message.get("body", b"")
            if chunk:
                yield chunk
            if not message.get("more_body", False):
                return

    async def read(self, limit: int = _davxml.MAX_BODY) -> bytes:
        """A small body (an XML request) whole; TooLarge past ``limit``."""
        length = self.length()
        if length is not None and length > limit:
            raise TooLarge(f"a {self.method} body is at most {limit} bytes; this one is {length}")
        parts, size = [], 0
        async for chunk in self.body():
            size += len(chunk)
            if size > limit:
                raise TooLarge(f"a {self.method} body is at most {limit} bytes")
            parts.append(chunk)
        return b"".join(parts)

    def depth(self, allowed: Iterable[str], default: str = "infinity") -> str:
        value = self.headers.get("depth", default).strip().lower()
        if value not in allowed:
            raise BadInput(f"{self.method} takes Depth {' or '.join(allowed)}, not {value!r}")
        return value

    def destination(self) -> str:
        """The store path a COPY or MOVE goes to: an absolute URL on this twin, or a path,
        under /dav/."""
        value = self.headers.get("destination")
        if not value:
            raise BadInput(f"{self.method} needs a Destination header (a URL under /dav/)")
        target = to_store_path(value, self.hosts())
        if target is None:
            raise Forbidden(
                f"the Destination must be on this twin, under /dav/: {value[:200]!r} is not"
            )
        return target

    def hosts(self) -> tuple[str, ...]:
        """The names this request reached the twin by: Host, and a reverse proxy's
        X-Forwarded-Host (the public name, when the proxy passes the Host on unchanged)."""
        names = [self.headers.get("host", "")]
        forwarded = self.headers.get("x-forwarded-host")
        if forwarded:
            names.append(forwarded.split(",")[0])
        return tuple(name.strip().lower() for name in names if name.strip())

    # -- locks ----------------------------------------------------------------------------

    async def check_if(self) -> None:
        """Evaluate the If header (412 when no list of it holds); its tokens are then
        submitted for the lock checks."""
        header = self.headers.get("if")
        if header is None:
            return
        self.if_lists = parse_if(header)
        hosts = self.hosts()

        def resolve(tag: str | None) -> str | None:
            if tag is None:
                return self.path
            try:
                return to_store_path(tag, hosts)
            except BadInput:
                return None

        async def etag_of(path: str) -> str | None:
            entry = await self.store.find(path)
            return entry.etag if entry is not None else None

        if not await evaluate(self.if_lists, resolve, etag_of, self.locks):
            raise PreconditionFailed("no list of conditions in the If header holds")
        self.tokens = submitted(self.if_lists)

    def unlocked(self, covering: Iterable[str] = (), trees: Iterable[str] = ()) -> None:
        """Locked (423) unless a token is submitted for each lock on the ``covering`` paths
        (their content, or a folder's members) and on anything under the ``trees``."""
        if not self.locks:
            return
        paths = list(covering)
        for tree in trees:
            paths.append(tree)
            paths += [lock.root for lock in self.locks.within(tree)]
        missing: dict[str, Lock] = {}
        for path in paths:
            held = self.locks.covering(path)
            if held and not any(self.holds(lock) for lock in held):
                missing.update((lock.token, lock) for lock in held)
        if missing:
            raise Locked(missing.values())

    def holds(self, lock: Lock) -> bool:
        return (
            lock.token in self.tokens
            and self.principal is not None
            and lock.principal == self.principal.label
        )


def decode_path(raw: str | bytes) -> str:
    """A URL path under /dav (still percent-encoded) as a store path; BadInput when it is
    not valid UTF-8 or not a valid path."""
    data = raw.encode("latin-1") if isinstance(raw, str) else raw
    segments = []
    for segment in data[4:].split(b"/")[1:]:  # after the "/" that follows /dav
        try:
            text = (unquote_to_bytes(segment) if b"%" in segment else segment).decode("utf-8")
        except UnicodeDecodeError:
            raise BadInput("the path is not valid UTF-8 once percent-decoded") from None
        if "/" in text:
            raise BadInput(f"a name cannot hold '/' (%2F): {text[:80]!r}")
        segments.append(text)
    return check_path("/".join(segments))


def to_store_path(url: str, hosts: tuple[str, ...]) -> str | None:
    """The store path of an absolute URL on one of ``hosts``, or of an absolute path, under
    /dav/; None when it points elsewhere."""
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return None
    if parts.scheme or parts.netloc:
        if parts.scheme not in DEFAULT_PORTS:
            return None
        netloc = parts.netloc.lower().removesuffix(DEFAULT_PORTS[parts.scheme])
        if netloc not in hosts and netloc + DEFAULT_PORTS[parts.scheme] not in hosts:
            return None
    path = parts.path
    if path != "/dav" and not path.startswith("/dav/"):
        return None
    return decode_path(path)


class DavApp:
    """The ASGI app of the ``/dav`` door."""

    def __init__(self, capability: FilesCapability) -> None:
        self.capability = capability
        self.locks = Locks()
        self.methods: dict[str, Callable[[Exchange], Awaitable[None]]] = {
            "OPTIONS": options,
            "GET": get,
            "HEAD": get,
            "PUT": put,
            "DELETE": delete,
            "MKCOL": mkcol,
            "COPY": copy_or_move,
            "MOVE": copy_or_move,
            "PROPFIND": _davprops.propfind,
            "PROPPATCH": _davprops.proppatch,
            "LOCK": _davprops.lock,
            "UNLOCK": _davprops.unlock,
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        headers: dict[str, str] = {}
        for key, value in scope["headers"]:
            name = key.decode("latin-1").lower()
            text = value.decode("latin-1")
            headers[name] = f"{headers[name]}, {text}" if name in headers else text
        ex = Exchange(self, scope, receive, send, headers)
        door = self.capability.context.door
        assert door is not None, "the twin gives every capability its door"
        permission = "read" if ex.method in READS else "write"
        try:
            if door.locked:
                raise VaultLocked("the twin is locked: unlock it with its passphrase, then retry")
            try:
                ex.principal = await door.authenticate(Request(scope), basic=True)
            except Unauthorized as exc:
                client = scope.get("client")
                door.check_rate("address " + (client[0] if client else "unknown"))
                told = exc.message if "authorization" in headers else NO_CREDENTIALS
                await ex.text(401, told, UNAUTHORIZED_HEADERS)
                return
            door.check_rate(ex.principal.label)
            handler = self.methods.get(ex.method)
            if handler is None:
                await ex.text(
                    405, f"{ex.method} is not a WebDAV method here", [(b"allow", ALLOW.encode())]
                )
                return
            if not ex.principal.allows("files", permission):
                raise Forbidden(f"{ex.method} needs a token with the scope files:{permission}")
            ex.path = decode_path(scope.get("raw_path") or scope["path"].encode())
            await ex.check_if()
            await handler(ex)
        except ClientGone:
            ex.status = ex.status or 499
        except Locked as exc:
            if ex.started:
                raise
            hrefs = [_davxml.href(lock.root, lock.folder) for lock in exc.locks]
            body = _davxml.error("lock-token-submitted", hrefs)
            await ex.respond(423, body, content_type=b"application/xml; charset=utf-8")
        except TwinError as exc:
            if ex.started:
                raise
            extra = []
            if isinstance(exc, RateLimited):
                extra.append((b"retry-after", str(exc.retry_after).encode()))
            await ex.text(status_of(exc), exc.message, extra)
        finally:
            if ex.principal is not None:
                door.record(ex.principal.label, "files", permission, ex.method, "/dav", ex.status)


def dav_app(capability: FilesCapability) -> DavApp:
    """The ``/dav`` door of the files capability: ``Mount("/dav", dav_app(self))``."""
    return DavApp(capability)


# -- the methods ------------------------------------------------------------------------------


async def options(ex: Exchange) -> None:
    await ex.respond(200, b"", OPTIONS_HEADERS)


async def found(ex: Exchange, path: str | None = None) -> Entry:
    entry = await ex.store.find(ex.path if path is None else path)
    if entry is None:
        raise NotFound(f"nothing at /dav/{ex.path}")
    return entry


async def get(ex: Exchange) -> None:
    entry = await found(ex)
    if entry.kind == "folder":
        body = await listing(ex, entry)
        if ex.method == "HEAD":
            headers = [(b"content-length", str(len(body)).encode())]
            headers.append((b"content-type", b"text/html; charset=utf-8"))
            await ex.head(200, headers)
            return
        await ex.respond(200, body, [SANDBOX], b"text/html; charset=utf-8")
        return
    if_match = ex.headers.get("if-match")
    if if_match is not None and not etag_matches(if_match, entry.etag):
        raise PreconditionFailed(f"If-Match does not hold: the file's ETag is {entry.etag}")
    await ex.answer(ContentResponse(ex.store, entry, Request(ex.scope)))


async def listing(ex: Exchange, entry: Entry) -> bytes:
    """A folder opened in a browser: its first entries as links."""
    children = await ex.store.children(entry.path, limit=LISTING_PAGE)
    title = html.escape("/dav/" + entry.path)
    rows = [
        f'<li><a href="{_davxml.href(c.path, c.kind == "folder")}">'
        f"{html.escape(c.name)}{'/' if c.kind == 'folder' else ''}</a></li>"
        for c in children
    ]
    more = (
        "<p>…and more: use a WebDAV client to see them all.</p>"
        if len(rows) == LISTING_PAGE
        else ""
    )
    return (
        f"<!doctype html><meta charset=utf-8><title>{title}</title><h1>{title}</h1>"
        f"<ul>{''.join(rows)}</ul>{more}"
    ).encode()


async def put(ex: Exchange) -> None:
    if not ex.path:
        await ex.text(405, "the root is a folder: PUT a file inside it")
        return
    if "content-range" in ex.headers:
        raise BadInput("a PUT with Content-Range (a partial upload) is not supported")
    length = ex.length()
    if ex.locks:
        parent, _ = split(ex.path)
        ex.unlocked(covering=[ex.path, parent])
    none_match = ex.headers.get("if-none-match", "").strip() == "*"
    mtime = ex.headers.get("x-oc-mtime")  # a sync client's own time for the file (ownCloud's)
    if mtime is not None and not (mtime.strip().isascii() and mtime.strip().isdigit()):
        raise BadInput(f"X-OC-Mtime is whole seconds since 1970, not {mtime[:40]!r}")
    try:
        entry, created = await ex.store.write(
            ex.path,
            ex.body(),
            length=length,
            if_match=ex.headers.get("if-match"),
            if_none_match=none_match,
            modified=None if mtime is None else float(mtime),
            digests=mtime is not None or "oc-checksum" in ex.headers,  # an ownCloud-style client
        )
    except Conflict:
        existing = await ex.store.find(ex.path)
        if existing is not None and existing.kind == "folder":
            await ex.text(405, f"/dav/{ex.path} is a folder; a PUT replaces only files")
            return
        raise
    headers = [(b"etag", entry.etag.encode())]
    if mtime is not None:
        headers.append((b"x-oc-mtime", b"accepted"))
    await ex.respond(201 if created else 204, b"", headers)


async def delete(ex: Exchange) -> None:
    if not ex.path:
        raise Forbidden("the root folder cannot be deleted")
    ex.depth(("infinity",))
    await found(ex)
    ex.unlocked(covering=[split(ex.path)[0]], trees=[ex.path])
    await ex.store.delete(ex.path, if_match=ex.headers.get("if-match"))
    ex.locks.forget(ex.path)
    await ex.respond(204)


async def mkcol(ex: Exchange) -> None:
    if ex.has_body() and await ex.read(_davxml.MAX_BODY):
        raise UnsupportedMedia("MKCOL takes no body here: send it empty")
    if not ex.path or await ex.store.find(ex.path) is not None:
        await ex.text(405, f"/dav/{ex.path} exists already")
        return
    ex.unlocked(covering=[split(ex.path)[0]])
    try:
        await ex.store.mkdir(ex.path)
    except Conflict as exc:
        if await ex.store.find(ex.path) is not None:
            await ex.text(405, f"/dav/{ex.path} exists already")
            return
        raise Conflict(
            f"{exc.message} (MKCOL creates one folder; create its parent first)"
        ) from None
    await ex.respond(201)


async def copy_or_move(ex: Exchange) -> None:
    move = ex.method == "MOVE"
    source, target = ex.path, ex.destination()
    overwrite = ex.headers.get("overwrite", "T").strip().upper()
    if overwrite not in ("T", "F"):
        raise BadInput(f"Overwrite is T or F, not {overwrite[:20]!r}")
    depth = ex.depth(("infinity",) if move else ("0", "infinity"))
    verb = "moved" if move else "copied"
    if move and not source:
        raise Forbidden("the root folder cannot be moved")
    if not target:
        raise Forbidden("the root folder cannot be replaced")
    if source == target:
        raise Forbidden(f"source and destination are the same (/dav/{source}): nothing to do")
    if not source or target.startswith(source + "/"):
        raise Conflict(f"a folder cannot be {verb} into itself (/dav/{target})")
    await found(ex, source)
    if move:
        ex.unlocked(covering=[split(source)[0]], trees=[source])
    ex.unlocked(covering=[split(target)[0]], trees=[target])
    if overwrite == "F" and await ex.store.find(target) is not None:
        raise PreconditionFailed(f"/dav/{target} exists and Overwrite is F")
    if move:
        _, replaced = await ex.store.move(source, target, overwrite=overwrite == "T")
        ex.locks.forget(source)
    else:
        _, replaced = await ex.store.copy(
            source, target, overwrite=overwrite == "T", recursive=depth != "0"
        )
    # locks stay with their URL: a lock on the destination (or a folder above it) now covers
    # what arrived there (RFC 4918 section 7.6)
    await ex.respond(204 if replaced else 201)


__all__ = ["DavApp", "Exchange", "dav_app", "decode_path"]
