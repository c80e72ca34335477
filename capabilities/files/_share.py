"""The public side of share links, ``/s/<secret>``: a page naming the owner and what was shared,
and its download; nothing else of the twin is reachable from here."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from twin import Conflict, Gone, NotFound, RateLimited, TwinError
from twin.http import templates_in
from twin.settings import human_size

from ._paths import check_path, join
from ._send import ContentResponse
from ._shares import Share

if TYPE_CHECKING:
    from . import Files


def _date(seconds: float) -> str:
    return time.strftime("%d %B %Y, %H:%M UTC", time.gmtime(seconds))


def share_app(capability: Files) -> ASGIApp:
    """The ASGI app answering ``/s/…``."""
    store, shares, door = capability.store, capability.shares, capability.context.door
    assert door is not None

    async def owner_name() -> str:
        from ..profile import ProfileCapability

        try:
            profile = capability.require(ProfileCapability)
            name: str = (await profile.current()).display_name
            return name
        except TwinError:
            return ""

    def page(status: int, **values: object) -> Response:
        html = (
            templates_in(Path(__file__).parent / "templates")
            .get_template("share.html")
            .render(**values)
        )
        return HTMLResponse(html, status, headers={"Cache-Control": "no-store"})

    async def inside(share: Share, sub: str) -> str:
        """The path of ``sub`` (a path inside a shared folder) in the owner's tree."""
        sub = check_path(sub)
        return join(share.path, sub) if sub else share.path

    async def show(request: Request, secret: str, share: Share, sub: str) -> Response:
        base = f"/s/{secret}"
        entry = await store.stat(await inside(share, sub))
        left = None
        if share.max_downloads is not None:
            left = share.max_downloads - share.downloads
        values: dict[str, object] = {
            "gone": False,
            "owner": await owner_name(),
            "folder": entry.is_folder,
            "title": entry.name,
            "share_name": share.name,
            "base": base,
            "expires": _date(share.expires),
            "left": left,
        }
        if entry.is_folder:
            crumbs, walked = [], ""
            for name in filter(None, check_path(sub).split("/")):
                walked = join(walked, name)
                crumbs.append((name, f"{base}?path={quote(walked)}"))
            children = await store.children(entry.path, limit=2000)
            children.sort(key=lambda e: (e.kind != "folder", e.name.casefold()))
            relative = entry.path[len(share.path) :].lstrip("/")
            values["crumbs"] = crumbs
            values["entries"] = [
                {
                    "kind": e.kind,
                    "name": e.name,
                    "size": human_size(e.size),
                    "href": f"{base}{'' if e.is_folder else '/download'}"
                    f"?path={quote(join(relative, e.name))}",
                }
                for e in children
            ]
        else:
            values["size"] = human_size(entry.size)
            values["modified"] = _date(entry.modified)
            values["download"] = f"{base}/download"
        return page(200, **values)

    async def download(request: Request, share: Share, sub: str) -> Response:
        entry = await store.stat(await inside(share, sub))
        if entry.is_folder:
            raise Conflict(f"{entry.name} is a folder: open it and download its files")
        ranged = request.headers.get("range", "")
        if request.method == "GET" and not ranged.startswith("bytes=") or ranged == "bytes=0-":
            await shares.count_download(share)  # resuming a download is not another one
        return ContentResponse(store, entry, request, attachment=True)

    async def answer(request: Request) -> Response:
        if request.method not in ("GET", "HEAD"):
            return Response("only GET here", 405, headers={"Allow": "GET, HEAD"})
        parts = request.url.path.split("/")  # "", "s", secret, ["download"]
        if len(parts) not in (3, 4) or (len(parts) == 4 and parts[3] != "download"):
            return page(404, gone=True, message="There is no such link")
        secret, sub = parts[2], request.query_params.get("path", "")
        door.check_rate(f"address {request.client.host if request.client else 'unknown'}")
        door.check_unlocked()
        share, _ = await shares.open(secret)
        if len(parts) == 4:
            return await download(request, share, sub)
        return await show(request, secret, share, sub)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        try:
            response = await answer(request)
        except (Gone, NotFound) as exc:
            status = 410 if isinstance(exc, Gone) else 404
            response = page(status, gone=True, message=exc.message.capitalize())
        except TwinError as exc:  # a bad ?path=, a folder asked as a file, too many requests
            from twin.http import status_of

            heading = "Too many requests" if isinstance(exc, RateLimited) else "That did not work"
            response = page(
                status_of(exc), gone=True, heading=heading, message=exc.message.capitalize()
            )
            if isinstance(exc, RateLimited):
                response.headers["Retry-After"] = str(exc.retry_after)
        door.record(
            "anyone with a link",
            "files",
            "share link",
            request.method,
            "/s/…",
            response.status_code,
        )
        await response(scope, receive, send)

    return app
