"""The Files experience in a real browser (Debian's chromium): allowing it, uploading several
files with progress (by picker and by drop), a name clash, a refused upload and a cancelled one,
previews, folders, rename, move, download, the trash with undo, and a share link opened by a
stranger; screenshots go to tests/screenshots."""

from __future__ import annotations

import os
import re
import struct
import subprocess
import zlib
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from browser import authenticator, chromium, screenshot
from conftest import twin_command, wait_for
from playwright.sync_api import Locator, Page, expect
from test_browser import create_passkey, setup_link

from twin.account import qr_svg

pytestmark = pytest.mark.slow

LETTER = "Dear Charles,\n\nThe engine <b>weaves</b> algebraic patterns.\n\n— Ada\n"
MiB = 1024 * 1024


def picture(width: int = 360, height: int = 240) -> bytes:
    """A PNG with a colour gradient, so the preview shows something."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    rows = b"".join(
        b"\x00" + b"".join(bytes((x * 255 // width, y * 255 // height, 140)) for x in range(width))
        for y in range(height)
    )
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def row(page: Page, name: str) -> Locator:
    return page.locator("#rows tr.entry").filter(
        has=page.locator(".open", has_text=re.compile(f"^{re.escape(name)}$"))
    )


def act(page: Page, name: str, action: str) -> None:
    """Choose ``action`` in the ⋯ menu of the row named ``name``."""
    page.get_by_role("button", name=f"Actions for {name}", exact=True).click()
    page.get_by_role("menuitem", name=action).click()


def test_files_upload_preview_organise_trash_and_share(serve: Any, tmp_path: Path) -> None:
    twin = serve(env={"TWIN_FILES_QUOTA": "40m"})
    files_url = twin.url.replace("127.0.0.1", "localhost") + "/x/files/"
    errors: list[str] = []
    big = os.urandom(5 * MiB)
    image = picture()
    uploads = {
        "a-letter.txt": LETTER.encode(),
        "photo.png": image,
        "big.bin": big,
        "readme.md": b"# Files\n\nKept in the twin.\n",
    }
    for name, body in uploads.items():
        (tmp_path / name).write_bytes(body)

    with chromium() as browser:
        context = browser.new_context(
            viewport={"width": 1200, "height": 800}, accept_downloads=True
        )
        page = context.new_page()
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.on("dialog", lambda dialog: (errors.append(dialog.message), dialog.dismiss()))
        authenticator(page)
        create_passkey(page, setup_link(twin.output()))

        page.goto(files_url)
        expect(page.get_by_role("heading", name="Allow Files?")).to_be_visible()
        page.get_by_role("button", name="Allow").click()
        expect(page.get_by_role("heading", name="No files yet")).to_be_visible()
        expect(page.locator("#usage-text")).to_contain_text("of 40 MiB used")
        token = page.locator('meta[name="twin-token"]').get_attribute("content")
        auth = {"Authorization": f"Bearer {token}"}

        def api(path: str) -> httpx.Response:
            return httpx.get(f"{twin.url}/api/files/{path}", headers=auth)

        def exists(path: str) -> bool:
            return api("tree/" + quote(path)).status_code == 200

        # Uploads slowed to 2 MiB/s, so the big file's progress bar is seen moving; every
        # progress bar value and note the page shows is recorded.
        cdp = context.new_cdp_session(page)
        cdp.send("Network.enable")
        slow = {"offline": False, "latency": 0, "downloadThroughput": -1}
        cdp.send("Network.emulateNetworkConditions", {**slow, "uploadThroughput": 2 * MiB})
        page.evaluate(
            """() => {
              window.seen = [];
              new MutationObserver((changes) => {
                for (const change of changes) {
                  const li = change.target.closest ? change.target.closest(".upload")
                    : change.target.parentElement.closest(".upload");
                  const bar = li && li.querySelector("progress");
                  if (li) window.seen.push([li.dataset.path, bar.value,
                    li.querySelector(".up-note").textContent]);
                }
              }).observe(document.getElementById("upload-list"),
                {subtree: true, attributes: true, childList: true, characterData: true});
              window.totals = [];
              const total = document.getElementById("uploads-total");
              new MutationObserver(() => window.totals.push(total.value))
                .observe(total, {attributes: true});
            }"""
        )
        page.locator("#picker").set_input_files([tmp_path / name for name in uploads])
        expect(page.locator("#uploads")).to_be_visible()
        big_bar = page.locator('.upload[data-path="big.bin"] progress')
        wait_for(
            lambda: 20 <= float(big_bar.get_attribute("value") or 0) < 100,
            what="the big upload half way",
        )
        screenshot(page, "files-upload")
        expect(page.locator("#uploads-summary")).to_have_text("4 files uploaded", timeout=20000)
        seen = page.evaluate("window.seen")
        big_values = [value for path, value, _ in seen if path == "big.bin"]
        assert any(0 < value < 100 for value in big_values), big_values  # it moved
        assert any(path == "big.bin" and note.endswith("· 100%") for path, _, note in seen)
        for name in uploads:  # every file has a bar of its own, which ends full
            assert any(path == name and value == 100 for path, value, _ in seen), name
        totals = page.evaluate("window.totals")  # the overall bar moved too, and ended full
        assert any(0 < value < 100 for value in totals), totals
        assert page.locator("#uploads-total").get_attribute("value") == "100"
        expect(row(page, "big.bin")).to_contain_text("5 MiB")
        expect(row(page, "a-letter.txt")).to_contain_text(f"{len(LETTER.encode())} bytes")
        assert api("content/big.bin").content == big
        cdp.send("Network.emulateNetworkConditions", {**slow, "uploadThroughput": -1})

        # A name clash asks: keep both makes "photo (2).png"; skip sends nothing.
        page.locator("#picker").set_input_files([tmp_path / "photo.png"])
        expect(page.locator("#clash-text")).to_contain_text("already has a file named “photo.png”")
        page.get_by_role("button", name="Keep both").click()
        expect(row(page, "photo (2).png")).to_be_visible()
        assert api("content/" + quote("photo (2).png")).content == image
        page.locator("#picker").set_input_files([tmp_path / "photo.png"])
        page.get_by_role("button", name="Skip").click()
        expect(page.locator('.upload[data-state="skipped"]')).to_have_count(1)

        # Dropped onto the page.
        page.evaluate(
            """() => {
              const data = new DataTransfer();
              data.items.add(new File(["dropped here\\n"], "dropped.txt", {type: "text/plain"}));
              for (const type of ["dragenter", "dragover", "drop"]) {
                document.body.dispatchEvent(new DragEvent(type, {dataTransfer: data, bubbles: true,
                  cancelable: true}));
              }
            }"""
        )
        expect(row(page, "dropped.txt")).to_be_visible()
        assert api("content/dropped.txt").text == "dropped here\n"

        # Over the quota: refused up front, said in words, nothing kept.
        too_big = tmp_path / "too-big.bin"
        too_big.write_bytes(b"\0" * (40 * MiB))
        page.locator("#picker").set_input_files([too_big])
        refused = page.locator('.upload[data-path="too-big.bin"]')
        expect(refused).to_have_attribute("data-state", "failed")
        expect(refused.locator(".up-note")).to_contain_text("Not enough room")
        assert not exists("too-big.bin")

        # Cancelled half way: the bar stops, and no partial file is left on the twin.
        used = api("").json()["used"]
        cdp.send("Network.emulateNetworkConditions", {**slow, "uploadThroughput": MiB})
        (tmp_path / "cancel-me.bin").write_bytes(os.urandom(6 * MiB))
        page.locator("#picker").set_input_files([tmp_path / "cancel-me.bin"])
        cancelled = page.locator('.upload[data-path="cancel-me.bin"]')
        wait_for(
            lambda: float(cancelled.locator("progress").get_attribute("value") or 0) >= 10,
            what="the upload to be under way",
        )
        page.get_by_role("button", name="Cancel the upload of cancel-me.bin").click()
        expect(cancelled).to_have_attribute("data-state", "cancelled")
        cdp.send("Network.emulateNetworkConditions", {**slow, "uploadThroughput": -1})
        wait_for(lambda: api("").json()["used"] == used, what="the partial bytes to be dropped")
        assert not exists("cancel-me.bin")
        expect(row(page, "cancel-me.bin")).to_have_count(0)
        page.get_by_role("button", name="Close uploads").click()
        expect(page.locator("#uploads")).to_be_hidden()

        # Previews: the text (as text, never as HTML), then the next previewable file.
        row(page, "a-letter.txt").locator(".open").click()
        preview = page.locator("#preview-dialog")
        expect(preview.locator(".preview-text")).to_have_text(LETTER)
        assert preview.locator("b").count() == 0
        page.get_by_role("button", name="Next file").click()
        expect(page.locator("#preview-title")).to_have_text("dropped.txt")
        page.keyboard.press("ArrowRight")
        expect(page.locator("#preview-title")).to_have_text("photo (2).png")
        shown = preview.locator("img.preview-image")
        expect(shown).to_have_attribute("src", re.compile("^blob:"))
        wait_for(lambda: shown.evaluate("img => img.naturalWidth") == 360, what="the image")
        screenshot(page, "files-preview")
        page.keyboard.press("Escape")
        expect(preview).to_be_hidden()

        # A folder, a rename, a move into the folder.
        page.get_by_role("button", name="New folder").click()
        page.locator("#name-input").fill("Projects")
        page.keyboard.press("Enter")
        expect(row(page, "Projects")).to_be_visible()
        assert api("tree/Projects").json()["kind"] == "folder"
        act(page, "a-letter.txt", "Rename…")
        page.locator("#name-input").fill("letter.txt")
        page.get_by_role("button", name="Rename", exact=True).click()
        expect(row(page, "letter.txt")).to_be_visible()
        expect(row(page, "a-letter.txt")).to_have_count(0)
        act(page, "letter.txt", "Move…")
        page.locator("#move-list").get_by_role("button", name="Projects").click()
        expect(page.locator("#move-crumbs")).to_contain_text("Projects")
        page.get_by_role("button", name="Move here").click()
        expect(row(page, "letter.txt")).to_have_count(0)
        assert api("content/Projects/letter.txt").text == LETTER
        expect(page.locator("#rows tr.entry").first).to_contain_text("Projects")  # folders first
        page.get_by_role("button", name="Dismiss").click()
        page.get_by_role("button", name="Actions for photo.png", exact=True).click()
        expect(page.get_by_role("menuitem", name="Preview")).to_be_focused()
        page.keyboard.press("ArrowDown")
        expect(page.get_by_role("menuitem", name="Download")).to_be_focused()
        screenshot(page, "files-browse")
        page.keyboard.press("Escape")
        expect(page.locator("#menu")).to_be_hidden()
        expect(page.get_by_role("button", name="Actions for photo.png", exact=True)).to_be_focused()

        # Into the folder (breadcrumbs), and a download of what it holds.
        row(page, "Projects").locator(".open").click()
        expect(page.locator("#crumbs [aria-current]")).to_have_text("Projects")
        with page.expect_download() as download:
            act(page, "letter.txt", "Download")
        assert download.value.suggested_filename == "letter.txt"
        assert Path(download.value.path()).read_text() == LETTER

        # Delete, undo from the toast; delete again, restore from the trash.
        act(page, "letter.txt", "Delete")
        expect(page.locator("#toast")).to_contain_text("Moved “letter.txt” to the trash.")
        expect(row(page, "letter.txt")).to_have_count(0)
        assert not exists("Projects/letter.txt")
        page.get_by_role("button", name="Undo").click()
        expect(row(page, "letter.txt")).to_be_visible()
        assert exists("Projects/letter.txt")
        row(page, "letter.txt").locator(".open").focus()
        page.keyboard.press("Delete")
        expect(row(page, "letter.txt")).to_have_count(0)
        page.get_by_role("link", name="Files").first.click()
        act(page, "big.bin", "Delete")
        expect(page.locator("#trash-count")).to_have_text("2")
        page.get_by_role("button", name=re.compile("^Trash")).click()
        trash = page.locator("#trash-rows")
        expect(trash.locator("tr")).to_have_count(2)
        expect(trash).to_contain_text("from Projects")
        expect(page.locator("#usage-text")).to_contain_text("in the trash")
        screenshot(page, "files-trash")
        page.get_by_role("button", name="Restore letter.txt").click()
        expect(page.locator("#toast")).to_contain_text("Restored “letter.txt” to “Projects”")
        assert api("content/Projects/letter.txt").text == LETTER
        page.get_by_role("button", name="Delete big.bin for good").click()
        page.locator("#confirm-dialog").get_by_role("button", name="Delete for good").click()
        expect(page.get_by_role("heading", name="The trash is empty")).to_be_visible()
        assert api("trash").json()["items"] == []

        # A share link: made with a download limit, shown with its QR code, opened by a
        # stranger (another browser context: no cookie, no token) who downloads the file.
        page.get_by_role("button", name="Files", exact=True).click()
        act(page, "photo.png", "Share…")
        page.locator("#share-limit").fill("3")
        page.get_by_role("button", name="Create link").click()
        link = page.locator("#share-url")
        expect(link).to_have_value(re.compile(r"/s/\S+$"))
        share_url = link.input_value()
        # the QR code is the link shown, not some other text
        assert page.locator("#share-qr").get_attribute("src", timeout=1000) == qr_svg(share_url)
        page.locator("#share-copy").click()
        expect(page.locator("#share-copied")).not_to_be_empty()
        expect(page.locator("#share-existing .share-item")).to_have_count(1)
        expect(page.locator("#share-existing")).to_contain_text("0 of 3 downloads")
        screenshot(page, "files-share")

        stranger = browser.new_context(accept_downloads=True)
        visitor = stranger.new_page()
        visitor.set_viewport_size({"width": 900, "height": 600})
        visitor.goto(share_url)
        expect(visitor.get_by_text("photo.png").first).to_be_visible()
        screenshot(visitor, "files-share-page")
        with visitor.expect_download() as got:
            visitor.get_by_role("link", name=re.compile("Download")).first.click()
        assert Path(got.value.path()).read_bytes() == image

        # A shared folder, once the owner has a name: the stranger sees who shared it and what
        # it holds (a folder inside, a file), and nothing outside it.
        made = subprocess.run(
            twin_command(
                "token", "create", "--scope", "profile:write", "--data-dir", str(twin.data_dir)
            ),
            capture_output=True,
            text=True,
            check=True,
        )
        owner = {"Authorization": f"Bearer {made.stdout.split()[-1]}"}
        named = {"display_name": "Ada Lovelace", "bio": ""}
        assert httpx.put(f"{twin.url}/api/profile/", json=named, headers=owner).is_success
        httpx.post(f"{twin.url}/api/files/folders", json={"path": "Projects/Drafts"}, headers=auth)
        folder = httpx.post(
            f"{twin.url}/api/files/shares", json={"path": "Projects"}, headers=auth
        ).json()
        visitor.set_viewport_size({"width": 900, "height": 600})
        visitor.goto(folder["url"])
        expect(visitor.get_by_text("Ada Lovelace shared a folder with you")).to_be_visible()
        expect(visitor.get_by_role("link", name="Drafts")).to_be_visible()
        expect(visitor.get_by_text("letter.txt").first).to_be_visible()
        expect(visitor.get_by_text("photo.png")).to_have_count(0)
        screenshot(visitor, "files-share-folder")
        httpx.delete(f"{twin.url}/api/files/shares/{folder['id']}", headers=auth)

        # The Shared links view counts the download; revoked there, the link is refused.
        page.get_by_role("button", name="Close", exact=True).click()
        page.get_by_role("button", name="Shared links").click()
        listed = page.locator("#share-list .share-item")
        expect(listed).to_have_count(1)
        expect(listed).to_contain_text("photo.png")
        expect(listed).to_contain_text("1 of 3 downloads")
        screenshot(page, "files-links")
        page.get_by_role("button", name="Revoke the link to photo.png").click()
        expect(page.get_by_role("heading", name="No shared links")).to_be_visible()
        gone = visitor.goto(share_url)
        assert gone is not None and gone.status == 410
        expect(visitor.get_by_role("heading", name="This link no longer works")).to_be_visible()
        assert (
            httpx.get(share_url.replace("localhost", "127.0.0.1") + "/download").status_code == 410
        )
        stranger.close()

        # A phone-sized screen: one column, nothing wider than the screen.
        phone = context.new_page()
        phone.on("pageerror", lambda error: errors.append(f"phone: {error}"))
        phone.set_viewport_size({"width": 390, "height": 780})
        phone.goto(files_url)
        expect(row(phone, "Projects")).to_be_visible()
        expect(row(phone, "photo.png")).to_contain_text("KiB")
        assert phone.evaluate("document.documentElement.scrollWidth") <= 390
        screenshot(phone, "files-phone")
        row(phone, "Projects").locator(".open").click()
        expect(row(phone, "letter.txt")).to_be_visible()

    assert not errors, errors
