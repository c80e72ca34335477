"""The owner in a real browser (Debian's chromium, with its virtual passkey authenticator):
the setup link, signing out and in, pairing a second device, settings, granting the Profile
experience and using it, a locked twin, and the refusals a person would run into."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
from browser import authenticator, chromium, screenshot
from conftest import tiny_png, twin_command, wait_for
from playwright.sync_api import Page, expect

pytestmark = pytest.mark.slow

SETUP_LINK = re.compile(r"(http://localhost:\d+/setup/\S+)")
HOME = re.compile(r"/$")


def setup_link(output: str) -> str:
    found = SETUP_LINK.findall(output)
    assert found, output
    return str(found[-1])


def create_passkey(page: Page, link: str, name: str | None = None) -> None:
    page.goto(link)
    if name is not None:
        page.fill("#device-name", name)
    page.get_by_role("button", name="Create a passkey").click()
    page.wait_for_url(HOME)
    expect(page.get_by_role("heading", name="Your experiences")).to_be_visible()


def sign_in(page: Page) -> None:
    page.get_by_role("button", name="Sign in with a passkey").click()
    page.wait_for_url(HOME)
    expect(page.get_by_role("heading", name="Your experiences")).to_be_visible()


def sign_out(page: Page) -> None:
    page.get_by_role("button", name="Sign out").first.click()
    page.wait_for_url(re.compile(r"/login$"))


def test_owner_creates_a_passkey_signs_out_and_in_and_uses_profile(
    serve: Any, tmp_path: Path
) -> None:
    twin = serve()
    link = setup_link(twin.output())
    picture = tmp_path / "me.png"
    picture.write_bytes(tiny_png())

    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1100, "height": 760})
        authenticator(page)
        page.goto(link)
        expect(page.get_by_role("heading", name="Welcome to your twin")).to_be_visible()
        expect(page.locator("#device-name")).to_have_value(re.compile("Chrome on Linux"))
        screenshot(page, "setup-link")
        create_passkey(page, link, "Ada's laptop")
        assert page.get_by_text("Asks for: profile:read, profile:write").is_visible()
        screenshot(page, "shell")

        sign_out(page)
        expect(page.get_by_role("heading", name="Sign in to your twin")).to_be_visible()
        screenshot(page, "login")
        sign_in(page)

        # The grant screen says, in plain words, what Profile asks for.
        page.get_by_role("link", name=re.compile("Profile")).click()
        assert page.get_by_role("heading", name="Allow Profile?").is_visible()
        assert page.get_by_text("See your display name, bio and picture").is_visible()
        assert page.get_by_text("Change your display name, bio and picture").is_visible()
        screenshot(page, "grant")
        page.get_by_role("button", name="Allow").click()

        page.wait_for_selector("#profile-form")
        page.fill("#display_name", "Ada Lovelace")
        page.fill("#bio", "Writes programs for engines that do not exist yet. <script>x</script>")
        page.get_by_role("button", name="Save").click()
        expect(page.locator("#status")).to_have_text("Saved.")
        page.set_input_files("#picture", str(picture))
        expect(page.locator("#status")).to_have_text("Picture saved.")
        assert "/api/profile/avatar" in (page.get_attribute("#avatar", "src") or "")
        screenshot(page, "profile")
        page.reload()
        expect(page.locator("#display_name")).to_have_value("Ada Lovelace")
        # A page that changed its own address is reloaded from its opaque origin, without the
        # SameSite=Strict cookie: the twin asks once more, from its own origin, and it opens.
        page.evaluate("history.replaceState(null, '', location.pathname + '#edit')")
        page.reload()
        expect(page.locator("#display_name")).to_have_value("Ada Lovelace")
        assert page.url.endswith("/x/profile/#edit")

        # The experience runs sandboxed: its script cannot use the owner's session to read the
        # shell or grant itself more, only its own token on /api.
        probe = page.evaluate("""async () => {
            const out = {};
            try {
                const shell = await fetch("/", {credentials: "include"});
                out.shell = await shell.text();
            } catch (error) { out.shell = "blocked"; }
            try {
                const grant = await fetch("/x/profile/grant",
                                          {method: "POST", credentials: "include"});
                out.grant = grant.status;
            } catch (error) { out.grant = "blocked"; }
            try { localStorage.setItem("k", "v"); out.storage = "open"; }
            catch (error) { out.storage = "blocked"; }
            out.origin = self.origin;
            return out;
        }""")
        assert "Your experiences" not in probe["shell"]
        assert probe["grant"] in ("blocked", 401, 403)
        assert probe["origin"] == "null"

        public = httpx.get(twin.url + "/.well-known/twin").json()
        assert public["profile"]["display_name"] == "Ada Lovelace"
        assert public["profile"]["bio"].endswith("<script>x</script>")
        assert httpx.get(public["profile"]["avatar"]).content == tiny_png()

        page.goto(twin.url.replace("127.0.0.1", "localhost") + "/activity")
        assert page.get_by_text("profile:write").first.is_visible()
        assert page.get_by_text("twin:login").first.is_visible()
        screenshot(page, "activity")

        page.get_by_role("link", name="Settings").click()
        expect(page.get_by_role("heading", name="Settings", exact=True)).to_be_visible()
        expect(page.locator("#passkeys input[name=name]")).to_have_value("Ada's laptop")
        expect(page.get_by_text("Your only passkey")).to_be_visible()
        expect(page.locator("#experiences")).to_contain_text("profile:write")
        screenshot(page, "settings")


def test_a_used_setup_link_is_refused(serve: Any) -> None:
    twin = serve()
    link = setup_link(twin.output())
    with chromium() as browser:
        first = browser.new_page()
        authenticator(first)
        create_passkey(first, link)
        second = browser.new_context().new_page()
        authenticator(second)
        response = second.goto(link)
        assert response is not None and response.status == 410
        assert second.get_by_text("twin access link").is_visible()
        assert second.get_by_role("button", name="Create a passkey").count() == 0


def test_a_passkey_without_user_verification_is_refused(serve: Any) -> None:
    twin = serve()
    link = setup_link(twin.output())
    with chromium() as browser:
        page = browser.new_page()
        device = authenticator(page, verified=False)
        page.goto(link)
        page.get_by_role("button", name="Create a passkey").click()
        expect(page.locator("#passkey-status.error")).to_contain_text("could not verify you")
        assert page.url == link  # no passkey, no session: the twin still waits for its owner
        assert "This is a twin" in httpx.get(twin.url + "/", follow_redirects=True).text

        device("setUserVerified", isUserVerified=True)  # the owner puts a finger on the reader
        page.get_by_role("button", name="Create a passkey").click()
        page.wait_for_url(HOME)

        sign_out(page)
        device("setUserVerified", isUserVerified=False)
        page.get_by_role("button", name="Sign in with a passkey").click()
        expect(page.locator("#passkey-status.error")).to_contain_text("could not verify you")
        assert page.url.endswith("/login")


def test_a_second_device_pairs_signs_in_and_is_revoked(serve: Any) -> None:
    twin = serve()
    with chromium() as browser:
        laptop = browser.new_page(viewport={"width": 1100, "height": 900})
        authenticator(laptop)
        create_passkey(laptop, setup_link(twin.output()), "Laptop")

        laptop.goto(twin.url.replace("127.0.0.1", "localhost") + "/settings")
        laptop.get_by_role("button", name="Add a device").click()
        expect(laptop.get_by_role("heading", name="Add a device")).to_be_visible()
        assert laptop.get_by_role("img", name="QR code of the pairing link").is_visible()
        pairing = laptop.get_by_label("Pairing link").input_value()
        assert "/pair/" in pairing
        screenshot(laptop, "pair")

        phone = browser.new_context(viewport={"width": 420, "height": 800}).new_page()
        phone_device = authenticator(phone)
        phone.goto(pairing)
        expect(phone.get_by_role("heading", name="Add this device to your twin")).to_be_visible()
        create_passkey(phone, pairing, "Phone")
        assert phone.goto(pairing).status == 410  # type: ignore[union-attr]

        # both devices sign in with their own passkey
        for page in (laptop, phone):
            page.goto(twin.url.replace("127.0.0.1", "localhost") + "/")
            sign_out(page)
            sign_in(page)

        # the laptop signs the phone's browser out: the phone is back at the login page
        laptop.goto(twin.url.replace("127.0.0.1", "localhost") + "/settings")
        phone_row = laptop.locator("#sessions tr", has_text="this browser").count()
        assert phone_row == 1
        laptop.locator("#sessions tbody tr").filter(has_not_text="this browser").get_by_role(
            "button", name="Sign out"
        ).click()
        expect(laptop.get_by_role("status")).to_have_text("That browser is signed out.")
        phone.reload()
        phone.wait_for_url(re.compile(r"/login$"))
        sign_in(phone)

        # then removes the phone's passkey: its browser is out and the passkey is refused
        laptop.goto(twin.url.replace("127.0.0.1", "localhost") + "/settings")
        laptop.once("dialog", lambda dialog: dialog.accept())
        laptop.locator("#passkeys tbody tr").filter(
            has=laptop.locator("input[value=Phone]")
        ).get_by_role("button", name="Remove").click()
        expect(laptop.get_by_role("status")).to_contain_text("Passkey removed")
        expect(laptop.get_by_text("Your only passkey")).to_be_visible()
        phone.reload()
        phone.wait_for_url(re.compile(r"/login$"))
        assert len(phone_device("getCredentials")["credentials"]) == 1
        phone.get_by_role("button", name="Sign in with a passkey").click()
        expect(phone.get_by_role("alert")).to_contain_text("not one of this twin's")
        screenshot(phone, "login-refused")
        # and the page told the phone to forget it, so it is not offered again
        wait_for(lambda: not phone_device("getCredentials")["credentials"], what="the signal")


def test_a_passkey_made_for_another_address_is_refused(serve: Any) -> None:
    from conftest import free_port

    elsewhere = f"http://localhost:{free_port()}"
    twin = serve("--public-url", elsewhere)
    port = twin.url.rsplit(":", 1)[1]
    secret = setup_link(twin.output()).rsplit("/", 1)[1]
    assert elsewhere in twin.output()
    with chromium() as browser:
        page = browser.new_page()
        authenticator(page)
        page.goto(f"http://localhost:{port}/setup/{secret}")
        page.get_by_role("button", name="Create a passkey").click()
        alert = page.get_by_role("alert")
        expect(alert).to_contain_text(f"came from http://localhost:{port}")
        expect(alert).to_contain_text(f"this twin is at {elsewhere}")
        expect(alert).to_contain_text("--public-url")


def test_an_experience_without_a_grant_cannot_use_the_api(serve: Any) -> None:
    twin = serve()
    base = twin.url.replace("127.0.0.1", "localhost")
    with chromium() as browser:
        page = browser.new_page()
        authenticator(page)
        create_passkey(page, setup_link(twin.output()))
        page.goto(base + "/x/profile/")
        expect(page.get_by_role("heading", name="Allow Profile?")).to_be_visible()
        assert page.locator('meta[name="twin-token"]').count() == 0
        # the owner's own session does not open the API either: only a granted token does
        status = page.evaluate(
            "async () => (await fetch('/api/profile/', {credentials: 'include'})).status"
        )
        assert status == 401

        page.get_by_role("button", name="Allow").click()
        page.wait_for_selector("#profile-form")
        token = page.locator('meta[name="twin-token"]').get_attribute("content")
        assert token

        page.goto(base + "/settings")
        page.locator("#experiences").get_by_role("button", name="Withdraw").click()
        expect(page.get_by_role("status")).to_have_text("Access withdrawn.")
        status = page.evaluate(
            "async (token) => (await fetch('/api/profile/', "
            "{headers: {Authorization: 'Bearer ' + token}})).status",
            token,
        )
        assert status == 401
        page.goto(base + "/x/profile/")
        expect(page.get_by_role("heading", name="Allow Profile?")).to_be_visible()


def test_a_locked_twin_is_unlocked_after_signing_in(serve: Any, tmp_path: Path) -> None:
    secret = tmp_path / "passphrase"
    secret.write_text("correct horse battery\n")
    data_dir = tmp_path / "sealed"
    subprocess.run(
        twin_command("init", "--data-dir", str(data_dir), "--passphrase-file", str(secret)),
        check=True,
        capture_output=True,
    )
    twin = serve(data_dir=data_dir)
    assert httpx.get(twin.url + "/api/health").json()["locked"] is True
    port = twin.url.rsplit(":", 1)[1]
    fresh = subprocess.run(
        twin_command("access", "link", "--data-dir", str(data_dir), "--port", port),
        check=True,
        capture_output=True,
        text=True,
    ).stdout

    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1100, "height": 700})
        authenticator(page)
        page.goto(setup_link(fresh))
        page.fill("#device-name", "Desk")
        page.get_by_role("button", name="Create a passkey").click()
        expect(page.get_by_role("heading", name="Your twin is locked")).to_be_visible()
        page.fill("#passphrase", "wrong horse")
        page.get_by_role("button", name="Unlock").click()
        expect(page.get_by_role("alert")).to_contain_text("does not open this twin")
        screenshot(page, "locked")
        page.fill("#passphrase", "correct horse battery")
        page.get_by_role("button", name="Unlock").click()
        expect(page.get_by_role("heading", name="Your experiences")).to_be_visible()
        assert httpx.get(twin.url + "/api/health").json()["locked"] is False
        # the name given while the vault was locked is kept, sealed, now it is open
        page.get_by_role("link", name="Settings").click()
        expect(page.locator("#passkeys input[name=name]")).to_have_value("Desk")
