"""The public invite page, ``/connect#<invite>``: it names the twin that invites and hands the
invite (kept in the link's fragment, so never sent here) to the visitor's own twin."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from twin.http import error_json, templates_in

if TYPE_CHECKING:
    from . import Contacts

_HERE = Path(__file__).parent


def connect_app(capability: Contacts) -> ASGIApp:
    """The ASGI app answering ``/connect`` and its script."""
    door = capability.context.door
    url = capability.context.settings.url
    did = capability.context.did

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"]
        response: Response
        if scope["method"] not in {"GET", "HEAD"}:
            response = error_json(405, "method_not_allowed", "the invite page is only read")
        elif path in {"/connect", "/connect/"}:
            if door is not None:
                client = scope.get("client")
                door.check_rate(f"address {client[0] if client else 'unknown'}")
            html = (
                templates_in(_HERE / "templates")
                .get_template("connect.html")
                .render(url=url, did=did)
            )
            response = HTMLResponse(html, headers={"Cache-Control": "no-store"})
        elif path == "/connect/connect.js":
            response = FileResponse(_HERE / "static" / "connect.js", media_type="text/javascript")
        else:
            response = error_json(404, "not_found", f"nothing at {path}")
        await response(scope, receive, send)

    return app
