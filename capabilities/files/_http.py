"""The HTTP face of files: ``/api/files/…`` for experiences and scripts."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

import msgspec
from starlette.responses import Response

from twin import BadInput, Call, api
from twin.api import Endpoint
from twin.http import json_response

from ._send import ContentResponse

if TYPE_CHECKING:
    from . import Files


class EntryInfo(msgspec.Struct):
    name: str
    path: str
    kind: str
    size: int
    created: float
    modified: float
    etag: str
    media_type: str = msgspec.field(name="type")


class FolderInfo(EntryInfo):
    entries: list[EntryInfo] = []
    more: bool = False


class TrashInfo(msgspec.Struct):
    id: int
    name: str
    path: str
    kind: str
    size: int
    trashed: float
    purge_at: float


class TrashList(msgspec.Struct):
    items: list[TrashInfo]


class TrashSize(msgspec.Struct):
    items: int
    bytes: int


class UsageInfo(msgspec.Struct):
    used: int
    quota: int
    files: int
    folders: int
    trash: TrashSize


class ShareInfo(msgspec.Struct):
    id: str
    path: str
    name: str
    kind: str
    created: float
    expires: float
    max_downloads: int | None
    downloads: int
    state: str
    url: str
    qr: str


class ShareList(msgspec.Struct):
    items: list[ShareInfo]


class Removed(msgspec.Struct):
    removed: int


class NewFolder(msgspec.Struct, forbid_unknown_fields=True):
    path: str
    parents: bool = False


class Relocation(
    msgspec.Struct, forbid_unknown_fields=True, rename={"source": "from", "target": "to"}
):
    source: str
    target: str
    overwrite: bool = False


class NewShare(msgspec.Struct, forbid_unknown_fields=True):
    path: str
    days: float = 7
    max_downloads: int | None = None


MAX_LISTING = 10_000
T = TypeVar("T")


def _info(value: Any, shape: type[T]) -> T:
    """A domain object (an Entry, a TrashItem, a Share) as the API describes it."""
    return msgspec.convert(value, shape, from_attributes=True)


def _flag(value: str | None) -> bool:
    return (value or "").lower() in ("1", "true", "yes")


def _seconds(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        raise BadInput(f"modified is seconds since 1970, not {value[:40]!r}") from None


class Routes:
    def __init__(self, capability: Files) -> None:
        self.store = capability.store
        self.shares = capability.shares

    def endpoints(self) -> list[Endpoint]:
        return [
            api.get(
                "/",
                self.usage,
                permission="read",
                response=UsageInfo,
                summary="Bytes used (trash included) against the quota, and how many files",
            ),
            api.get(
                "/tree/{path:path}",
                self.tree,
                permission="read",
                response=FolderInfo,
                summary="A file's or folder's details; a folder's with what it holds",
            ),
            api.delete(
                "/tree/{path:path}",
                self.delete,
                permission="write",
                response=TrashInfo,
                summary="Move a file or folder to the trash (If-Match honoured)",
            ),
            api.get(
                "/content/{path:path}",
                self.download,
                permission="read",
                raw_response="application/octet-stream",
                query=(("download", "1 to ask the browser to save it (Content-Disposition)"),),
                summary="A file's content; Range, If-None-Match and If-Range honoured",
            ),
            api.put(
                "/content/{path:path}",
                self.upload,
                permission="write",
                stream_body=True,
                response=EntryInfo,
                other_statuses=(201,),
                query=(
                    ("parents", "1 to create missing folders on the way"),
                    ("modified", "the file's own modification time, in seconds since 1970"),
                ),
                summary="Upload a file's content, streamed (If-Match, If-None-Match: *)",
            ),
            api.post(
                "/folders",
                self.mkdir,
                permission="write",
                body=NewFolder,
                response=EntryInfo,
                status=201,
                summary="Create a folder",
            ),
            api.post(
                "/move",
                self.move,
                permission="write",
                body=Relocation,
                response=EntryInfo,
                summary="Move or rename a file or folder",
            ),
            api.post(
                "/copy",
                self.copy,
                permission="write",
                body=Relocation,
                response=EntryInfo,
                status=201,
                summary="Copy a file or folder (contents are shared, not duplicated)",
            ),
            api.get(
                "/trash", self.trash, permission="read", response=TrashList, summary="The trash"
            ),
            api.delete(
                "/trash",
                self.empty,
                permission="write",
                response=Removed,
                summary="Empty the trash: everything in it is deleted for good",
            ),
            api.post(
                "/trash/{item:int}/restore",
                self.restore,
                permission="write",
                response=EntryInfo,
                summary="Put something from the trash back where it was",
            ),
            api.delete(
                "/trash/{item:int}",
                self.forget,
                permission="write",
                summary="Delete one thing in the trash for good",
            ),
            api.get(
                "/shares",
                self.list_shares,
                permission="share",
                response=ShareList,
                summary="The share links that are not revoked",
            ),
            api.post(
                "/shares",
                self.share,
                permission="share",
                body=NewShare,
                response=ShareInfo,
                status=201,
                summary="Make a public link to a file or folder, with an expiry",
            ),
            api.delete(
                "/shares/{share}",
                self.revoke,
                permission="share",
                summary="Revoke a share link: it stops working at once",
            ),
        ]

    async def usage(self, call: Call) -> Any:
        usage = await self.store.usage()
        trash = TrashSize(usage.trash_items, usage.trash_bytes)
        return UsageInfo(usage.used, usage.quota, usage.files, usage.folders, trash)

    async def tree(self, call: Call) -> Any:
        entry = await self.store.stat(call.params["path"])
        info = _info(entry, FolderInfo)
        if entry.is_folder:
            children = await self.store.children(entry.path, limit=MAX_LISTING + 1)
            children.sort(key=lambda e: (e.kind != "folder", e.name.casefold(), e.name))
            info.entries = [_info(e, EntryInfo) for e in children[:MAX_LISTING]]
            info.more = len(children) > MAX_LISTING
        return info

    async def delete(self, call: Call) -> Any:
        item = await self.store.delete(
            call.params["path"], if_match=call.request.headers.get("if-match")
        )
        return _info(item, TrashInfo)

    async def download(self, call: Call) -> Response:
        entry = await self.store.stat(call.params["path"])
        if entry.is_folder:
            raise BadInput(f"{entry.path or 'the root'} is a folder: list it with /api/files/tree/")
        return ContentResponse(
            self.store, entry, call.request, attachment=_flag(call.query.get("download"))
        )

    async def upload(self, call: Call) -> Response:
        request = call.request
        headers = request.headers
        length = headers.get("content-length")
        if length is not None and not (length.isascii() and length.isdigit() and len(length) < 19):
            raise BadInput("Content-Length must be a number")
        if_none_match = headers.get("if-none-match")
        if if_none_match is not None and if_none_match.strip() != "*":
            raise BadInput("If-None-Match on an upload can only be *: create, never replace")
        entry, created = await self.store.write(
            call.params["path"],
            request.stream(),
            length=None if length is None else int(length),
            if_match=headers.get("if-match"),
            if_none_match=if_none_match is not None,
            parents=_flag(call.query.get("parents")),
            modified=_seconds(call.query.get("modified")),
        )
        return json_response(
            _info(entry, EntryInfo), 201 if created else 200, headers={"ETag": entry.etag}
        )

    async def mkdir(self, call: Call) -> Any:
        body: NewFolder = call.body
        return _info(await self.store.mkdir(body.path, parents=body.parents), EntryInfo)

    async def move(self, call: Call) -> Any:
        body: Relocation = call.body
        entry, _ = await self.store.move(body.source, body.target, overwrite=body.overwrite)
        return _info(entry, EntryInfo)

    async def copy(self, call: Call) -> Any:
        body: Relocation = call.body
        entry, _ = await self.store.copy(body.source, body.target, overwrite=body.overwrite)
        return _info(entry, EntryInfo)

    async def trash(self, call: Call) -> Any:
        return TrashList([_info(item, TrashInfo) for item in await self.store.trash()])

    async def empty(self, call: Call) -> Any:
        return {"removed": await self.store.empty()}

    async def restore(self, call: Call) -> Any:
        return _info(await self.store.restore(call.params["item"]), EntryInfo)

    async def forget(self, call: Call) -> None:
        await self.store.forget(call.params["item"])

    async def list_shares(self, call: Call) -> Any:
        return ShareList([_info(share, ShareInfo) for share in await self.shares.list()])

    async def share(self, call: Call) -> Any:
        body: NewShare = call.body
        share = await self.shares.create(body.path, body.days, body.max_downloads)
        return _info(share, ShareInfo)

    async def revoke(self, call: Call) -> None:
        await self.shares.revoke(call.params["share"])
