"""The owner's settings page: passkeys and devices, signed-in browsers, pairing a new device,
experiences' grants and API tokens, each listed with a way to take it back; and backups."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from twin.backups import EVERY
from twin.errors import BadInput, TwinError
from twin.http import status_of
from twin.sessions import LINK_TTL, Session

if TYPE_CHECKING:
    from twin.core import Twin
    from twin.shell import Pages

DONE = {
    "renamed": "Renamed.",
    "removed": "Passkey removed; the browsers it signed in are signed out.",
    "ended": "That browser is signed out.",
    "revoked": "Token revoked: it no longer opens your twin.",
    "withdrawn": "Access withdrawn.",
    "added": "Passkey added to this device.",
    "scheduled": "Backups saved.",
    "backing-up": "The backup has begun: its progress shows below.",
}


CONFIRM = (
    "Adding or removing a passkey, or changing backups, needs a recent sign-in: press "
    "“Confirm it's you” and use your passkey, then try again."
)


Handler = Callable[[Request], Awaitable[Response]]
Action = Callable[[Request, Session, dict[str, str]], Awaitable[Response]]  # a settings form


def qr_svg(text: str) -> str:
    """A QR code of ``text`` as an SVG data URI, to scan with the new device's camera."""
    import segno

    code = segno.make(text, error="m")
    return str(code.svg_data_uri(scale=6, border=2, dark="#1d2b27"))


def account_routes(twin: Twin, pages: Pages) -> list[BaseRoute]:
    from twin.shell import COOKIE

    async def owner(request: Request) -> Session | Response:
        """The owner's session, or where a browser without one (or a locked twin) goes."""
        session = await pages.session(request)
        if session is None:
            return RedirectResponse("/", status_code=303)
        if twin.vault.locked:
            return pages.render("locked.html", status=423)
        return session

    async def settings(
        request: Request, session: Session, error: str = "", status: int = 200
    ) -> Response:
        grants = await twin.grants.all()
        experiences = twin.registry.experiences
        return pages.render(
            "settings.html",
            status=status,
            session=session,
            passkeys=await twin.passkeys.all(),
            sessions=await twin.sessions.all(),
            granted=[(experiences.get(e), grants[e]) for e in sorted(grants)],
            tokens=[t for t in await twin.tokens.list() if t.kind == "token"],
            kept=await twin.holdings(),
            backup=await twin.backups.state(),
            every=EVERY,
            done=DONE.get(request.query_params.get("done", ""), ""),
            error=error,
        )

    def back(done: str, part: str) -> Response:
        return RedirectResponse(f"/settings?done={done}#{part}", status_code=303)

    def action(*, recent: bool = False) -> Callable[[Action], Handler]:
        """A settings form: the owner's session, a same-origin form, a recent sign-in where
        ``recent``, and a refusal shown on the settings page."""

        def wrap(handler: Action) -> Handler:
            async def route(request: Request) -> Response:
                session = await owner(request)
                if isinstance(session, Response):
                    return session
                fields = await pages.form(request)
                if recent and not session.recent:
                    return await settings(request, session, CONFIRM, 403)
                try:
                    return await handler(request, session, fields)
                except TwinError as exc:
                    return await settings(request, session, exc.message, status_of(exc))

            return route

        return wrap

    async def show(request: Request) -> Response:
        if (moved := pages.elsewhere(request)) is not None:
            return moved
        session = await owner(request)
        if isinstance(session, Response):
            return session
        return await settings(request, session)

    @action(recent=True)
    async def pair(request: Request, session: Session, fields: dict[str, str]) -> Response:
        link = f"{twin.passkeys.rp.origin}/pair/{await twin.sessions.create_link('pair')}"
        return pages.render(
            "pair.html",
            link=link,
            qr=qr_svg(link),
            minutes=LINK_TTL["pair"] // 60,
            local=twin.passkeys.rp.id == "localhost",
            until=time.time() + LINK_TTL["pair"],
        )

    @action()
    async def rename(request: Request, session: Session, fields: dict[str, str]) -> Response:
        await twin.passkeys.rename(request.path_params["id"], fields.get("name", ""))
        return back("renamed", "passkeys")

    @action(recent=True)
    async def remove(request: Request, session: Session, fields: dict[str, str]) -> Response:
        await twin.passkeys.remove(request.path_params["id"])
        return back("removed", "passkeys")

    @action()
    async def end(request: Request, session: Session, fields: dict[str, str]) -> Response:
        await twin.sessions.end_by_id(request.path_params["id"])
        if request.path_params["id"] == session.id:
            response = RedirectResponse("/", status_code=303)
            response.delete_cookie(COOKIE, path="/")
            return response
        return back("ended", "sessions")

    @action()
    async def revoke_token(request: Request, session: Session, fields: dict[str, str]) -> Response:
        await twin.tokens.delete(request.path_params["id"])
        return back("revoked", "tokens")

    @action(recent=True)  # what the owner's backups become (keep=1 lets go of the others)
    async def schedule(request: Request, session: Session, fields: dict[str, str]) -> Response:
        try:
            every, keep = int(fields.get("every", "")), int(fields.get("keep", ""))
        except ValueError:
            raise BadInput("say how often to back up and how many backups to keep") from None
        enabled = fields.get("enabled") == "on"
        await twin.backups.configure(fields.get("folder", ""), every, keep, enabled)
        return back("scheduled", "backups")

    @action()
    async def back_up_now(request: Request, session: Session, fields: dict[str, str]) -> Response:
        await twin.backups.run_now()
        return back("backing-up", "backups")

    async def backup_state(request: Request) -> Response:
        session = await owner(request)
        if isinstance(session, Response):
            return JSONResponse({"error": "sign in first"}, status_code=401)
        return JSONResponse(await twin.backups.state(), headers={"cache-control": "no-store"})

    return [
        Route("/settings", show, methods=["GET"]),
        Route("/settings/backup", schedule, methods=["POST"]),
        Route("/settings/backup/run", back_up_now, methods=["POST"]),
        Route("/settings/backup/state", backup_state, methods=["GET"]),
        Route("/settings/pair", pair, methods=["POST"]),
        Route("/settings/passkeys/{id}/rename", rename, methods=["POST"]),
        Route("/settings/passkeys/{id}/remove", remove, methods=["POST"]),
        Route("/settings/sessions/{id}/end", end, methods=["POST"]),
        Route("/settings/tokens/{id}/revoke", revoke_token, methods=["POST"]),
    ]
