"""The browser shell over plain HTTP: the owner's pages, granting an experience, its page and
token, activity, sign-out and the headers every page carries (passkeys: test_passkeys.py)."""

from __future__ import annotations

import html
import re
from pathlib import Path

import httpx
import pytest
from conftest import Running

from twin.guards import EXPERIENCE_SANDBOX
from twin.shell import COOKIE

pytestmark = pytest.mark.anyio

ORIGIN = "http://localhost:8470"
SAME_ORIGIN = {"Origin": ORIGIN}
TOKEN_META = re.compile(r'<meta name="twin-token" content="(twin_[A-Za-z0-9_-]+)">')
# What the browser sends with the request of the frame in Chat's shell page.
CHAT_FRAME = {
    "Sec-Fetch-Dest": "iframe",
    "Sec-Fetch-Site": "same-origin",
    "Referer": ORIGIN + "/x/chat/",
}
SANDBOX = EXPERIENCE_SANDBOX.decode()


def session(cookie: str) -> dict[str, str]:
    return {"Cookie": f"{COOKIE}={cookie}"}


def assert_secure_page(response: httpx.Response) -> None:
    """The headers that keep every HTML page from being framed, sniffed or leaking its URL."""
    assert response.headers["content-type"].startswith("text/html")
    csp = response.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp
    assert "'unsafe-inline'" not in csp and "'unsafe-eval'" not in csp
    assert "script-src 'self'" in csp
    assert response.headers["x-content-type-options"] == "nosniff"
    # None of these sends a page's path (a setup link's secret) to another site.
    assert response.headers["referrer-policy"] in {
        "no-referrer",
        "same-origin",
        "strict-origin",
        "strict-origin-when-cross-origin",
    }
    # Under that policy an inline script would not run: every script must come from a file.
    for tag in re.findall(r"<script\b[^>]*>", response.text):
        assert "src=" in tag, tag
    assert not re.search(r"<[^>]+\son[a-z]+\s*=", response.text), "inline event handler"


async def sign_in(tw: Running) -> str:
    return await tw.sign_in()


async def grant_profile(tw: Running, cookie: str) -> str:
    """Allow the Profile experience from its grant page; returns the token its page carries."""
    response = await tw.client.post("/x/profile/grant", headers={**session(cookie), **SAME_ORIGIN})
    assert response.status_code == 303
    assert response.headers["location"] == "/x/profile/"
    page = await tw.client.get("/x/profile/", headers=session(cookie))
    assert page.status_code == 200
    found = TOKEN_META.search(page.text)
    assert found, page.text
    return found.group(1)


async def test_welcome_page_without_a_session(tw: Running) -> None:
    response = await tw.client.get("/")
    assert response.status_code == 200
    assert "This is a twin" in response.text
    assert "twin access link" in response.text
    assert "Your experiences" not in response.text
    assert_secure_page(response)
    bogus = await tw.client.get("/", headers=session("made-up"))
    assert "This is a twin" in bogus.text


async def test_home_lists_the_profile_experience(tw: Running) -> None:
    cookie = await sign_in(tw)
    home = await tw.client.get("/", headers=session(cookie))
    assert home.status_code == 200
    assert "Profile" in home.text
    assert 'href="/x/profile/"' in home.text
    assert "Asks for: profile:read, profile:write" in home.text
    assert home.headers["cache-control"] == "no-store"
    assert_secure_page(home)


async def test_experience_needs_a_grant_then_carries_a_scoped_token(tw: Running) -> None:
    cookie = await sign_in(tw)
    assert (await tw.client.get("/x/profile/")).status_code == 303  # no session: back to /

    ask = await tw.client.get("/x/profile/", headers=session(cookie))
    assert ask.status_code == 200
    assert "Allow Profile?" in ask.text
    assert "See your display name, bio and picture" in ask.text
    assert "Change your display name, bio and picture" in ask.text
    assert 'action="/x/profile/grant"' in ask.text
    assert "notifications" not in ask.text  # it does not declare them
    assert "twin-token" not in ask.text
    assert_secure_page(ask)

    refused = await tw.client.post("/x/profile/grant", headers=session(cookie))
    assert refused.status_code == 403
    anonymous = await tw.client.post("/x/profile/grant", headers=SAME_ORIGIN)
    assert anonymous.status_code == 401
    assert await tw.twin.grants.get("profile") is None

    token = await grant_profile(tw, cookie)
    page = await tw.client.get("/x/profile/", headers=session(cookie))
    assert "Your profile" in page.text
    assert page.headers["cache-control"] == "no-store"
    assert_secure_page(page)

    bearer = {"Authorization": f"Bearer {token}"}
    read = await tw.client.get("/api/profile/", headers=bearer)
    assert read.status_code == 200 and "display_name" in read.json()
    write = await tw.client.put("/api/profile/", headers=bearer, json={"display_name": "Ada"})
    assert write.status_code == 200
    for path in ("/api/twin/", "/api/twin/tokens", "/api/twin/access-log"):
        assert (await tw.client.get(path, headers=bearer)).status_code == 403
    principal = await tw.twin.tokens.authenticate(token)
    assert principal is not None
    assert principal.scopes == frozenset({"profile:read", "profile:write"})


async def test_withdrawing_access_kills_the_experience_token(tw: Running) -> None:
    cookie = await sign_in(tw)
    token = await grant_profile(tw, cookie)
    bearer = {"Authorization": f"Bearer {token}"}
    assert (await tw.client.get("/api/profile/", headers=bearer)).status_code == 200

    home = await tw.client.get("/", headers=session(cookie))
    assert 'action="/x/profile/revoke"' in home.text
    assert (await tw.client.post("/x/profile/revoke", headers=session(cookie))).status_code == 403
    assert (await tw.client.get("/api/profile/", headers=bearer)).status_code == 200

    revoke = await tw.client.post("/x/profile/revoke", headers={**session(cookie), **SAME_ORIGIN})
    assert revoke.status_code == 303
    assert (await tw.client.get("/api/profile/", headers=bearer)).status_code == 401
    again = await tw.client.get("/x/profile/", headers=session(cookie))
    assert "Allow Profile?" in again.text  # it has to ask again


async def test_activity_lists_the_calls(tw: Running) -> None:
    cookie = await sign_in(tw)
    assert (await tw.client.get("/activity")).status_code == 303
    first = await tw.client.get("/activity", headers=session(cookie))
    # the passkey that signed this browser in is the first thing on record
    assert "twin:register" in first.text and "POST /auth/register" in first.text
    assert "profile:read" not in first.text

    token = await grant_profile(tw, cookie)
    bearer = {"Authorization": f"Bearer {token}"}
    await tw.client.get("/api/profile/", headers=bearer)
    await tw.client.get("/api/twin/tokens", headers=bearer)
    activity = await tw.client.get("/activity", headers=session(cookie))
    assert activity.status_code == 200
    assert_secure_page(activity)
    assert "experience:profile" in activity.text
    assert "profile:read" in activity.text and "GET /api/profile/" in activity.text
    assert "twin:admin" in activity.text and "denied (403)" in activity.text
    assert "allowed (200)" in activity.text
    assert token not in activity.text


async def test_experience_static_files_are_served(tw: Running) -> None:
    response = await tw.client.get("/x/profile/static/profile.js")
    assert response.status_code == 200
    assert "javascript" in response.headers["content-type"]
    exp = tw.twin.registry.experiences["profile"]
    assert response.content == (exp.static / "profile.js").read_bytes()
    assert response.headers["x-content-type-options"] == "nosniff"
    shell_js = await tw.client.get("/static/twin.js")
    assert shell_js.status_code == 200 and "twin-token" in shell_js.text
    assert (await tw.client.get("/x/profile/static/nope.js")).status_code == 404


async def test_unknown_experience_page_is_404(tw: Running) -> None:
    cookie = await sign_in(tw)
    response = await tw.client.get("/x/nope/", headers=session(cookie))
    assert response.status_code == 404
    assert "no experience 'nope' is installed" in html.unescape(response.text)
    assert_secure_page(response)


async def test_logout_ends_the_session(tw: Running) -> None:
    cookie = await sign_in(tw)
    assert "Your experiences" in (await tw.client.get("/", headers=session(cookie))).text

    refused = await tw.client.post("/logout", headers=session(cookie))
    assert refused.status_code == 403
    assert "Your experiences" in (await tw.client.get("/", headers=session(cookie))).text

    response = await tw.client.post("/logout", headers={**session(cookie), **SAME_ORIGIN})
    assert response.status_code == 303
    assert response.headers["location"] == "/"
    assert response.headers["set-cookie"].startswith(f'{COOKIE}=""')
    home = await tw.client.get("/", headers=session(cookie))
    assert home.status_code == 303 and home.headers["location"] == "/login"
    assert (await tw.client.get("/activity", headers=session(cookie))).status_code == 303
    assert (
        await tw.client.post("/x/profile/grant", headers={**session(cookie), **SAME_ORIGIN})
    ).status_code == 401


async def test_a_locked_twin_is_unlocked_from_its_page_and_the_attempts_are_logged(
    tmp_path: Path,
) -> None:
    from conftest import running_twin

    from twin.identity import Identity, write_key_file
    from twin.settings import Settings

    settings = Settings(data_dir=tmp_path / "sealed")
    settings.data_dir.mkdir(mode=0o700)
    # The cheapest argon2id cost: this test is about the page, not the key derivation.
    write_key_file(settings.key_path, Identity.generate(), "correct horse", _cost=(1, 8192))
    async with running_twin(settings.data_dir) as tw:
        assert tw.twin.vault.locked
        cookie = await sign_in(tw)
        home = await tw.client.get("/", headers=session(cookie))
        assert home.status_code == 423 and "Your twin is locked" in home.text
        assert_secure_page(home)
        form = {**session(cookie), **SAME_ORIGIN}
        wrong = await tw.client.post("/unlock", headers=form, data={"passphrase": "wrong"})
        assert wrong.status_code == 403 and "does not open this twin" in wrong.text
        elsewhere = await tw.client.post(
            "/unlock",
            headers={**session(cookie), "Origin": "http://evil.example"},
            data={"passphrase": "correct horse"},
        )
        assert elsewhere.status_code == 403 and tw.twin.vault.locked
        right = await tw.client.post("/unlock", headers=form, data={"passphrase": "correct horse"})
        assert right.status_code == 303 and not tw.twin.vault.locked
        assert "Your experiences" in (await tw.client.get("/", headers=session(cookie))).text
        # The device's name, given while the vault was locked, is sealed now it is open.
        assert [k.name for k in await tw.twin.passkeys.all()] == ["A browser"]
        assert (
            await tw.twin.db.fetchval("SELECT count(*) FROM twin_passkeys WHERE name IS NULL") == 0
        )
        attempts = [
            (e["principal"], e["status"])
            for e in await tw.twin.access.entries()
            if e["permission"] == "unlock"
        ]
        assert attempts == [("owner:session", 200), ("owner:session", 403)]


async def test_unlock_needs_a_session(tw: Running) -> None:
    response = await tw.client.post("/unlock", headers=SAME_ORIGIN, data={"passphrase": "x"})
    assert response.status_code == 303 and response.headers["location"] == "/"


async def test_a_cross_site_navigation_without_the_cookie_is_asked_again_from_this_origin(
    tw: Running,
) -> None:
    """A sandboxed page's reload arrives without the SameSite=Strict cookie; the twin answers
    with a page that opens it again from its own origin, the same for any experience name."""
    navigate = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"}
    installed = await tw.client.get("/x/profile/", headers=navigate)
    unknown = await tw.client.get("/x/nope/", headers=navigate)
    assert installed.status_code == unknown.status_code == 200
    assert "Opening…" in installed.text and 'href="/x/profile/open"' in installed.text
    assert installed.text.replace("profile", "nope") == unknown.text
    plain = await tw.client.get("/x/profile/")
    assert plain.status_code == 303 and plain.headers["location"] == "/?next=/x/profile/"
    again = await tw.client.get("/x/profile/open?note=1")
    assert again.status_code == 303 and again.headers["location"] == "/x/profile/?note=1"
    odd = await tw.client.get("/x/No%20Such/open")
    assert odd.status_code == 303 and odd.headers["location"] == "/"


async def test_signing_in_returns_to_the_experience_that_sent_you_and_nowhere_else(
    tw: Running,
) -> None:
    await tw.sign_in()  # a passkey exists: the signed-out home is the login
    tw.client.cookies.clear()
    home = await tw.client.get("/?next=/x/contacts/")
    assert home.status_code == 303 and home.headers["location"] == "/login?next=/x/contacts/"
    login = await tw.client.get("/login?next=/x/contacts/")
    assert 'data-next="/x/contacts/"' in login.text
    for hostile in ("https://evil.example/", "//evil.example/x/a/", "/x/../settings/", "/x/a/b/"):
        sent = await tw.client.get("/", params={"next": hostile})
        assert sent.headers["location"] == "/login", hostile
        page = await tw.client.get("/login", params={"next": hostile})
        assert "data-next" not in page.text, hostile


def policies(response: httpx.Response) -> list[str]:
    return response.headers.get_list("content-security-policy")


def assert_framed_page(response: httpx.Response) -> str:
    """An experience's page as its shell page's frame gets it: sandboxed, framed by the twin's
    own pages only; returns its token."""
    assert response.status_code == 200, response.text
    assert SANDBOX in policies(response)
    assert response.headers["x-frame-options"] == "SAMEORIGIN"
    csp = response.headers["content-security-policy"]
    assert "frame-ancestors 'self'" in csp and "frame-ancestors 'none'" not in csp
    assert "script-src 'self'" in csp and "'unsafe-inline'" not in csp
    found = TOKEN_META.search(response.text)
    assert found, response.text
    return found.group(1)


async def test_a_notifying_experience_opens_in_a_frame_of_a_shell_page(tw: Running) -> None:
    cookie = await sign_in(tw)
    ask = await tw.client.get("/x/chat/", headers=session(cookie))
    assert "Allow Chat?" in ask.text  # the grant page first, at the top, as for any other
    assert "It may also offer to show your browser's notifications" in ask.text
    granted = await tw.client.post("/x/chat/grant", headers={**session(cookie), **SAME_ORIGIN})
    assert granted.status_code == 303 and granted.headers["location"] == "/x/chat/"

    # The top page is the shell's: not sandboxed, no token, one sandboxed frame, its own script.
    for query in ("", "?frame=1"):  # a browser says what it navigates, whatever the address
        top = await tw.client.get(
            f"/x/chat/{query}", headers={**session(cookie), "Sec-Fetch-Dest": "document"}
        )
        assert top.status_code == 200
        assert_secure_page(top)
        assert SANDBOX not in policies(top)
        assert any("frame-src 'self'" in p and "default-src 'none'" in p for p in policies(top))
        assert top.headers["x-frame-options"] == "DENY"
        assert "twin-token" not in top.text
        [frame] = re.findall(r"<iframe\b[^>]*>", top.text)
        assert f'sandbox="{SANDBOX.removeprefix("sandbox ")}"' in frame
        assert 'data-src="/x/chat/"' in frame
        assert '<script src="/static/frame.js" defer></script>' in top.text
        assert "<title>Chat</title>" in top.text
    script = await tw.client.get("/static/frame.js")
    assert script.status_code == 200 and "twin.notify" in script.text

    # The frame's request gets Chat's page, sandboxed, with its token; so does one with the
    # frame's ?frame= from a browser that sends no fetch metadata.
    token = assert_framed_page(
        await tw.client.get("/x/chat/?frame=k1", headers={**session(cookie), **CHAT_FRAME})
    )
    plain = await tw.client.get("/x/chat/?frame=k2", headers=session(cookie))
    assert assert_framed_page(plain) == token
    assert "/x/chat/static/chat.js" in plain.text
    bearer = {"Authorization": f"Bearer {token}"}
    assert (await tw.client.get("/api/chat/conversations", headers=bearer)).status_code == 200

    # Another experience's shell page cannot hold it.
    elsewhere = {**CHAT_FRAME, "Referer": ORIGIN + "/x/notes/"}
    refused = await tw.client.get("/x/chat/?frame=k3", headers={**session(cookie), **elsewhere})
    assert refused.status_code == 403 and "twin-token" not in refused.text
    assert "opens only in its own frame" in refused.json()["error"]["message"]


async def test_a_frame_without_its_page_asks_the_shell_page_to_open_it_again(
    tw: Running,
) -> None:
    """The frame's own reload comes from its opaque origin without the session cookie: it gets
    a page that asks the shell page around it to load it again, the same for any name."""
    reload = {"Sec-Fetch-Dest": "iframe", "Sec-Fetch-Site": "cross-site"}
    installed = await tw.client.get("/x/chat/?frame=k", headers=reload)
    unknown = await tw.client.get("/x/nope/?frame=k", headers=reload)
    assert installed.status_code == unknown.status_code == 200
    assert installed.text == unknown.text
    assert '<script src="/static/reframe.js" defer></script>' in installed.text
    assert 'data-top="no"' in installed.text and "twin-token" not in installed.text
    assert installed.headers["x-frame-options"] == "SAMEORIGIN"
    assert "frame-ancestors 'self'" in installed.headers["content-security-policy"]
    # Signed in, but Chat is not allowed yet: the grant page belongs at the top.
    cookie = await sign_in(tw)
    ask = await tw.client.get("/x/chat/?frame=k", headers={**session(cookie), **CHAT_FRAME})
    assert 'data-top="yes"' in ask.text and "Allow Chat?" not in ask.text
    assert ask.headers["x-frame-options"] == "SAMEORIGIN"


async def test_an_experience_without_notifications_is_served_as_it_always_was(
    tw: Running,
) -> None:
    cookie = await sign_in(tw)
    token = await grant_profile(tw, cookie)
    framed = {"Sec-Fetch-Dest": "iframe", "Referer": ORIGIN + "/x/profile/"}
    for path, headers in (("/x/profile/", {}), ("/x/profile/?frame=1", framed)):
        page = await tw.client.get(path, headers={**session(cookie), **headers})
        assert page.status_code == 200 and "Your profile" in page.text
        assert_secure_page(page)  # frame-ancestors 'none': no frame may hold it
        assert page.headers["x-frame-options"] == "DENY"
        assert SANDBOX in policies(page)
        assert "<iframe" not in page.text
        found = TOKEN_META.search(page.text)
        assert found and found.group(1) == token
