"""Signing the owner in with passkeys: the login page, setup and pairing links, and the JSON
steps of the WebAuthn ceremonies that ``web/shell/static/passkey.js`` drives."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from twin.errors import BadInput, Forbidden, Gone, TwinError, Unauthorized
from twin.guards import RateLimiter
from twin.http import client_address, json_response, read_body, status_of
from twin.sessions import DEAD_LINK

if TYPE_CHECKING:
    from twin.core import Twin
    from twin.shell import Pages

MAX_CEREMONY_BODY = 64 * 1024  # an attestation with its certificates fits well inside

_BROWSERS = (
    ("Edg/", "Edge"),
    ("OPR/", "Opera"),
    ("Firefox/", "Firefox"),
    ("Chromium/", "Chromium"),
    ("Chrome/", "Chrome"),
    ("Safari/", "Safari"),
)
_SYSTEMS = (
    ("iPhone", "iPhone"),
    ("iPad", "iPad"),
    ("Android", "Android"),
    ("CrOS", "ChromeOS"),
    ("Windows", "Windows"),
    ("Mac OS X", "macOS"),
    ("Linux", "Linux"),
)


def device_label(user_agent: str) -> str:
    """A name for a device the owner will recognise, such as "Firefox on Android"."""
    browser = next((name for mark, name in _BROWSERS if mark in user_agent), "A browser")
    system = next((name for mark, name in _SYSTEMS if mark in user_agent), "")
    return f"{browser} on {system}" if system else browser


async def json_object(request: Request) -> dict[str, Any]:
    raw = await read_body(request, MAX_CEREMONY_BODY)
    try:
        body = json.loads(raw) if raw else {}
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise BadInput("the body is not valid JSON (or is nested too deeply)") from None
    if not isinstance(body, dict):
        raise BadInput("the body must be a JSON object")
    return body


def login_routes(twin: Twin, pages: Pages) -> list[BaseRoute]:
    from twin.account import CONFIRM
    from twin.shell import COOKIE, after_login, same_origin

    # Ceremonies started from one address: twenty at once, then one every two seconds. Only
    # starting counts: the answer needs a ceremony, and each is used once.
    attempts = RateLimiter(rate=0.5, burst=20)

    def device(request: Request) -> str:
        return device_label(request.headers.get("user-agent", ""))

    async def login_page(request: Request) -> Response:
        if (moved := pages.elsewhere(request)) is not None:
            return moved
        if await pages.session(request) is not None:
            return RedirectResponse("/", status_code=303)
        if not await twin.passkeys.count():
            return pages.render("welcome.html")
        return pages.render(
            "login.html", origin=twin.passkeys.rp.origin, next=after_login(request) or ""
        )

    async def link_page(request: Request) -> Response:
        if (moved := pages.elsewhere(request)) is not None:
            return moved
        purpose = request.url.path.split("/")[1]
        secret = request.path_params["secret"]
        if await twin.sessions.link_purpose(secret) != purpose:
            return pages.render("link_dead.html", status=410, purpose=purpose)
        return pages.render(
            "register.html",
            secret=secret,
            purpose=purpose,
            device=device(request),
            first=not await twin.passkeys.count(),
            origin=twin.passkeys.rp.origin,
        )

    async def ceremony(request: Request, *, starts: bool = False) -> tuple[dict[str, Any], str]:
        """The checks every ceremony step passes: same origin, the rate, a JSON object."""
        same_origin(request, twin)
        who = client_address(request)
        if starts:
            attempts.check(who)
        return await json_object(request), who

    def logged(response: Response, who: str, step: str) -> Response:
        twin.access.record(f"browser:{who}", "twin", step, "POST", f"/auth/{step}", 200)
        return response

    def refused(exc: TwinError, who: str, step: str) -> None:
        twin.access.record(f"browser:{who}", "twin", step, "POST", f"/auth/{step}", status_of(exc))

    async def register_options(request: Request) -> Response:
        body, _ = await ceremony(request, starts=True)
        link = body.get("link")
        if link is not None:
            if not isinstance(link, str) or await twin.sessions.link_purpose(link) is None:
                raise Gone(DEAD_LINK)
        else:
            session = await pages.session(request)
            if session is None:
                raise Unauthorized("open a setup or pairing link, or sign in first")
            if not session.recent:
                raise Forbidden(CONFIRM)
        started, options = await twin.passkeys.registration_options(link)
        return json_response({"ceremony": started, "publicKey": options})

    async def register(request: Request) -> Response:
        body, who = await ceremony(request)
        session = await pages.session(request)
        name = body.get("name")
        try:
            passkey = await twin.passkeys.register(
                body.get("ceremony"),
                body.get("credential"),
                name if isinstance(name, str) and name.strip() else device(request),
                signed_in=session is not None,
            )
        except TwinError as exc:
            refused(exc, who, "register")
            raise
        response = json_response({"passkey": passkey, "next": "/"})
        if session is None:
            pages.sign_in(response, await twin.sessions.start(passkey, device(request)))
        return logged(response, who, "register")

    async def login_options(request: Request) -> Response:
        await ceremony(request, starts=True)
        started, options = twin.passkeys.login_options()
        return json_response({"ceremony": started, "publicKey": options})

    async def login(request: Request) -> Response:
        body, who = await ceremony(request)
        try:
            passkey = await twin.passkeys.login(body.get("ceremony"), body.get("credential"))
        except TwinError as exc:
            refused(exc, who, "login")
            raise
        response = json_response({"next": "/"})
        await twin.sessions.end(request.cookies.get(COOKIE))  # this browser's earlier one
        pages.sign_in(response, await twin.sessions.start(passkey, device(request)))
        return logged(response, who, "login")

    return [
        Route("/login", login_page, methods=["GET"]),
        Route("/setup/{secret}", link_page, methods=["GET"]),
        Route("/pair/{secret}", link_page, methods=["GET"]),
        Route("/auth/register/options", register_options, methods=["POST"]),
        Route("/auth/register", register, methods=["POST"]),
        Route("/auth/login/options", login_options, methods=["POST"]),
        Route("/auth/login", login, methods=["POST"]),
    ]
