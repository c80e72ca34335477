"""Backups in Settings, in a real browser: the owner picks a folder and switches the schedule
on, a backup runs with its progress bar moving, and the page shows the last backup's outcome
(and says so plainly when one could not run)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
from browser import SCREENSHOTS, authenticator, chromium
from conftest import twin_command
from playwright.sync_api import Route, expect
from test_browser import create_passkey, setup_link

pytestmark = pytest.mark.slow
MIB = 1024 * 1024


def put(url: str, token: str, path: str, content: bytes) -> None:
    response = httpx.put(
        f"{url}/api/files/content/{path}",
        content=content,
        params={"parents": "1"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=60,
    )
    assert response.status_code == 201, response.text


def test_the_owner_switches_on_backups_and_watches_one_run(serve: Any, tmp_path: Path) -> None:
    twin = serve()
    token = subprocess.run(
        twin_command("token", "create", "--scope", "files:*", "--data-dir", str(twin.data_dir)),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()[-1]
    for n in range(3):
        put(twin.url, token, f"Videos/{n}.bin", os.urandom(16 * MIB))
    folder = tmp_path / "usb-disk" / "twin-backups"
    settings = twin.url.replace("127.0.0.1", "localhost") + "/settings"

    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        authenticator(page)
        create_passkey(page, setup_link(twin.output()))
        page.goto(settings + "#backups")
        backups = page.locator("#backups")
        expect(backups.get_by_text("No backup yet.")).to_be_visible()

        # a folder that is no full path is refused, with what to give instead
        backups.get_by_label("Backup folder").fill("backups")
        backups.get_by_role("button", name="Save").click()
        expect(page.get_by_role("alert").first).to_contain_text("full path")

        page.goto(settings + "#backups")
        backups.get_by_label("Backup folder").fill(str(folder))
        backups.get_by_label("How often").select_option(label="every day")
        backups.get_by_label("How many backups to keep").fill("3")
        backups.get_by_role("button", name="Save").click()
        expect(page.get_by_role("status")).to_have_text("Backups saved.")
        # switched on with none made yet: the first runs now, and the page follows it
        page.reload()
        expect(backups.get_by_text("Last backup")).to_be_visible(timeout=60_000)
        first = backups.locator("[data-backup=snapshot]").inner_text()
        assert (folder / "snapshots" / f"{first}.snap").is_file()

        # new photos, then Back up now: the page shows the backup running. Its questions to
        # the twin are held back meanwhile, so a backup quicker than this test's look does
        # not turn the page to its outcome before the look
        put(twin.url, token, "Photos/new.bin", os.urandom(64 * MIB))
        held: list[Route] = []

        def hold(route: Route) -> None:
            if held is not None:
                held.append(route)
            else:
                route.continue_()

        page.route("**/settings/backup/state", hold)
        backups.get_by_role("button", name="Back up now").click()
        expect(page.get_by_role("status")).to_contain_text("The backup has begun")
        bar = page.get_by_role("progressbar", name="Backup progress")
        expect(backups.get_by_text("Backing up")).to_be_visible()
        expect(bar).to_be_visible()
        backups.screenshot(path=str(SCREENSHOTS / "settings-backup-running.png"))
        waiting, held = held, None  # type: ignore[assignment]
        for route in waiting:
            route.continue_()
        # the page turns to the outcome by itself when the backup ends
        expect(backups.get_by_text("Last backup")).to_be_visible(timeout=60_000)
        second = backups.locator("[data-backup=snapshot]").inner_text()
        assert second != first
        expect(backups).to_contain_text("of which")  # how much was new
        expect(bar).to_be_hidden()
        backups.screenshot(path=str(SCREENSHOTS / "settings-backup-done.png"))

        # the backup disk is not mounted: the next backup fails (and writes nowhere else),
        # and the page says why, and when the last good one was
        shutil.rmtree(folder)
        page.goto(settings + "#backups")
        backups.get_by_role("button", name="Back up now").click()
        alert = backups.get_by_role("alert")
        expect(alert).to_contain_text("did not finish", timeout=60_000)
        expect(alert).to_contain_text("is the disk it is on mounted?")
        expect(alert).to_contain_text(f"The last good backup was made just now, as {second}")
        assert not folder.exists()
        backups.screenshot(path=str(SCREENSHOTS / "settings-backup-failed.png"))
