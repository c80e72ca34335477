"""The shell: the owner's pages at ``/`` (experiences, grants, activity, unlock) and each
experience's page (in a frame of a shell page, for one that shows notifications) and static
files under ``/x/<id>/``; sign-in and settings live in ``twin.login`` and ``twin.account`` and
share its ``Pages``."""

from __future__ import annotations

import functools
import re
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote, urlsplit

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from twin.errors import Forbidden, NotFound, RateLimited, WrongPassphrase
from twin.experiences import Experience, web_root
from twin.guards import EXPERIENCE_SANDBOX, FRAME_HOST_POLICY, FRAMEABLE
from twin.http import error_json, read_body, status_of
from twin.manifest import ID_PATTERN
from twin.settings import human_size

if TYPE_CHECKING:
    import jinja2

    from twin.core import Twin
    from twin.sessions import Session

COOKIE = "twin_session"
_FRAMEABLE = {name.decode(): value.decode() for name, value in [FRAMEABLE]}


def shell_loader() -> jinja2.BaseLoader:
    import jinja2

    return jinja2.FileSystemLoader(web_root() / "shell" / "templates")


def _environment(loader: jinja2.BaseLoader, *, sandboxed: bool = False) -> jinja2.Environment:
    """Templates autoescape; an experience's run sandboxed, since experiences ship no Python
    and a template must not become a way to run some on the twin. (jinja2 is loaded with the
    first page, not at start-up: a twin that only serves its API never needs it.)"""
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    kind = ImmutableSandboxedEnvironment if sandboxed else jinja2.Environment
    env = kind(loader=loader, autoescape=True, auto_reload=False)
    env.filters["when"] = lambda ts: time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))
    env.filters["clock"] = lambda ts: time.strftime("%H:%M", time.localtime(ts))
    env.filters["ago"] = ago
    env.filters["size"] = human_size
    return env


def ago(ts: float) -> str:
    """How long ago, as people say it: "just now", "5 minutes ago", "3 days ago"."""
    seconds = max(0, int(time.time() - ts))
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            count = seconds // size
            return f"{count} {unit}{'s' if count > 1 else ''} ago"
    return "just now"


def same_origin(request: Request, twin: Twin) -> None:
    """Refuse a state-changing browser request that did not come from the twin's own pages."""
    site = request.headers.get("sec-fetch-site")
    origin = request.headers.get("origin")
    if site is None and origin is None:
        raise Forbidden("this form must be sent by a browser from the twin's own page")
    if site is not None and site not in ("same-origin", "none"):
        raise Forbidden("cross-site request refused")
    if origin is not None:
        own = {f"{request.url.scheme}://{request.headers.get('host', '')}", twin.settings.url}
        parts = urlsplit(origin)
        if f"{parts.scheme}://{parts.netloc}" not in own:
            raise Forbidden(f"request from another origin ({origin}) refused")


class Pages:
    """What every shell page needs: its templates, the owner's session, the session cookie."""

    def __init__(self, twin: Twin) -> None:
        self.twin = twin
        self.secure = twin.settings.url.startswith("https://")

    @functools.cached_property
    def templates(self) -> jinja2.Environment:
        return _environment(shell_loader())

    def render(self, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        context.setdefault("twin", self.twin)
        return HTMLResponse(
            self.templates.get_template(name).render(**context),
            status,
            headers={"Cache-Control": "no-store"},
        )

    async def session(self, request: Request) -> Session | None:
        return await self.twin.sessions.check(request.cookies.get(COOKIE))

    async def form(self, request: Request) -> dict[str, str]:
        """A small form posted from one of the twin's own pages (refused from elsewhere)."""
        same_origin(request, self.twin)
        fields = parse_qs((await read_body(request, 4096)).decode("utf-8", "replace"))
        return {key: values[0] for key, values in fields.items()}

    def sign_in(self, response: Response, secret: str) -> None:
        response.set_cookie(
            COOKIE, secret, httponly=True, samesite="strict", secure=self.secure, path="/"
        )

    def elsewhere(self, request: Request) -> Response | None:
        """A page asked for at 127.0.0.1 or [::1] goes to localhost: browsers refuse passkeys
        for an IP address, and the session cookie lives on one host name."""
        if self.twin.settings.public_url or request.url.hostname not in ("127.0.0.1", "::1"):
            return None
        target = self.twin.passkeys.rp.origin + request.url.path
        if request.url.query:
            target += "?" + request.url.query
        return RedirectResponse(target, status_code=307)


_RETURN = re.compile(rf"/x/{ID_PATTERN.pattern}/")


def return_path(request: Request) -> str:
    """Where an experience's page is, to come back to after signing in."""
    return f"/x/{request.path_params['exp']}/"


def after_login(request: Request) -> str | None:
    """The experience page a sign-in returns to (``?next=``), if it is one; anything else is
    ignored, so the parameter can send nobody to another site."""
    target = request.query_params.get("next", "")
    return target if _RETURN.fullmatch(target) else None


def framed(request: Request) -> bool:
    """Whether a request for an experience's page is the one of the frame the shell holds it in:
    the browser says so (``Sec-Fetch-Dest``); from one that sends no fetch metadata, the
    ``?frame=`` that the shell's frame adds to the address does."""
    dest = request.headers.get("sec-fetch-dest")
    if dest is not None:
        return dest in ("iframe", "frame")
    return "frame" in request.query_params


def shell_routes(twin: Twin) -> list[BaseRoute]:
    """The shell's routes (with sign-in and settings) plus one page route and one static mount
    per experience."""
    from twin.account import account_routes
    from twin.login import login_routes

    pages = Pages(twin)
    experience_envs: dict[str, jinja2.Environment] = {}

    def experience_env(exp: Experience) -> jinja2.Environment:
        if exp.id not in experience_envs:
            import jinja2

            loader = jinja2.ChoiceLoader(
                [
                    jinja2.FileSystemLoader(exp.templates),
                    jinja2.PrefixLoader({"twin": shell_loader()}),
                ]
            )
            experience_envs[exp.id] = _environment(loader, sandboxed=True)
        return experience_envs[exp.id]

    page = pages.render

    async def signed_in(request: Request) -> bool:
        return await pages.session(request) is not None

    def locked(error: str = "", status: int = 423) -> HTMLResponse:
        return page("locked.html", status=status, error=error)

    async def home(request: Request) -> Response:
        if (moved := pages.elsewhere(request)) is not None:
            return moved
        if not await signed_in(request):
            if await twin.passkeys.count():
                target = after_login(request)
                query = f"?next={quote(target)}" if target else ""
                return RedirectResponse(f"/login{query}", status_code=303)
            return page("welcome.html")
        if twin.vault.locked:
            return locked()
        grants = await twin.grants.all()
        return page(
            "home.html",
            experiences=sorted(twin.registry.experiences.values(), key=lambda e: e.name.lower()),
            grants=grants,
            failed=twin.registry.failed,
        )

    async def logout(request: Request) -> Response:
        same_origin(request, twin)
        await twin.sessions.end(request.cookies.get(COOKIE))
        response = RedirectResponse("/", status_code=303)
        response.delete_cookie(COOKIE, path="/")
        return response

    async def activity(request: Request) -> Response:
        if not await signed_in(request):
            return RedirectResponse("/", status_code=303)
        return page("activity.html", entries=await twin.access.entries(limit=200))

    def find(request: Request) -> Experience:
        exp = twin.registry.experiences.get(request.path_params["exp"])
        if exp is None:
            raise NotFound(f"no experience {request.path_params['exp']!r} is installed")
        return exp

    def reframe(*, top: bool = False) -> HTMLResponse:
        """The answer to a frame's request that cannot be its page: a page the frame may show,
        which asks the shell's page around it to open the experience again (reframe.js)."""
        response = page("reframe.html", top=top)
        response.headers.update(_FRAMEABLE)
        return response

    async def experience(request: Request) -> Response:
        # A notifying experience's page runs in a frame of a shell page (experience_frame.html),
        # which shows the notifications that its opaque origin may not; the frame's request for
        # the page itself is told apart by framed().
        inside = framed(request)
        # the session first: a stranger learns nothing of which experiences are installed
        if not await signed_in(request):
            if inside:
                # The frame's own reload comes from its opaque origin, without the cookie: the
                # shell's page around it loads it again from this origin, where it is sent.
                return reframe()
            headers = request.headers
            if headers.get("sec-fetch-site") == "cross-site" and (
                headers.get("sec-fetch-mode") == "navigate"
            ):
                # A reload asked for by the experience's own page comes from its opaque origin,
                # so the browser holds the SameSite=Strict cookie back: ask once more, from
                # this origin, where it is sent. Without a session, that ends at the login.
                # named from the address, installed or not: this tells a stranger nothing
                return page("again.html", exp=request.path_params["exp"])
            # back here after signing in (with the link's #fragment, which the browser keeps)
            return RedirectResponse(f"/?next={quote(return_path(request))}", status_code=303)
        try:
            exp = find(request)
        except NotFound as missing:
            if inside:
                return reframe(top=True)
            return page("not_found.html", status=404, message=missing.message)
        inside = inside and exp.notifications  # any other is served as it always was
        if twin.vault.locked:
            return reframe(top=True) if inside else locked()
        grant = await twin.grants.get(exp.id)
        if grant is None and exp.uses:
            if inside:
                return reframe(top=True)  # the grant page is the shell's, at the top
            manifests = twin.registry.manifests
            wants = []
            for scope in sorted(exp.uses):
                cap_id, _, rest = scope.partition(":")
                name, _, resource = rest.partition("@")
                wants.append((scope, manifests[cap_id].permission(name), resource))
            return page("grant.html", experience=exp, wants=wants)
        if exp.notifications and not inside:
            host = page("experience_frame.html", experience=exp)
            host.headers["Content-Security-Policy"] = FRAME_HOST_POLICY.decode()
            return host
        referer = request.headers.get("referer")
        if inside and referer is not None and urlsplit(referer).path != f"/x/{exp.id}/":
            # The shell's page for another experience must not hold this one (and its token).
            raise Forbidden(f"the page of {exp.name} opens only in its own frame")
        token = twin.grants.token(grant) if grant else ""
        html = (
            experience_env(exp)
            .get_template("index.html")
            .render(
                experience=exp,
                token=token,
                did=twin.did,
                version=twin.version,
                granted=sorted(grant.scopes) if grant else [],
            )
        )
        # The page runs in an opaque origin: it cannot read the shell, use the owner's session
        # or reach another experience's storage; it talks to /api with its own token only.
        return HTMLResponse(
            html,
            headers={
                "Cache-Control": "no-store",
                "Content-Security-Policy": EXPERIENCE_SANDBOX.decode(),
                **(_FRAMEABLE if inside else {}),
            },
        )

    async def open_again(request: Request) -> Response:
        exp = request.path_params["exp"]
        if not ID_PATTERN.fullmatch(exp):
            return RedirectResponse("/", status_code=303)
        target = f"/x/{exp}/"
        if request.url.query:
            target += "?" + request.url.query
        return RedirectResponse(target, status_code=303)

    async def grant(request: Request) -> Response:
        if not await signed_in(request):
            return error_json(401, "unauthorized", "sign in to the twin first")
        exp = find(request)
        same_origin(request, twin)
        if twin.vault.locked:
            return locked()
        await twin.grants.grant(exp, exp.uses)
        return RedirectResponse(f"/x/{exp.id}/", status_code=303)

    async def revoke(request: Request) -> Response:
        if not await signed_in(request):
            return error_json(401, "unauthorized", "sign in to the twin first")
        exp = find(request)
        same_origin(request, twin)
        await twin.grants.revoke(exp.id)
        if request.query_params.get("back") == "settings":
            return RedirectResponse("/settings?done=withdrawn#experiences", status_code=303)
        return RedirectResponse("/", status_code=303)

    async def unlock(request: Request) -> Response:
        if not await signed_in(request):
            return RedirectResponse("/", status_code=303)
        form = await pages.form(request)
        response: Response = RedirectResponse("/", status_code=303)
        try:
            await twin.unlock_remotely(form.get("passphrase", ""), "owner:session")
        except (WrongPassphrase, RateLimited) as exc:
            response = locked(exc.message[:1].upper() + exc.message[1:] + ".", status_of(exc))
            if isinstance(exc, RateLimited):
                response.headers["Retry-After"] = str(exc.retry_after)
        twin.access.record(
            "owner:session",
            "twin",
            "unlock",
            "POST",
            "/unlock",
            200 if response.status_code == 303 else response.status_code,
        )
        return response

    routes: list[BaseRoute] = [
        *login_routes(twin, pages),
        *account_routes(twin, pages),
        Route("/", home, methods=["GET"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/unlock", unlock, methods=["POST"]),
        Route("/activity", activity, methods=["GET"]),
        Mount("/static", app=StaticFiles(directory=web_root() / "shell" / "static"), name="static"),
        Route("/x/{exp}/", experience, methods=["GET"]),
        Route("/x/{exp}/open", open_again, methods=["GET"]),
        Route("/x/{exp}/grant", grant, methods=["POST"]),
        Route("/x/{exp}/revoke", revoke, methods=["POST"]),
    ]
    for exp in twin.registry.experiences.values():
        if exp.static.is_dir():
            routes.append(Mount(f"/x/{exp.id}/static", app=StaticFiles(directory=exp.static)))
    return routes
