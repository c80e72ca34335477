"""The owner in a real browser: sign in by setup link, grant the Profile experience, edit the
profile, see it published and in the activity log."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from browser import chromium, screenshot
from conftest import tiny_png
from playwright.sync_api import expect

pytestmark = pytest.mark.slow


def test_owner_signs_in_grants_profile_and_edits_it(serve: Any, tmp_path: Path) -> None:
    twin = serve()
    link = re.search(r"(http://localhost:\d+/setup/\S+)", twin.output())
    assert link, twin.output()
    picture = tmp_path / "me.png"
    picture.write_bytes(tiny_png())

    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1100, "height": 760})
        page.goto(link.group(1))
        screenshot(page, "setup-link")
        page.get_by_role("button", name="Sign in to my twin").click()
        page.wait_for_url(re.compile(r"/$"))
        assert page.get_by_role("heading", name="Your experiences").is_visible()
        assert page.get_by_text("Asks for: profile:read, profile:write").is_visible()
        screenshot(page, "shell")

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
        screenshot(page, "activity")

        page.get_by_role("button", name="Sign out").click()
        page.wait_for_url(re.compile(r"/$"))
        assert page.get_by_role("heading", name="This is a twin").is_visible()


def test_a_used_setup_link_shows_how_to_get_a_new_one(serve: Any) -> None:
    twin = serve()
    link = re.search(r"(http://localhost:\d+/setup/\S+)", twin.output())
    assert link
    with chromium() as browser:
        first = browser.new_page()
        first.goto(link.group(1))
        first.get_by_role("button", name="Sign in to my twin").click()
        first.wait_for_url(re.compile(r"/$"))
        second = browser.new_context().new_page()
        response = second.goto(link.group(1))
        assert response is not None and response.status == 410
        assert second.get_by_text("twin access link").is_visible()


def test_a_locked_twin_is_unlocked_from_the_browser(serve: Any, tmp_path: Path) -> None:
    import subprocess

    from conftest import twin_command

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
    link = re.search(r"(http://localhost:\d+/setup/\S+)", fresh)
    assert link, fresh

    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1100, "height": 700})
        page.goto(link.group(1))
        page.get_by_role("button", name="Sign in to my twin").click()
        expect(page.get_by_role("heading", name="Your twin is locked")).to_be_visible()
        page.fill("#passphrase", "wrong horse")
        page.get_by_role("button", name="Unlock").click()
        expect(page.get_by_role("alert")).to_contain_text("does not open this twin")
        screenshot(page, "locked")
        page.fill("#passphrase", "correct horse battery")
        page.get_by_role("button", name="Unlock").click()
        expect(page.get_by_role("heading", name="Your experiences")).to_be_visible()
    assert httpx.get(twin.url + "/api/health").json()["locked"] is False
