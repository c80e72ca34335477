"""Sending a file's content over HTTP: ranges, conditional requests, and the headers that keep
a browser from running what it holds; shared by ``/api/files``, ``/dav`` and ``/s``."""

from __future__ import annotations

import functools
import logging
from email.utils import formatdate, parsedate_to_datetime
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from twin.http import error_json

from ._blobs import Damaged
from ._store import FileStore
from ._tree import Entry, etag_matches

log = logging.getLogger("twin.cap.files")

# Content a person uploaded is never run by the browser on the twin's origin.
SANDBOX = (
    "sandbox; default-src 'none'; img-src 'self' data: blob:; media-src 'self'; "
    "style-src 'unsafe-inline'"
)


_FIXED = [
    (b"accept-ranges", b"bytes"),
    (b"content-security-policy", SANDBOX.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"cache-control", b"private, no-cache"),
]


@functools.lru_cache(maxsize=1024)
def _http_date(seconds: int) -> bytes:
    return formatdate(seconds, usegmt=True).encode()


def byte_range(header: str | None, size: int) -> tuple[int, int] | None | str:
    """The one range a ``Range`` header asks for as [start, end); None for the whole file
    (no header, one we do not serve, several ranges); "unsatisfiable" when it lies past the end."""
    if not header or not header.startswith("bytes=") or "," in header:
        return None
    first, dash, last = header[6:].strip().partition("-")
    if not dash or not (first.isdigit() or last.isdigit()) or (first and not first.isdigit()):
        return None
    if last and not last.isdigit():
        return None
    if not first:  # the last N bytes
        count = int(last)
        if count == 0:
            return "unsatisfiable"
        return max(size - count, 0), size
    start = int(first)
    end = min(int(last) + 1, size) if last else size
    if start >= size:
        return "unsatisfiable"
    if end <= start:
        return None
    return start, end


def disposition(kind: str, name: str) -> str:
    ascii_name = name.encode("ascii", "replace").decode().replace('"', "'").replace("\\", "_")
    return f"{kind}; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name, safe='')}"


def _not_modified(request: Request, entry: Entry) -> bool:
    tags = request.headers.get("if-none-match")
    if tags is not None:
        return etag_matches(tags, entry.etag)
    since = request.headers.get("if-modified-since")
    if since is not None:
        try:
            return int(entry.modified) <= parsedate_to_datetime(since).timestamp()
        except (TypeError, ValueError, IndexError):
            return False
    return False


class ContentResponse(Response):
    """An ASGI response sending a file's content (or the part a Range asks for)."""

    def __init__(
        self,
        store: FileStore,
        entry: Entry,
        request: Request,
        *,
        attachment: bool = False,
        extra: dict[str, str] | None = None,
    ) -> None:
        self.store = store
        self.entry = entry
        self.background = None
        self.head = request.method == "HEAD"
        self.start, self.end = 0, entry.size
        asked = request.headers  # each lookup scans the request's headers: once each here
        ranged, if_range = asked.get("range"), asked.get("if-range")
        headers = [
            (b"etag", entry.etag.encode()),
            (b"last-modified", _http_date(int(entry.modified))),
            *_FIXED,
        ]
        if extra:
            headers += [(k.encode(), v.encode()) for k, v in extra.items()]
        if attachment:
            headers.append((b"content-disposition", disposition("attachment", entry.name).encode()))
        status, typed = 200, True
        if _not_modified(request, entry):
            status, self.end, typed = 304, 0, False
        else:
            wanted = byte_range(ranged, entry.size) if ranged else None
            if if_range is not None and if_range.strip() != entry.etag:
                wanted = None  # the file changed: send all of it
            if wanted == "unsatisfiable":
                status, self.end, typed = 416, 0, False
                headers.append((b"content-range", f"bytes */{entry.size}".encode()))
            elif isinstance(wanted, tuple):
                status = 206
                self.start, self.end = wanted
                span = f"bytes {self.start}-{self.end - 1}/{entry.size}"
                headers.append((b"content-range", span.encode()))
        if typed:
            headers.append((b"content-type", entry.media_type.encode()))
        headers.append((b"content-length", str(self.end - self.start).encode()))
        self.status_code = status
        self.raw_headers = headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = {"type": "http.response.start", "status": self.status_code}
        if self.head or self.end <= self.start:
            await send({**start, "headers": self.raw_headers})
            await send({"type": "http.response.body", "body": b""})
            return
        pieces = aiter(self.store.read(self.entry, self.start, self.end))
        try:  # damage found before the first byte is an answer saying so
            piece = await anext(pieces, b"")
        except Damaged as exc:
            log.error("%s", exc)
            message = "this file's content is damaged on the twin's disk and cannot be sent"
            await error_json(500, "damaged", message)(scope, receive, send)
            return
        await send({**start, "headers": self.raw_headers})
        while True:  # each piece goes out once the next is known: the last one ends the body
            try:
                following = await anext(pieces, None)
            except Damaged as exc:  # the client sees the body cut short, never bad bytes
                log.error("%s; the download was cut off", exc)
                raise
            await send(
                {"type": "http.response.body", "body": piece, "more_body": following is not None}
            )
            if following is None:
                return
            piece = following
