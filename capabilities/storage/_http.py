"""The HTTP face of storage: ``/api/storage/…`` routes, who may reach which namespace, and the
live change stream (server-sent events)."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable
from email.utils import formatdate
from typing import TYPE_CHECKING, Annotated, Any, Literal

import msgspec
from starlette.responses import Response

from twin import BadInput, Call, Forbidden, NotFound, RateLimited, api
from twin.api import Endpoint
from twin.scopes import Principal
from twin.streams import EventStream, first_of

from ._names import MAX_DOCUMENT, MAX_KEY, check_namespace
from ._store import (
    MAX_BATCH,
    MAX_PAGE,
    Change,
    Condition,
    Delete,
    Namespace,
    Put,
    Store,
    Usage,
    Written,
    etag,
)

if TYPE_CHECKING:
    from . import Storage

KEEP_ALIVE = 15.0  # seconds between comments on an idle stream
STREAMS_PER_CALLER = 8
STREAMS = 256
BATCH_BYTES = 8 * 1024 * 1024


class WriteResult(msgspec.Struct):
    key: str
    version: int
    updated: float


class BatchResult(msgspec.Struct):
    op: str
    key: str
    version: int
    updated: float


class BatchResults(msgspec.Struct):
    results: list[BatchResult]


class Item(msgspec.Struct, omit_defaults=True):
    key: str
    version: int
    updated: float
    body: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET


class Listing(msgspec.Struct):
    items: list[Item]
    cursor: str | None


class ChangeItem(msgspec.Struct, omit_defaults=True):
    seq: int
    key: str
    op: str
    version: int
    updated: float
    body: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET


class ChangeList(msgspec.Struct):
    changes: list[ChangeItem]
    last_seq: int
    more: bool


class NamespaceInfo(msgspec.Struct):
    namespace: str
    documents: int
    bytes: int
    quota: int
    last_seq: int


class NamespaceList(msgspec.Struct):
    namespaces: list[NamespaceInfo]


class Op(msgspec.Struct, forbid_unknown_fields=True):
    op: Literal["put", "delete"]
    key: Annotated[str, msgspec.Meta(max_length=MAX_KEY)]
    body: dict[str, Any] | None = None
    if_match: int | Literal["*"] | None = None
    if_none_match: Literal["*"] | None = None


class Batch(msgspec.Struct, forbid_unknown_fields=True):
    ops: Annotated[list[Op], msgspec.Meta(min_length=1, max_length=MAX_BATCH)]


def may(principal: Principal, permission: str, namespace: str) -> bool:
    """Whether ``principal`` may ``permission`` (read, write) in ``namespace``: a scope naming
    it, a wildcard, or the plain permission, which for an experience means its own namespace."""
    scopes = principal.scopes
    if "*" in scopes or "storage:*" in scopes or f"storage:{permission}@{namespace}" in scopes:
        return True
    if f"storage:{permission}" in scopes:
        return principal.kind != "experience" or principal.id == namespace
    return False


def _item(change: Change) -> ChangeItem:
    body = msgspec.Raw(change.raw) if change.raw is not None else msgspec.UNSET
    return ChangeItem(change.seq, change.key, change.op, change.seq, change.updated, body)


def _written(result: Written) -> WriteResult:
    return WriteResult(result.key, result.version, result.updated)


def _info(usage: Usage) -> NamespaceInfo:
    return NamespaceInfo(usage.namespace, usage.documents, usage.bytes, usage.quota, usage.last_seq)


def _tags(header: str | None) -> Condition:
    """An If-Match / If-None-Match header: ``*`` or the versions it lists (W/ tags never match)."""
    if header is None or not header.strip():
        return None
    if header.strip() == "*":
        return "*"
    versions = set()
    for tag in header.split(","):
        tag = tag.strip()
        if tag.startswith('"') and tag.endswith('"') and len(tag) >= 2:
            tag = tag[1:-1]
        if tag.isascii() and tag.isdigit() and len(tag) < 19:
            versions.add(int(tag))
    return frozenset(versions)


def _number(call: Call, name: str, default: int) -> int:
    text = call.query.get(name)
    if text is None or text == "":
        return default
    if not (text.isascii() and text.isdigit()) or len(text) > 18:
        raise BadInput(f"{name} must be a whole number, not {text[:40]!r}")
    return int(text)


def _flag(call: Call, name: str) -> bool:
    text = call.query.get(name, "false").lower()
    if text not in ("true", "false", "1", "0", ""):
        raise BadInput(f"{name} must be true or false, not {text[:40]!r}")
    return text in ("true", "1")


class Routes:
    """The endpoints of ``/api/storage/``."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.streams: dict[str, int] = {}

    @property
    def store(self) -> Store:
        return self.storage.store

    def space(self, call: Call, permission: str) -> Namespace:
        name = check_namespace(call.params["namespace"])
        if not may(call.principal, permission, name):
            verb = "read" if permission == "read" else "write to"
            raise Forbidden(
                f"{call.principal.label} may not {verb} the namespace {name}: that needs the "
                f"scope storage:{permission}@{name}, which was not granted"
            )
        return self.store.namespace(name)

    def endpoints(self) -> list[Endpoint]:
        doc = "/{namespace}/docs/{key:path}"
        return [
            api.get(
                "/",
                self.namespaces,
                permission="read",
                response=NamespaceList,
                summary="The namespaces the caller may read that hold data, with their usage",
            ),
            api.get(
                "/{namespace}",
                self.usage,
                permission="read",
                response=NamespaceInfo,
                summary="How many documents and bytes a namespace holds, its quota and last change",
            ),
            api.get(
                "/{namespace}/docs",
                self.list,
                permission="read",
                response=Listing,
                query=(
                    ("prefix", "a folder ending in /, or empty for everything"),
                    ("limit", f"1 to {MAX_PAGE} (default 100)"),
                    ("cursor", "the cursor of the previous page"),
                    ("bodies", "true to include each body"),
                ),
                summary="List documents under a prefix, in creation order, a page at a time",
            ),
            api.get(
                doc,
                self.get,
                permission="read",
                raw_response="application/json",
                summary="A document's body, with its version as the ETag",
            ),
            api.put(
                doc,
                self.put,
                permission="write",
                raw_body=("application/json",),
                max_body=MAX_DOCUMENT,
                response=WriteResult,
                other_statuses=(201,),
                summary="Create or replace a document (If-Match, If-None-Match: *)",
            ),
            api.delete(doc, self.delete, permission="write", summary="Delete a document"),
            api.post(
                "/{namespace}/batch",
                self.batch,
                permission="write",
                body=Batch,
                max_body=BATCH_BYTES,
                response=BatchResults,
                summary=f"Up to {MAX_BATCH} puts and deletes in one transaction: all or none",
            ),
            api.get(
                "/{namespace}/changes",
                self.changes,
                permission="read",
                response=ChangeList,
                query=(
                    ("since", "the last_seq you hold (default 0: everything)"),
                    ("limit", f"1 to {MAX_PAGE} (default 1000)"),
                    ("bodies", "true to include the body of each put"),
                ),
                summary="The latest change of each key changed after a sequence number",
            ),
            api.get(
                "/{namespace}/changes/live",
                self.live,
                permission="read",
                raw_response="text/event-stream",
                query=(
                    ("since", "the last id you received (or send Last-Event-ID)"),
                    ("bodies", "true to include the body of each put"),
                ),
                summary="The change feed as server-sent events, live, resumable",
            ),
        ]

    async def namespaces(self, call: Call) -> NamespaceList:
        usages = await self.store.usages()
        return NamespaceList([_info(u) for u in usages if may(call.principal, "read", u.namespace)])

    async def usage(self, call: Call) -> NamespaceInfo:
        return _info(await self.space(call, "read").usage())

    async def list(self, call: Call) -> Listing:
        page = await self.space(call, "read").list(
            call.query.get("prefix", ""),
            limit=_number(call, "limit", 100),
            cursor=call.query.get("cursor") or None,
            bodies=_flag(call, "bodies"),
        )
        items = [
            Item(
                d.key,
                d.version,
                d.updated,
                msgspec.Raw(d.raw) if d.raw is not None else msgspec.UNSET,
            )
            for d in page.items
        ]
        return Listing(items, page.cursor)

    async def get(self, call: Call) -> Response:
        space = self.space(call, "read")
        key = call.params["key"]
        document = await space.get(key)
        if document is None:
            raise NotFound(f"no document {key[:80]!r} in {space.name}")
        headers = {
            "ETag": document.etag,
            "Last-Modified": _http_date(int(document.updated)),
            "Cache-Control": "private, no-cache",
        }
        wanted = _tags(call.request.headers.get("if-none-match"))
        if wanted == "*" or (isinstance(wanted, frozenset) and document.version in wanted):
            return Response(status_code=304, headers=headers)
        return Response(document.raw, media_type="application/json", headers=headers)

    async def put(self, call: Call) -> Response:
        space = self.space(call, "write")
        headers = call.request.headers
        if_none = headers.get("if-none-match")
        if if_none is not None and if_none.strip() != "*":
            raise BadInput("If-None-Match on a write takes only *: create, never overwrite")
        result = await space.put(
            call.params["key"],
            call.raw,
            if_match=_tags(headers.get("if-match")),
            if_none_match=if_none is not None,
        )
        return Response(
            msgspec.json.encode(_written(result)),
            201 if result.created else 200,
            headers={"ETag": etag(result.version)},
            media_type="application/json",
        )

    async def delete(self, call: Call) -> None:
        space = self.space(call, "write")
        await space.delete(call.params["key"], if_match=_tags(call.request.headers.get("if-match")))

    async def batch(self, call: Call) -> BatchResults:
        space = self.space(call, "write")
        batch: Batch = call.body
        ops: list[Put | Delete] = []
        for index, op in enumerate(batch.ops, start=1):
            if op.op == "put":
                if op.body is None:
                    raise BadInput(f"operation {index} ({op.key[:80]}): a put needs a body")
                ops.append(Put(op.key, op.body, op.if_match, op.if_none_match == "*"))
            else:
                if op.body is not None or op.if_none_match is not None:
                    raise BadInput(
                        f"operation {index} ({op.key[:80]}): a delete takes only key and if_match"
                    )
                ops.append(Delete(op.key, op.if_match))
        results = await space.batch(ops)
        return BatchResults([BatchResult(r.op, r.key, r.version, r.updated) for r in results])

    async def changes(self, call: Call) -> ChangeList:
        found = await self.space(call, "read").changes(
            _number(call, "since", 0),
            limit=_number(call, "limit", 1000),
            bodies=_flag(call, "bodies"),
        )
        return ChangeList([_item(c) for c in found.changes], found.last_seq, found.more)

    async def live(self, call: Call) -> Response:
        space = self.space(call, "read")
        since = _number(call, "since", -1)
        if since < 0:
            last_event = call.request.headers.get("last-event-id", "").strip()
            if last_event and not (
                last_event.isascii() and last_event.isdigit() and len(last_event) < 19
            ):
                raise BadInput(f"Last-Event-ID must be an event's id, not {last_event[:40]!r}")
            since = int(last_event or 0)
        bodies = _flag(call, "bodies")
        await space.changes(since, limit=1)  # refuses a since that is too old or ahead now
        caller = call.principal.label
        if self.streams.get(caller, 0) >= STREAMS_PER_CALLER:
            raise RateLimited(
                f"{caller} already has {STREAMS_PER_CALLER} live streams open: close one",
                retry_after=5,
            )
        if sum(self.streams.values()) >= STREAMS:
            raise RateLimited(f"the twin already serves {STREAMS} live streams", retry_after=5)
        self.streams[caller] = self.streams.get(caller, 0) + 1
        return EventStream(self._events(call, space, since, bodies), self._closed(caller))

    def _closed(self, caller: str) -> Callable[[], None]:
        def closed() -> None:
            left = self.streams.get(caller, 1) - 1
            if left:
                self.streams[caller] = left
            else:
                self.streams.pop(caller, None)

        return closed

    async def _events(
        self, call: Call, space: Namespace, since: int, bodies: bool
    ) -> AsyncIterator[bytes]:
        stopping = self.storage.context.stopping
        ready = False
        while not stopping.is_set():
            next_change = self.store.feed.next_change(space.name)
            found = await space.changes(since, limit=500, bodies=bodies)
            if ready:  # the token (or the experience's grant) may have gone since it began
                principal = await call.recheck()
                if principal is None or not may(principal, "read", space.name):
                    yield b'event: end\ndata: {"reason": "access withdrawn"}\n\n'
                    return
            if found.changes:
                yield b"".join(_event(change) for change in found.changes)
            since = found.last_seq
            if found.more:
                continue
            if not ready:
                ready = True
                yield b'event: ready\ndata: {"last_seq": %d}\n\n' % since
            woke = await first_of(next_change, stopping, timeout=KEEP_ALIVE)
            if not woke:
                yield b": keep-alive\n\n"


@functools.lru_cache(maxsize=1024)
def _http_date(seconds: int) -> str:
    return formatdate(seconds, usegmt=True)


def _event(change: Change) -> bytes:
    data = msgspec.json.encode(_item(change))
    # a body is stored as written, so it may hold line breaks (JSON whitespace): each line of
    # it becomes a data: line, and the client joins them with \n again
    lines = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
    return b"id: %d\n" % change.seq + b"".join(b"data: " + line + b"\n" for line in lines) + b"\n"
